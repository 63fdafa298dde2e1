"""Legacy Keras HDF5 files: full models (``model.save('x.h5')`` by Keras 1,
Keras 2, tf.keras and Keras 3) and weights-only files (``save_weights``)
with the architecture given separately.

Weights are read layer by layer in ``layer_names`` order, each layer's arrays
in ``weight_names`` order (what Keras' own loader does), and matched to the
config's layers by name.
"""

from __future__ import annotations

from typing import Any

import h5py

from fastlstm.errors import ModelFormatError
from fastlstm.loaders import _h5
from fastlstm.loaders._keras_config import (
    config_from_text,
    load_config,
    parse_model_config,
)
from fastlstm.loaders._weights import attach_weights
from fastlstm.model_spec import ModelSpec


def load_keras_h5(path: str, f: h5py.File, config: Any = None) -> ModelSpec:
    attrs = f.attrs
    if "model_config" in attrs or "model_weights" in f:
        if "model_weights" not in f:
            raise ModelFormatError(f"{path}: has a model_config but no model_weights")
        weights_group = _h5.get(f, "model_weights", path)
        if config is None:
            file_config = _h5.attr(f, "model_config", path)
            if file_config is None:
                raise ModelFormatError(f"{path}: model_config attribute is missing")
            cfg = config_from_text(
                _h5.text(file_config), path, "the model_config attribute"
            )
        fmt = "Keras .h5 (full model)"
    else:
        weights_group = f
        if config is None:
            raise ModelFormatError(
                f"{path}: a weights-only Keras file; pass the architecture too: "
                "fastlstm.load(path, config=model.to_json() text, a JSON file "
                "or a dict)"
            )
        fmt = "Keras .h5 (weights only)"
    version = _h5.text(
        _h5.attr(
            weights_group,
            "keras_version",
            path,
            _h5.attr(f, "keras_version", path, "1"),
        )
    )
    if config is not None:
        cfg = load_config(config, path)
    skeleton = parse_model_config(
        cfg, keras_version=version, source=path, source_format=fmt
    )
    saved = read_layer_weights(weights_group, path)
    return attach_weights(skeleton, saved, path)


def read_layer_weights(group: h5py.Group, path: str) -> dict[str, list]:
    """{layer name: [arrays in weight_names order]} for layers with weights,
    in the file's layer order."""
    out: dict[str, list] = {}
    budget = _h5.budget_for(group.file, path)
    for name in _h5.name_list(group, "layer_names", path):
        where = f"{path}: layer {name!r}"
        g = _h5.get(group, name, where)
        names = _h5.name_list(g, "weight_names", where)
        if names:
            out[name] = [_h5.read_array(g, wn, where, budget) for wn in names]
    return out
