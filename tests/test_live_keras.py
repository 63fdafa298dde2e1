"""Against the live framework when it is installed (skipped otherwise):
build Keras models, save them in each format, load them with fastlstm and
compare with Keras' own predict; fastlstm.from_keras on the live object."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import TOL_F32, UNDER_SANITIZER

import fastlstm

if UNDER_SANITIZER:  # TensorFlow's own libraries do not run under it
    pytest.skip("TensorFlow under a preloaded sanitizer", allow_module_level=True)
keras = pytest.importorskip("keras")


def set_weights(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in ws])


def padded_input(rng, B=4, T=12, F=5):
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    x[1, 8:] = 0.0
    x[2, :3] = 0.0
    return x


def models():
    L = keras.layers
    yield (
        "masked_stack",
        keras.Sequential(
            [
                keras.Input((None, 5)),
                L.Masking(0.0),
                L.LSTM(8, return_sequences=True, recurrent_activation="hard_sigmoid"),
                L.Bidirectional(L.LSTM(6, return_sequences=True), merge_mode="ave"),
                L.LSTM(4, go_backwards=True),
                L.Dense(3, activation="softmax"),
            ]
        ),
    )
    inp = keras.Input((12, 5))
    seq, h, c = L.LSTM(7, return_sequences=True, return_state=True)(L.Masking()(inp))
    out = L.TimeDistributed(L.Dense(2))(seq)
    yield "functional_states", keras.Model(inp, [out, h, c])


@pytest.mark.parametrize("fmt", [".keras", ".h5", ".weights.h5"])
def test_saved_files_match_keras(tmp_path, fmt):
    rng = np.random.default_rng(0)
    for name, model in models():
        set_weights(model, 1)
        x = padded_input(rng)
        want = model.predict(x, verbose=0)
        path = tmp_path / f"{name}{fmt}"
        if fmt == ".weights.h5":
            model.save_weights(path)
            loaded = fastlstm.load(path, config=model.to_json())
        else:
            model.save(path)
            loaded = fastlstm.load(path)
        got = loaded.predict(x)
        got, want = (got, want) if isinstance(want, list) else ([got], [want])
        for g, w in zip(got, want):
            assert np.abs(g - np.asarray(w)).max() < TOL_F32, (name, fmt)


def test_from_keras_live_object():
    rng = np.random.default_rng(2)
    for name, model in models():
        set_weights(model, 3)
        x = padded_input(rng)
        want = model.predict(x, verbose=0)
        got = fastlstm.from_keras(model).predict(x)
        got, want = (got, want) if isinstance(want, list) else ([got], [want])
        for g, w in zip(got, want):
            assert np.abs(g - np.asarray(w)).max() < TOL_F32, name
