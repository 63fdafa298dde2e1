"""``fastlstm.load``: a file to a ready-to-run model, top-down.

sniff the format (``loaders``) -> its reader -> a model (canonical graph or
specs) -> the engine -> the framework-shaped front end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from fastlstm.engine.threads import check_threads
from fastlstm.errors import (
    ConfigError,
    DTypeError,
    ModelFormatError,
    NonFiniteError,
    ShapeError,
)
from fastlstm.frontends.keras import Model
from fastlstm.frontends.onnx import OnnxModel
from fastlstm.frontends.tf1 import TF1LSTM
from fastlstm.frontends.torch import torch_front_end
from fastlstm.loaders import (
    family_of,
    load_errors,
    mapping_family,
    read_keras,
    read_npz,
    read_torch_object,
)
from fastlstm.loaders._files import memory_source, read_file_object
from fastlstm.loaders.keras_live import read_live_keras
from fastlstm.loaders.onnx_reader import read_onnx_model
from fastlstm.loaders.tf1_reader import read_tf1
from fastlstm.loaders.torch_recurrent import flatten_state_dict, read_torch_graph
from fastlstm.model_spec import ModelSpec

__all__ = ["load", "load_spec", "from_keras", "read_state_dict"]

# options of load() that apply to each family of formats
OPTIONS = {
    "keras": ("config", "keras_version"),
    "torch": ("prefix", "batch_first", "nonlinearity"),
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
    path: str | os.PathLike | bytes | BinaryIO | Mapping,
    *,
    config: Any = None,
    keras_version: str | None = None,
    prefix: str | None = None,
    batch_first: bool | None = None,
    nonlinearity: str | None = None,
    scope: str | None = None,
    forget_bias: float | None = None,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    activation: str | None = None,
    time_major: bool | None = None,
    threads: int | None = None,
) -> Any:
    """Loads a model file and returns a ready-to-run model.

    * Keras files -> ``fastlstm.Model``. config: the architecture for
      weights-only files; keras_version: override the file's version.
    * PyTorch ``torch.save`` state_dicts (zip or legacy, possibly inside a
      checkpoint dict) and ``.safetensors`` -> ``TorchLSTM``, ``TorchGRU``
      or ``TorchRNN`` (like nn.LSTM, nn.GRU, nn.RNN) or their cells.
      prefix: which module when the file holds several (``'lstm.'``,
      ``'encoder.rnn'``); batch_first: required for a module (the file does
      not record it; guessing gave wrong numbers of the right shape), not
      for a cell; nonlinearity ('tanh' or 'relu'): required for an nn.RNN
      or nn.RNNCell, which do not record it either.
    * TF1 checkpoints (the prefix ``model.ckpt`` of ``model.ckpt.index`` +
      ``.data-*``, or an ``.npz`` keyed by variable names) -> ``TF1LSTM``
      (like dynamic_rnn). scope: which cell when there are several;
      forget_bias (default 1.0), cell_clip, proj_clip, activation (default
      tanh): what the checkpoint does not store; time_major.
    * ONNX graphs of LSTM nodes -> ``OnnxModel`` (needs the onnx package).

    In place of a path: the file's bytes, a binary file object (read to
    its end, at most as much as one file may hold), or a dict of arrays (a
    state_dict, or TF1 variables by name). Formats of several files (a TF1
    checkpoint's .index and .data, ONNX with external data) need the path.
    threads: the model's threads per call (None: automatic; see
    fastlstm.set_num_threads for the process's limit).
    """
    threads = check_threads(threads)
    spec = load_spec(
        path,
        config=config,
        keras_version=keras_version,
        prefix=prefix,
        batch_first=batch_first,
        nonlinearity=nonlinearity,
        scope=scope,
        forget_bias=forget_bias,
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        activation=activation,
        time_major=time_major,
    )
    name = _name_of(path)
    with load_errors(name):
        model = front_end(spec, threads)
        if config is not None:
            _check_fits_config(model, name)
        return model


def _check_fits_config(model: Model, where: str) -> None:
    """Weights read with an architecture given apart (config=) may fit each
    layer's own arrays yet not the shapes the architecture declares between
    layers (an input width): one batch-1 run of the declared shapes finds
    that at load, naming the layer, rather than at the first predict."""
    arrays = [
        np.zeros([1] + [2 if d is None else d for d in shape[1:]], np.float32)
        for shape in model.spec.input_shapes
        if shape is not None
    ]
    if len(arrays) != len(model.spec.input_shapes):
        return
    try:
        model._graph.run(arrays, model._graph.context([]))
    except ShapeError as exc:
        raise ModelFormatError(
            f"{where}: the weights do not fit the architecture given as config=: {exc}"
        ) from None


def _read_mapping(obj: Mapping, given: dict) -> ModelSpec:
    family = mapping_family(obj)
    _check_options(family, "<dict>", given)
    return _read(family, obj, "<dict>", given)


def _read_path(path: str, given: dict) -> ModelSpec:
    family = family_of(path)
    obj = None
    if family == "npz":
        obj = read_npz(path)
        family = mapping_family(obj)
    _check_options(family, path, given)
    if family == "keras":
        return read_keras(path, given["config"], given["keras_version"])
    try:
        return _read(family, obj, path, given)
    except (NonFiniteError, ShapeError, DTypeError) as exc:
        # weights the file holds that fail validation: the file is bad (as
        # the Keras loaders report it), whatever the array check said
        raise ModelFormatError(f"{path}: {exc}") from exc


def _read(family: str, obj: Any, where: str, given: dict) -> ModelSpec:
    """The canonical graph of a PyTorch, TF1 or ONNX source."""
    opts = {k: v for k, v in given.items() if v is not None and k in OPTIONS[family]}
    if family == "torch":
        if obj is None:
            obj = read_torch_object(where)
        return read_torch_graph(obj, where=where, **opts)
    if family == "tf1":
        return read_tf1(where if obj is None else obj, **opts)
    if family == "onnx":
        return read_onnx_model(where)
    raise ModelFormatError(f"{where}: unknown format family {family!r}")


FRONT_ENDS = {
    "keras": Model,
    "torch_module": torch_front_end,
    "torch_cell": torch_front_end,
    "tf1": TF1LSTM.from_spec,
    "onnx": OnnxModel,
}


def front_end(spec: ModelSpec, threads: int | None = None) -> Any:
    """The framework-shaped model that runs ``spec`` (by its call
    conventions: a Keras Model unless the reader said otherwise)."""
    return FRONT_ENDS[spec.conventions.get("calls", "keras")](spec, threads=threads)


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
    path: str | os.PathLike | bytes | BinaryIO | Mapping,
    *,
    config: Any = None,
    keras_version: str | None = None,
    prefix: str | None = None,
    batch_first: bool | None = None,
    nonlinearity: str | None = None,
    scope: str | None = None,
    forget_bias: float | None = None,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    activation: str | None = None,
    time_major: bool | None = None,
) -> ModelSpec:
    """Reads a model file (or a dict of arrays) into the canonical
    ModelSpec that ``load`` runs: the options are ``load``'s."""
    given = {
        "config": config,
        "keras_version": keras_version,
        "prefix": prefix,
        "batch_first": batch_first,
        "nonlinearity": nonlinearity,
        "scope": scope,
        "forget_bias": forget_bias,
        "cell_clip": cell_clip,
        "proj_clip": proj_clip,
        "activation": activation,
        "time_major": time_major,
    }
    if isinstance(path, Mapping):
        return _read_mapping(path, given)
    with _reading(path) as name:
        return _read_path(name, given)


@contextlib.contextmanager
def _reading(source: Any) -> Iterator[str]:
    """The name a load of ``source`` (a path, bytes or a binary file object)
    reads under, with load_errors naming it; bytes and file objects are
    registered as an in-memory model for the block."""
    name = _name_of(source)
    with contextlib.ExitStack() as stack:
        if isinstance(source, (bytes, bytearray, memoryview)):
            stack.enter_context(memory_source(bytes(source), name))
        elif _is_file_object(source):
            data = read_file_object(source, name)
            stack.enter_context(memory_source(data, name))
        stack.enter_context(load_errors(name))
        yield name


def _is_file_object(source: Any) -> bool:
    return hasattr(source, "read") and not isinstance(source, (str, os.PathLike))


def _name_of(source: Any) -> str:
    """What messages call the model: its path, or a name in angle brackets
    for one given as a dict, bytes or a file object."""
    if isinstance(source, Mapping):
        return "<dict>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if _is_file_object(source):
        name = getattr(source, "name", None)
        return f"<file object {name!r}>" if isinstance(name, str) else "<file object>"
    return _fspath(source)


def _fspath(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "path must be a file path (str or os.PathLike), the file's bytes, a "
            f"binary file object or a dict of arrays; got {type(path).__name__}"
        )
    return os.fspath(path)


def from_keras(model: Any, *, threads: int | None = None) -> Model:
    """A fastlstm.Model from a live Keras (tf.keras, tf_keras or Keras 3)
    model object: its config and weights, nothing else. Keras is not
    imported by fastlstm; this only reads the object you pass."""
    return Model(read_live_keras(model), threads=threads)


def read_state_dict(
    path: str | os.PathLike | bytes | BinaryIO,
) -> dict[str, np.ndarray]:
    """Every tensor of a PyTorch file as NumPy arrays, by dotted key: a
    ``torch.save`` file (zip or legacy; a state_dict, or a checkpoint dict
    whose nested dicts give keys such as ``model.head.weight``) or a
    ``.safetensors`` file. Read as ``load`` reads them: no torch, nothing
    from the file runs, sizes checked against a byte budget. Tensors keep
    their dtype (float16 stays float16), except bfloat16, which NumPy
    lacks: it is widened exactly to float32. Non-tensor entries (epoch
    numbers, optimizer settings) are left out. Bytes and binary file
    objects are read as load reads them."""
    with _reading(path) as path:
        family = family_of(path)
        if family != "torch":
            raise ModelFormatError(
                f"{path}: is not a torch.save or safetensors file (it reads as "
                f"{_FAMILY_NAMES.get(family, family)})"
            )
        return flatten_state_dict(read_torch_object(path), path)
