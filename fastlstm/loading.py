"""``fastlstm.load``: a file to a ready-to-run model, top-down.

sniff the format (``loaders``) -> its reader -> a model (canonical graph or
specs) -> the engine -> the framework-shaped front end.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fastlstm.errors import (
    ConfigError,
    DTypeError,
    ModelFormatError,
    NonFiniteError,
    ShapeError,
)
from fastlstm.frontends.keras import Model
from fastlstm.frontends.onnx import from_onnx
from fastlstm.frontends.tf1 import from_tf1
from fastlstm.frontends.torch import from_state_dict
from fastlstm.loaders import (
    family_of,
    load_errors,
    mapping_family,
    read_keras,
    read_npz,
    read_torch_object,
)
from fastlstm.loaders.keras_live import read_live_keras
from fastlstm.model_spec import ModelSpec

__all__ = ["load", "load_spec", "from_keras"]

# options of load() that apply to each family of formats
OPTIONS = {
    "keras": ("config", "keras_version"),
    "torch": ("prefix", "batch_first"),
    "tf1": (
        "scope",
        "forget_bias",
        "cell_clip",
        "proj_clip",
        "activation",
        "time_major",
    ),
    "onnx": (),
}
_FAMILY_NAMES = {
    "keras": "Keras files",
    "torch": "PyTorch files",
    "tf1": "TF1 checkpoints",
    "onnx": "ONNX files",
}


def load(
    path: str | os.PathLike | Mapping,
    *,
    config: Any = None,
    keras_version: str | None = None,
    prefix: str | None = None,
    batch_first: bool | None = None,
    scope: str | None = None,
    forget_bias: float | None = None,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    activation: str | None = None,
    time_major: bool | None = None,
) -> Any:
    """Loads a model file and returns a ready-to-run model.

    * Keras files -> ``fastlstm.Model``. config: the architecture for
      weights-only files; keras_version: override the file's version.
    * PyTorch ``torch.save`` state_dicts (zip or legacy, possibly inside a
      checkpoint dict) and ``.safetensors`` -> ``TorchLSTM`` (like
      nn.LSTM) or ``TorchLSTMCell``. prefix: which LSTM when the file holds
      several (``'lstm.'``, ``'encoder.rnn'``); batch_first: required for
      an nn.LSTM (the file does not record it; guessing gave wrong numbers
      of the right shape), not for an nn.LSTMCell.
    * TF1 checkpoints (the prefix ``model.ckpt`` of ``model.ckpt.index`` +
      ``.data-*``, or an ``.npz`` keyed by variable names) -> ``TF1LSTM``
      (like dynamic_rnn). scope: which cell when there are several;
      forget_bias (default 1.0), cell_clip, proj_clip, activation (default
      tanh): what the checkpoint does not store; time_major.
    * ONNX graphs of LSTM nodes -> ``OnnxModel`` (needs the onnx package).

    A dict of arrays (a state_dict, or TF1 variables by name) is accepted
    in place of a path.
    """
    given = {
        "config": config,
        "keras_version": keras_version,
        "prefix": prefix,
        "batch_first": batch_first,
        "scope": scope,
        "forget_bias": forget_bias,
        "cell_clip": cell_clip,
        "proj_clip": proj_clip,
        "activation": activation,
        "time_major": time_major,
    }
    if isinstance(path, Mapping):
        family = mapping_family(path)
        _check_options(family, "<dict>", given)
        return _load_family(family, path, "<dict>", given)
    path = os.fspath(path)
    with load_errors(path):
        return _load_path(path, given)


def _load_path(path: str, given: dict) -> Any:
    family = family_of(path)
    obj = None
    if family == "npz":
        obj = read_npz(path)
        family = mapping_family(obj)
    _check_options(family, path, given)
    if family == "keras":
        return Model(read_keras(path, given["config"], given["keras_version"]))
    try:
        return _load_family(family, obj, path, given)
    except (NonFiniteError, ShapeError, DTypeError) as exc:
        # weights the file holds that fail validation: the file is bad (as
        # the Keras loaders report it), whatever the array check said
        raise ModelFormatError(f"{path}: {exc}") from exc


def _load_family(family: str, obj: Any, where: str, given: dict) -> Any:
    opts = {k: v for k, v in given.items() if v is not None and k in OPTIONS[family]}
    if family == "torch":
        if obj is None:
            obj = read_torch_object(where)
        return from_state_dict(obj, where=where, **opts)
    if family == "tf1":
        return from_tf1(where if obj is None else obj, **opts)
    if family == "onnx":
        return from_onnx(where)
    raise ModelFormatError(f"{where}: unknown format family {family!r}")


def _check_options(family: str, where: str, given: dict) -> None:
    wrong = [k for k, v in given.items() if v is not None and k not in OPTIONS[family]]
    if wrong:
        allowed = OPTIONS[family]
        raise ConfigError(
            f"{where}: option(s) {', '.join(wrong)} do not apply to "
            f"{_FAMILY_NAMES[family]}"
            + (f" (their options: {', '.join(allowed)})" if allowed else "")
        )


def load_spec(
    path: str | os.PathLike, *, config: Any = None, keras_version: str | None = None
) -> ModelSpec:
    """Reads a Keras model file into the canonical ModelSpec.

    config: the architecture for weights-only files (``model.to_json()``
    text, a JSON file path or a dict). keras_version: override the version
    recorded in the file (it picks hard_sigmoid's definition and mask rules).
    """
    path = os.fspath(path)
    with load_errors(path):
        return read_keras(path, config, keras_version)


def from_keras(model: Any) -> Model:
    """A fastlstm.Model from a live Keras (tf.keras, tf_keras or Keras 3)
    model object: its config and weights, nothing else. Keras is not
    imported by fastlstm; this only reads the object you pass."""
    return Model(read_live_keras(model))
