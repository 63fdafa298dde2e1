"""A live Keras model object (tf.keras, tf_keras or Keras 3) -> ModelSpec,
from its config and ``get_weights()``; Keras itself is never imported."""

from __future__ import annotations

import json
import sys
from typing import Any

from fastlstm.loaders._keras_config import parse_model_config
from fastlstm.loaders._weights import attach_weights
from fastlstm.loaders.keras_layers import canonical_model
from fastlstm.model_spec import ModelSpec

__all__ = ["read_live_keras"]


def read_live_keras(model: Any) -> ModelSpec:
    """The canonical graph of a live Keras model."""
    if not (hasattr(model, "to_json") and hasattr(model, "layers")):
        raise TypeError(f"from_keras takes a Keras model, got {type(model).__name__}")
    package = type(model).__module__.split(".")[0]
    module = sys.modules.get(package)
    version = getattr(module, "__version__", "3" if package == "keras" else "2")
    if package in ("tensorflow", "tf_keras") and not str(version).startswith("2"):
        version = "2." + str(version).split(".", 1)[-1]
    source = f"<live {type(model).__name__} {getattr(model, 'name', '')!r}>"
    skeleton = parse_model_config(
        json.loads(model.to_json()),
        keras_version=str(version),
        source=source,
        source_format="live Keras model",
    )
    saved = {}
    for layer in model.layers:
        w = layer.get_weights()
        if w:
            saved[layer.name] = w
    return canonical_model(attach_weights(skeleton, saved, source))
