"""Files no framework installable here can write, built with h5py in the
documented layouts (FORMATS.md sections 2 and 5): Keras 1.x full models and
weights files (12-array LSTMs in i, c, f, o order, inner_activation, bytes
attributes, split layer_names0..N attributes, nested weight paths).

The expected outputs come from the float64 oracle (fastlstm/_reference.py)
run on the same weights with Keras 1's semantics (hard_sigmoid =
clip(0.2x + 0.5), masked steps carry the previous output), not from Keras 1
itself, which cannot be installed here.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from _helpers import TOL_F32, gru_rnn_reference, h5_with_one_layer

import fastlstm
from fastlstm import _reference as ref

I, H, T, B, OUT = 3, 5, 7, 4, 2


def keras1_weights(rng):
    """Per-gate Keras 1 arrays and the canonical (i, f, c, o) equivalents."""
    gates = {}
    for g in "icfo":
        gates[g] = (
            rng.normal(0, 0.4, (I, H)).astype(np.float32),
            rng.normal(0, 0.4, (H, H)).astype(np.float32),
            rng.normal(0, 0.2, H).astype(np.float32),
        )
    arrays = []
    for g in "icfo":  # Keras 1 file order: i, c, f, o; each W, U, b
        arrays += list(gates[g])
    kernel = np.concatenate([gates[g][0] for g in "ifco"], 1)
    rec = np.concatenate([gates[g][1] for g in "ifco"], 1)
    bias = np.concatenate([gates[g][2] for g in "ifco"])
    return arrays, (kernel, rec, bias)


def keras1_config(return_sequences=False):
    return {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Masking",
                "config": {
                    "name": "masking_1",
                    "mask_value": 0.0,
                    "trainable": True,
                    "batch_input_shape": [None, T, I],
                    "input_dtype": "float32",
                },
            },
            {
                "class_name": "LSTM",
                "config": {
                    "name": "lstm_1",
                    "output_dim": H,
                    "activation": "tanh",
                    "inner_activation": "hard_sigmoid",
                    "return_sequences": return_sequences,
                    "go_backwards": False,
                    "stateful": False,
                    "consume_less": "cpu",
                    "input_dim": I,
                    "input_length": T,
                    "trainable": True,
                },
            },
            {
                "class_name": "Dense",
                "config": {
                    "name": "dense_1",
                    "output_dim": OUT,
                    "activation": "sigmoid",
                    "bias": True,
                    "trainable": True,
                },
            },
        ],
    }


def write_layers(group, layers, *, split_names=False, nested=False):
    names = [n.encode() for n, _ in layers]
    if split_names:  # what Keras does when the attribute passes 64 KB
        group.attrs["layer_names0"] = np.array(names[:1])
        group.attrs["layer_names1"] = np.array(names[1:])
    else:
        group.attrs["layer_names"] = np.array(names)
    for name, arrays in layers:
        g = group.create_group(name)
        wnames = []
        for wname, arr in arrays:
            full = f"{name}/{wname}" if nested else wname
            g.create_dataset(full, data=arr)
            wnames.append(full.encode())
        g.attrs["weight_names"] = (
            np.array(wnames, dtype="S") if wnames else np.zeros(0, np.float64)
        )


def make_file(path, rng, *, full=True, split_names=False, nested=False):
    arrays, canonical = keras1_weights(rng)
    suffixes = [f"{k}_{g}" for g in "icfo" for k in ("W", "U", "b")]
    dense_w = rng.normal(0, 0.5, (H, OUT)).astype(np.float32)
    dense_b = rng.normal(0, 0.1, OUT).astype(np.float32)
    layers = [
        ("masking_1", []),
        ("lstm_1", [(f"lstm_1_{s}", a) for s, a in zip(suffixes, arrays)]),
        ("dense_1", [("dense_1_W", dense_w), ("dense_1_b", dense_b)]),
    ]
    with h5py.File(path, "w") as f:
        if full:
            f.attrs["keras_version"] = b"1.2.2"
            f.attrs["model_config"] = json.dumps(keras1_config()).encode()
            write_layers(
                f.create_group("model_weights"),
                layers,
                split_names=split_names,
                nested=nested,
            )
        else:
            write_layers(f, layers, split_names=split_names, nested=nested)
    return canonical, (dense_w, dense_b)


def expected(x, mask, canonical, dense):
    _, last, _, _ = ref.lstm(
        x, *canonical, recurrent_activation_name="hard_sigmoid_k2", mask=mask
    )
    z = last @ dense[0] + dense[1]
    return 1.0 / (1.0 + np.exp(-z))


def inputs(rng):
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    x[1, 4:] = 0.0  # trailing padding
    x[2, :2] = 0.0  # leading padding
    return x, np.any(x != 0, axis=-1)


@pytest.mark.parametrize("split_names", [False, True])
@pytest.mark.parametrize("nested", [False, True])
def test_keras1_full_model(tmp_path, split_names, nested):
    rng = np.random.default_rng(3)
    path = tmp_path / "keras1.h5"
    canonical, dense = make_file(path, rng, split_names=split_names, nested=nested)
    model = fastlstm.load(path)
    assert model.spec.keras_version == "1.2.2"
    x, mask = inputs(rng)
    want = expected(x, mask, canonical, dense)
    got = model.predict(x)
    assert got.shape == (B, OUT)
    assert np.abs(got - want).max() < TOL_F32


def test_keras1_hard_sigmoid_is_the_keras1_definition(tmp_path):
    """The same file read as if Keras 3 wrote it gives different numbers:
    the version picks the hard_sigmoid definition."""
    rng = np.random.default_rng(4)
    path = tmp_path / "keras1.h5"
    make_file(path, rng)
    x, _ = inputs(rng)
    k1 = fastlstm.load(path).predict(x)
    k3 = fastlstm.load(path, keras_version="3.0.0").predict(x)
    assert np.abs(k1 - k3).max() > 1e-3


def test_keras1_weights_file_with_config(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "keras1_weights.h5"
    canonical, dense = make_file(path, rng, full=False)
    with pytest.raises(fastlstm.ModelFormatError, match="pass the architecture"):
        fastlstm.load(path)
    model = fastlstm.load(path, config=json.dumps(keras1_config()))
    x, mask = inputs(rng)
    assert (
        np.abs(model.predict(x) - expected(x, mask, canonical, dense)).max() < TOL_F32
    )


@pytest.mark.parametrize("axis", [1, -1])
def test_softmax_layer_on_any_axis(tmp_path, axis):
    layer = {"class_name": "Softmax", "config": {"name": "sm", "axis": axis}}
    path = h5_with_one_layer(tmp_path, layer, features=3)
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    want = e / e.sum(axis=axis, keepdims=True)
    got = fastlstm.load(path).predict(x)
    assert np.abs(got - want).max() < 1e-6
    assert np.allclose(got.sum(axis=axis), 1.0, atol=1e-6)


def test_keras1_gru_and_simple_rnn(tmp_path, rng):
    """Keras 1 saved a GRU as nine arrays (W, U, b per gate z, r, h) and
    a SimpleRNN as W, U, b; no reset_after (reset before the product),
    inner_activation hard_sigmoid; masked steps carry the state."""
    G = 4
    gates = {
        g: (
            rng.normal(0, 0.4, (I, G)).astype(np.float32),
            rng.normal(0, 0.4, (G, G)).astype(np.float32),
            rng.normal(0, 0.2, G).astype(np.float32),
        )
        for g in "zrh"
    }
    simple = [
        rng.normal(0, 0.4, (G, H)).astype(np.float32),
        rng.normal(0, 0.3, (H, H)).astype(np.float32),
        rng.normal(0, 0.2, H).astype(np.float32),
    ]
    common = {"return_sequences": False, "go_backwards": False, "stateful": False}
    config = {
        "class_name": "Sequential",
        "config": [
            {
                "class_name": "Masking",
                "config": {
                    "name": "masking_1",
                    "mask_value": 0.0,
                    "batch_input_shape": [None, T, I],
                },
            },
            {
                "class_name": "GRU",
                "config": {
                    "name": "gru_1",
                    "output_dim": G,
                    "activation": "tanh",
                    "inner_activation": "hard_sigmoid",
                    "consume_less": "cpu",
                    **common,
                    "return_sequences": True,
                },
            },
            {
                "class_name": "SimpleRNN",
                "config": {
                    "name": "simplernn_1",
                    "output_dim": H,
                    "activation": "tanh",
                    **common,
                },
            },
        ],
    }
    gru_arrays = [(f"gru_1_{k}_{g}", a) for g in "zrh" for k, a in zip("WUb", gates[g])]
    rnn_arrays = [(f"simplernn_1_{k}", a) for k, a in zip("WUb", simple)]
    path = tmp_path / "k1_gru.h5"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"1.2.2"
        f.attrs["model_config"] = json.dumps(config).encode()
        write_layers(
            f.create_group("model_weights"),
            [("masking_1", []), ("gru_1", gru_arrays), ("simplernn_1", rnn_arrays)],
        )
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    x[1, 4:] = 0.0
    x[2, :2] = 0.0
    mask = (x != 0).any(-1)
    canonical = [np.concatenate([gates[g][k] for g in "zrh"], -1) for k in range(3)]
    y1, _ = gru_rnn_reference(
        "gru",
        [*canonical, np.zeros(3 * G, np.float32)],
        x,
        mask,
        ract="hard_sigmoid_k2",
        reset_after=False,
    )
    y2, _ = gru_rnn_reference(
        "simple", [*simple, np.zeros(H, np.float32)], y1.astype(np.float32), mask
    )
    got = fastlstm.load(path).predict(x)
    assert np.abs(got - y2[:, -1]).max() < TOL_F32
