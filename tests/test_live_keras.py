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


def test_mixed_precision_model_runs_in_float32_and_says_so(tmp_path):
    """A model saved under mixed_float16 (float32 weights, float16 compute
    in Keras) loads with a PrecisionWarning, says so in summary(), and
    matches the same model run in float32 to 1e-5 (and Keras' float16
    outputs to about float16 rounding)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12, 3)).astype(np.float32)

    def build(policy):
        keras.mixed_precision.set_global_policy(policy)
        try:
            return keras.Sequential(
                [keras.Input((None, 3)), keras.layers.GRU(5), keras.layers.Dense(2)]
            )
        finally:
            keras.mixed_precision.set_global_policy("float32")

    full, mixed = build("float32"), build("mixed_float16")
    weights = [rng.normal(0, 0.3, w.shape) for w in full.get_weights()]
    full.set_weights(weights)
    mixed.set_weights(weights)
    mixed.save(tmp_path / "mixed.keras")
    want = np.asarray(full.predict(x, verbose=0), np.float32)
    half = np.asarray(mixed.predict(x, verbose=0), np.float32)
    with pytest.warns(fastlstm.PrecisionWarning, match="mixed_float16 policy"):
        model = fastlstm.load(tmp_path / "mixed.keras")
    assert "runs in float32" in model.summary(print_fn=lambda s: None)
    got = model.predict(x)
    assert np.abs(got - want).max() < TOL_F32
    assert TOL_F32 < np.abs(got - half).max() < 2e-2


def test_normalization_from_config_and_inverted(tmp_path):
    """A Normalization given its mean and variance (no weights in the file),
    inverted, and one adapted, both as Keras computes them."""
    L = keras.layers
    x = np.random.default_rng(3).normal(size=(2, 7, 3)).astype(np.float32)
    for norm in (
        L.Normalization(mean=[0.1, -0.2, 0.3], variance=[2.0, 0.5, 1e-16], invert=True),
        L.Normalization(mean=[0.1, -0.2, 0.3], variance=[2.0, 0.5, 1e-16]),
    ):
        model = keras.Sequential([keras.Input((7, 3)), norm, L.LSTM(2)])
        set_weights(model, 4)
        path = tmp_path / "norm.keras"
        model.save(path)
        want = model.predict(x, verbose=0)
        assert np.abs(fastlstm.load(path).predict(x) - want).max() < TOL_F32


def test_gru_models_stream_and_keep_state(tmp_path):
    """A masked GRU -> SimpleRNN model streams step by step as predict runs
    it; a stateful GRU carries its state from one predict to the next."""
    L = keras.layers
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12, 4)).astype(np.float32)
    x[1, 9:] = 0.0
    seq = keras.Sequential(
        [
            keras.Input((None, 4)),
            L.Masking(),
            L.GRU(6, return_sequences=True),
            L.SimpleRNN(3, return_sequences=True),
            L.Dense(2),
        ]
    )
    set_weights(seq, 1)
    seq.save(tmp_path / "seq.keras")
    want = seq.predict(x, verbose=0)
    stream = fastlstm.load(tmp_path / "seq.keras").stream(2)
    steps = np.stack([stream.step(x[:, t]) for t in range(12)], 1)
    assert np.abs(steps - want).max() < TOL_F32
    state = keras.Sequential(
        [
            keras.Input((None, 4), batch_size=2),
            L.GRU(5, stateful=True, return_sequences=True),
            L.Dense(2),
        ]
    )
    set_weights(state, 2)
    state.save(tmp_path / "state.keras")
    first = state.predict(x[:, :6], verbose=0, batch_size=2)
    second = state.predict(x[:, 6:], verbose=0, batch_size=2)
    model = fastlstm.load(tmp_path / "state.keras")
    assert np.abs(model.predict(x[:, :6]) - first).max() < TOL_F32
    assert np.abs(model.predict(x[:, 6:]) - second).max() < TOL_F32
