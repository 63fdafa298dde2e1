"""Shared test helpers: seeded weights and the tolerance every comparison uses."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

TOL_F32 = 1e-5  # float32 engine vs float64 oracle / framework outputs


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


def long_run_on_and_off(I: int, H: int, run) -> tuple:
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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def h5_with_one_layer(tmp_path: Path, layer: dict, features: int = 2) -> Path:
    """A tf.keras-style .h5 of Sequential([InputLayer((4, features)), layer])
    for a layer without weights."""
    cfg = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {"name": "inp", "batch_input_shape": [None, 4, features]},
                },
                layer,
            ],
        },
    }
    p = tmp_path / "m.h5"
    with h5py.File(p, "w") as f:
        f.attrs["keras_version"] = "2.21.0"
        f.attrs["model_config"] = json.dumps(cfg)
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([layer["config"]["name"].encode()])
        g.create_group(layer["config"]["name"]).attrs["weight_names"] = np.zeros(0)
    return p
