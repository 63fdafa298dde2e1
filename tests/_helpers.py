"""Helpers shared by the tests: seeded weights, the tolerance every
comparison uses, and one writer of Keras 2 ``.h5`` model files."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

TOL_F32 = 1e-5  # float32 engine vs float64 oracle / framework outputs
# A preloaded sanitizer runtime (the ASan run of the suite, docs/
# development.md) reserves terabytes of address space and keeps freed
# memory in quarantine: address-space limits and resident-memory bounds
# do not apply under it.
UNDER_SANITIZER = "san" in os.environ.get("LD_PRELOAD", "")


def import_framework(name: str):
    """The framework module, or a skip: when it is not installed, or under
    a preloaded sanitizer (torch's and TensorFlow's libraries are not built
    for it and crash)."""
    import pytest

    if UNDER_SANITIZER:
        pytest.skip(f"{name} under a preloaded sanitizer")
    return pytest.importorskip(name)


def random_weights(
    rng: np.random.Generator,
    I: int,
    H: int,
    P: int = 0,
    peepholes: bool = False,
    bias: bool = True,
    scale: float = 0.5,
) -> dict:
    """Well-conditioned canonical weights: N(0, scale/sqrt(fan_in)), forget
    bias +1 (as Keras' unit_forget_bias initializes it)."""
    R = P or H
    s = scale / np.sqrt(I + R)
    w = {
        "kernel": rng.normal(0, s, (I, 4 * H)).astype(np.float32),
        "recurrent_kernel": rng.normal(0, s, (R, 4 * H)).astype(np.float32),
    }
    if bias:
        b = rng.normal(0, 0.1, 4 * H).astype(np.float32)
        b[H : 2 * H] += 1.0
        w["bias"] = b
    if peepholes:
        w["peepholes"] = rng.normal(0, 0.1, (3, H)).astype(np.float32)
    if P:
        w["projection"] = rng.normal(0, 1 / np.sqrt(H), (H, P)).astype(np.float32)
    return w


def oracle_args(w: dict) -> dict:
    """Keyword arguments of fastlstm._reference.lstm for a weight dict."""
    return {k: w[k] for k in ("peepholes", "projection") if k in w}


def long_run_on_and_off(I: int, H: int, run: Callable) -> tuple:
    """A batch-1, T=1000 layer run twice through run(layer, x, on) (a kernel
    path switched on, then off), and the float64 oracle's outputs."""
    from fastlstm import LSTM
    from fastlstm import _reference as ref

    rng = np.random.default_rng(I + H)
    w = random_weights(rng, I, H)
    x = rng.normal(0, 1, (1, 1000, I)).astype(np.float32)
    layer = LSTM(**w, return_sequences=True, threads=1)
    ry, _, _, _ = ref.lstm(x, w["kernel"], w["recurrent_kernel"], w["bias"])
    return run(layer, x, True), run(layer, x, False), ry


def sequential_config(*layers: dict, input_shape: tuple = (4, 2)) -> dict:
    """A Keras 2 Sequential config: an InputLayer of ``input_shape``
    (batch axis excluded), then ``layers``."""
    inp = {
        "class_name": "InputLayer",
        "config": {"name": "inp", "batch_input_shape": [None, *input_shape]},
    }
    return {
        "class_name": "Sequential",
        "config": {"name": "s", "layers": [inp, *layers]},
    }


def write_keras2_h5(
    path: Path,
    model_config: dict | str,
    weights: dict[str, dict[str, np.ndarray]],
    *,
    keras_version: str = "2.15.0",
    write: Callable[[h5py.Group, str, np.ndarray], Any] | None = None,
) -> Path:
    """A Keras 2 full-model ``.h5``: ``weights`` maps each layer name to its
    arrays by weight name (``kernel:0`` ...), stored under
    ``<layer>/<layer>_cell/`` as tf.keras stores LSTM cells. ``write(group,
    name, array)`` stores a dataset its own way (hostile files)."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = keras_version
        f.attrs["model_config"] = (
            model_config if isinstance(model_config, str) else json.dumps(model_config)
        )
        g = f.create_group("model_weights")
        names = list(weights) or [
            layer["config"]["name"]
            for layer in json.loads(f.attrs["model_config"])["config"]["layers"][1:]
        ]
        g.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            layer = g.create_group(name)
            arrays = weights.get(name, {})
            full = [f"{name}/{name}_cell/{w}" for w in arrays]
            layer.attrs["weight_names"] = np.array(
                [n.encode() for n in full], dtype=bytes if full else float
            )
            cell = layer.create_group(f"{name}/{name}_cell") if arrays else None
            for w, arr in arrays.items():
                (write or _plain)(cell, w, arr)
    return path


def h5_with_one_layer(tmp_path: Path, layer: dict, features: int = 2) -> Path:
    """A tf.keras-style .h5 of Sequential([InputLayer((4, features)), layer])
    for a layer without weights."""
    cfg = sequential_config(layer, input_shape=(4, features))
    return write_keras2_h5(tmp_path / "m.h5", cfg, {}, keras_version="2.21.0")


def _plain(group: h5py.Group, name: str, arr: np.ndarray) -> None:
    group.create_dataset(name, data=arr)


GRU_RNN_ACTS = {
    "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "relu": lambda v: np.maximum(v, 0),
    "hard_sigmoid_k2": lambda v: np.clip(0.2 * v + 0.5, 0, 1),
    "linear": lambda v: v,
}


def gru_rnn_weights(rng, I, H, G, scale=0.3):
    """Canonical [kernel, recurrent_kernel, bias, recurrent_bias], G gates."""
    return [
        (rng.normal(size=s) * scale).astype(np.float32)
        for s in ((I, G * H), (H, G * H), (G * H,), (G * H,))
    ]


def gru_rnn_step(kind, w, x, h, act="tanh", ract="sigmoid", reset_after=True):
    """One float64 step of a GRU ("gru") or simple RNN ("simple") from the
    canonical weights w = [kernel, recurrent_kernel, bias, recurrent_bias]."""
    k, rk, b, rb = (a.astype(np.float64) for a in w)
    f, g = GRU_RNN_ACTS[act], GRU_RNN_ACTS[ract]
    if kind == "simple":
        return f(x @ k + b + h @ rk + rb)
    H = h.shape[-1]
    gx, gh = x @ k + b, h @ rk + rb
    z = g(gx[:, :H] + gh[:, :H])
    r = g(gx[:, H : 2 * H] + gh[:, H : 2 * H])
    if reset_after:
        n = f(gx[:, 2 * H :] + r * gh[:, 2 * H :])
    else:
        n = f(gx[:, 2 * H :] + (r * h) @ rk[:, 2 * H :] + rb[2 * H :])
    return z * h + (1 - z) * n


def gru_rnn_reference(
    kind, w, x, valid=None, h0=None, backwards=False, zero=False, **kw
):
    """Keras semantics over (B, T, I): the state carries over invalid
    steps, which output the previous output (or zeros with zero)."""
    B, T, _ = x.shape
    H = w[1].shape[0]
    h = np.zeros((B, H)) if h0 is None else h0.astype(np.float64)
    out = np.zeros((B, H))
    ys = []
    valid = np.ones((B, T), bool) if valid is None else valid
    order = range(T - 1, -1, -1) if backwards else range(T)
    for t in order:
        new = gru_rnn_step(kind, w, x[:, t].astype(np.float64), h, **kw)
        v = valid[:, t][:, None]
        h = np.where(v, new, h)
        out = np.where(v, h, 0 if zero else out)
        ys.append(out)
    return np.stack(ys, 1), h


def spec_arrays(spec) -> list:
    """Every array of a ModelSpec's layers, depth first (what a load read)."""
    out = []

    def walk(obj, depth=0):
        if isinstance(obj, np.ndarray):
            out.append(obj)
        elif isinstance(obj, (list, tuple)) and depth < 6:
            for item in obj:
                walk(item, depth + 1)
        elif dataclasses.is_dataclass(obj) and depth < 6:
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name), depth + 1)

    walk(list(spec.layers))
    return out
