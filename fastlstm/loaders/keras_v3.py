"""Keras 3 files: ``.keras`` zip archives (``config.json``, ``metadata.json``,
``model.weights.h5``; also written by tf.keras 2.12-2.15) and
``.weights.h5`` files with the architecture given separately.

In these weight files a layer's variables live at a path made of class
names, not layer names: ``layers/<snake_case(class)>[_k]/...`` with k
counting earlier layers of the same class in the model's layer list, then
``cell/``, ``forward_layer/``, ``layer/``, ``cells/<cell>[_k]/`` for nested
objects, and finally ``vars/0``, ``vars/1``, ...
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import h5py

from fastlstm._budget import ByteBudget
from fastlstm.errors import ModelFormatError, UnsupportedLayerError
from fastlstm.loaders import _h5
from fastlstm.loaders._h5_vlen import image_of
from fastlstm.loaders._json import MAX_JSON_BYTES, parse_json
from fastlstm.loaders._keras_config import (
    config_from_text,
    load_config,
    parse_model_config,
)
from fastlstm.loaders._weights import attach_weights
from fastlstm.loaders._zip import read_member
from fastlstm.loaders.keras_layers import OP_CLASSES, WEIGHTED_CLASSES
from fastlstm.loaders.keras_sequence_layers import SEQUENCE_WEIGHTED
from fastlstm.model_spec import ModelSpec

MAX_MEMBER_BYTES = 1 << 31  # refuse archive members that inflate beyond 2 GiB
# metadata.json holds a version and a date (about 100 bytes)
MAX_METADATA_BYTES = 1 << 16


def snake_case(name: str) -> str:
    """Keras 3's naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def load_keras_zip(
    path: str, zf: zipfile.ZipFile, config: Any = None, keras_version: str | None = None
) -> ModelSpec:
    names = set(zf.namelist())
    if "config.json" not in names:
        raise ModelFormatError(
            f"{path}: a zip archive without config.json is not a Keras .keras file"
        )
    if "model.weights.h5" not in names:
        other = sorted(n for n in names if "weights" in n)
        raise ModelFormatError(
            f"{path}: no model.weights.h5 in the archive"
            + (
                f" (found {other}; sharded or .npz weights are not supported)"
                if other
                else ""
            )
        )
    meta = {}
    if "metadata.json" in names:
        meta = parse_json(
            read_member(zf, "metadata.json", MAX_METADATA_BYTES, path),
            path,
            "metadata.json",
        )
        if not isinstance(meta, dict):
            raise ModelFormatError(f"{path}: metadata.json is not a JSON object")
    version = keras_version or str(meta.get("keras_version", "3"))
    if config is not None:
        cfg = load_config(config, path)
    else:
        cfg = config_from_text(
            read_member(zf, "config.json", MAX_JSON_BYTES, path), path, "config.json"
        )
    data = read_member(zf, "model.weights.h5", MAX_MEMBER_BYTES, path)
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except OSError as exc:
        raise ModelFormatError(
            f"{path}: model.weights.h5 is not valid HDF5: {exc}"
        ) from exc
    with f, image_of(f, data):
        return _load(path, f, cfg, version, "Keras .keras archive")


def load_weights_h5(
    path: str, f: h5py.File, config: Any, keras_version: str | None = None
) -> ModelSpec:
    if config is None:
        raise ModelFormatError(
            f"{path}: a Keras 3 weights file (.weights.h5); pass the architecture too: "
            "fastlstm.load(path, config=model.to_json() text, a JSON file or a dict)"
        )
    cfg = load_config(config, path)
    version = keras_version or str(cfg.get("keras_version", "3"))
    return _load(path, f, cfg, version, "Keras .weights.h5")


def _load(path: str, f: h5py.File, cfg: dict, version: str, fmt: str) -> ModelSpec:
    skeleton = parse_model_config(
        cfg, keras_version=version, source=path, source_format=fmt
    )
    sequential = cfg.get("class_name") == "Sequential"
    saved = read_path_weights(f, skeleton, sequential, path)
    return attach_weights(skeleton, saved, path)


def read_path_weights(
    f: h5py.Group, spec: ModelSpec, sequential: bool, path: str
) -> dict[str, list]:
    for top in ("layers", "_layer_checkpoint_dependencies"):
        if top in f:
            container = _h5.get(f, top, path)
            break
    else:
        raise ModelFormatError(f"{path}: no 'layers' group: not a Keras 3 weights file")
    out: dict[str, list] = {}
    counters: dict[str, int] = {}
    budget = _h5.budget_for(f.file, path)
    for ls in spec.layers:
        if ls.class_name in OP_CLASSES or (
            sequential and ls.class_name == "InputLayer"
        ):
            continue
        base = snake_case(ls.class_name)
        k = counters.get(base, 0)
        counters[base] = k + 1
        key = base if k == 0 else f"{base}_{k}"
        if ls.class_name not in WEIGHTED_CLASSES:
            continue
        if key not in container and ls.name in container:
            key = ls.name  # tf.keras 2.13-era archives name groups by layer
        where = f"{path}: layer {ls.name!r} ({ls.class_name}) at {top}/{key}"
        out[ls.name] = _collect(
            _h5.get(container, key, where), ls.class_name, ls.config, where, budget
        )
    return out


def _vars(g: h5py.Group, where: str, budget: ByteBudget) -> list:
    v = _h5.get(g, "vars", where)
    keys = sorted(v.keys(), key=lambda s: int(s) if s.isdigit() else 1 << 30)
    return [_h5.read_array(v, k, where, budget) for k in keys]


def _collect(
    g: h5py.Group, class_name: str, cfg: dict, where: str, budget: ByteBudget
) -> list:
    if class_name == "MultiHeadAttention":
        parts = ("query_dense", "key_dense", "value_dense", "output_dense")
        return [
            a for part in parts for a in _vars(_h5.get(g, part, where), where, budget)
        ]
    if class_name in ("LSTM", "CuDNNLSTM", "GRU", "CuDNNGRU", "SimpleRNN"):
        return _vars(_h5.get(g, "cell", where), where, budget)
    if class_name in (
        "Dense",
        "Embedding",
        "Conv1D",
        "Normalization",
        *SEQUENCE_WEIGHTED,
    ):
        return _vars(g, where, budget)
    if class_name == "MultiHeadAttention":
        parts = ("query_dense", "key_dense", "value_dense", "output_dense")
        return [
            a for part in parts for a in _vars(_h5.get(g, part, where), where, budget)
        ]
    if class_name == "TimeDistributed":
        return _vars(_h5.get(g, "layer", where), where, budget)
    if class_name == "Bidirectional":
        inner = cfg.get("layer") or {}
        back = cfg.get("backward_layer") or inner
        fw = _collect(
            _h5.get(g, "forward_layer", where),
            inner.get("class_name"),
            inner.get("config", {}),
            where,
            budget,
        )
        bw = _collect(
            _h5.get(g, "backward_layer", where),
            back.get("class_name"),
            back.get("config", {}),
            where,
            budget,
        )
        return fw + bw
    if class_name == "RNN":
        cell = cfg.get("cell") or {}
        cg = _h5.get(g, "cell", where)
        if cell.get("class_name") != "StackedRNNCells" and not isinstance(cell, list):
            return _vars(cg, where, budget)
        cells = cell if isinstance(cell, list) else cell["config"]["cells"]
        cells_group = _h5.get(cg, "cells", where)
        out, counters = [], {}
        for c in cells:
            base = snake_case(c["class_name"])
            k = counters.get(base, 0)
            counters[base] = k + 1
            out += _vars(
                _h5.get(cells_group, base if k == 0 else f"{base}_{k}", where),
                where,
                budget,
            )
        return out
    raise UnsupportedLayerError(f"{where}: no weight layout known for {class_name}")
