"""What Keras users write works: predict's keyword arguments,
predict_on_batch, model(x, training=False, mask=...), input_shape /
output_shape, empty batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32, UNDER_SANITIZER

import fastlstm

EXAMPLE = Path(fastlstm.__file__).parent / "examples" / "example_model.h5"


@pytest.fixture(scope="module")
def model():
    return fastlstm.load(EXAMPLE)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(5, 9, 16)).astype(np.float32)


def test_predict_takes_keras_arguments(model, x):
    want = model.predict(x)
    got = model.predict(x, batch_size=2, verbose=0, steps=None, callbacks=[object()])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.predict(x, verbose="auto"), want)
    np.testing.assert_array_equal(model.predict_on_batch(x), want)
    np.testing.assert_array_equal(model(x, training=False), want)
    np.testing.assert_array_equal(model(x, training=None, mask=None), want)
    # steps: the first `steps` batches of batch_size rows, as Keras does
    np.testing.assert_array_equal(model.predict(x, batch_size=2, steps=2), want[:4])
    np.testing.assert_array_equal(model.predict(x, steps=1), want)  # 32 rows
    with pytest.raises(fastlstm.ShapeError, match="steps must be"):
        model.predict(x, steps=0)


def test_training_true_is_refused(model, x):
    with pytest.raises(fastlstm.ConfigError, match="training=True"):
        model(x, training=True)


def test_empty_batch_gives_empty_outputs(model, x):
    out = model.predict(x[:0])
    assert out.shape == (0,) + model.predict(x).shape[1:] and out.dtype == np.float32
    assert model(x[:0]).shape == out.shape
    with pytest.raises(fastlstm.ShapeError, match="empty"):
        model.predict(x[:, :0])  # no steps: not a batch of zero rows


def test_input_and_output_shape(model):
    assert model.input_shape == (None, None, 16)
    assert model.output_shape == (None, 1)


def test_call_mask_reaches_the_first_layers():
    """model(x, mask=m) in Keras gives m to the first layers as their input
    mask: here an LSTM, so masked steps carry the state."""
    if UNDER_SANITIZER:
        pytest.skip("TensorFlow under a preloaded sanitizer")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    km = keras.Sequential(
        [keras.Input((None, 4)), keras.layers.LSTM(6, return_sequences=True)]
    )
    km.set_weights([rng.normal(0, 0.3, w.shape) for w in km.get_weights()])
    x = rng.normal(size=(3, 7, 4)).astype(np.float32)
    mask = rng.random((3, 7)) < 0.7
    want = np.asarray(km(x, mask=mask))
    fm = fastlstm.from_keras(km)
    got = fm(x, mask=mask)
    assert np.abs(got - want).max() <= TOL_F32
    assert np.abs(got - fm(x)).max() > 1e-3  # the mask did something
    with pytest.raises(fastlstm.ShapeError, match="mask"):
        fm(x, mask=mask[:, :3])


def _keras_models(keras):
    L = keras.layers
    yield keras.Sequential(
        [
            keras.Input((None, 4)),
            L.Masking(0.0),
            L.LSTM(5, return_sequences=True),
            L.LSTM(3, use_bias=False),
            L.Dense(2),
        ]
    )
    yield keras.Sequential(
        [
            keras.Input((6,)),
            L.Embedding(10, 4),
            L.GRU(5, return_sequences=True),
            L.GRU(3, reset_after=False),
            L.Dense(2, use_bias=False),
        ]
    )
    inp = keras.Input((None, 4))
    x = L.Bidirectional(L.SimpleRNN(3, return_sequences=True))(inp)
    x = L.RNN([L.GRUCell(4), L.LSTMCell(2)])(x)
    yield keras.Model(inp, L.Dense(1)(x))


def test_get_weights_round_trips_with_keras():
    """get_weights() gives Keras' own arrays in Keras' order and shapes,
    and Keras' set_weights takes them: the same model again."""
    if UNDER_SANITIZER:
        pytest.skip("TensorFlow under a preloaded sanitizer")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(5)
    for km in _keras_models(keras):
        km.set_weights([rng.normal(0, 0.3, w.shape) for w in km.get_weights()])
        fm = fastlstm.from_keras(km)
        got, want = fm.get_weights(), km.get_weights()
        assert [w.shape for w in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        clone = keras.models.clone_model(km)
        clone.set_weights(got)
        for g, w in zip(clone.get_weights(), want):
            np.testing.assert_array_equal(g, w)
        for k, layer in enumerate(fm.layers):
            assert fm.get_layer(index=k) is not None
            assert fm.get_layer(layer.name).name == layer.name
            theirs = (
                km.get_layer(layer.name).get_weights()
                if layer.name in {x.name for x in km.layers}
                else []
            )
            for g, w in zip(layer.get_weights(), theirs):
                np.testing.assert_array_equal(g, w)


def test_get_layer_arguments(model):
    assert model.get_layer(index=-1).name == model.layers[-1].name
    with pytest.raises(fastlstm.ConfigError, match="name= or index="):
        model.get_layer()
    with pytest.raises(fastlstm.ConfigError, match="no layer named 'nope'"):
        model.get_layer("nope")
    with pytest.raises(fastlstm.ConfigError, match="out of range"):
        model.get_layer(index=99)


def test_model_stream_state_and_out(model):
    """A model stream's state: a dict by recurrent layer in the structure of
    that layer's own stream; saved and restored, the steps repeat exactly;
    step(x, out=) writes into the caller's array."""
    x = np.random.default_rng(2).normal(size=(2, 6, 16)).astype(np.float32)
    s = model.stream(2)
    zero = s.state
    assert list(zero) == ["lstm", "lstm_1"]
    assert [a.shape for a in zero["lstm"]] == [(2, 64), (2, 64)]
    assert all(not a.any() for v in zero.values() for a in v)
    for t in range(3):
        s.step(x[:, t])
    saved = s.state
    first = [s.step(x[:, t]) for t in range(3, 6)]
    s.state = saved
    out = np.empty((2, 1), np.float32)
    again = [s.step(x[:, t], out=out).copy() for t in range(3, 6)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # the step runs the Dense head in C, predict in NumPy: rounding apart
    np.testing.assert_allclose(first[-1], model.predict(x), rtol=0, atol=1e-6)
    before = s.state["lstm"]
    s.state = {"lstm_1": zero["lstm_1"]}  # one layer; the other keeps its own
    np.testing.assert_array_equal(s.state["lstm"][0], before[0])
    assert not s.state["lstm_1"][0].any()
    with pytest.raises(fastlstm.ShapeError, match="no recurrent layer"):
        s.state = {"nope": zero["lstm"]}
    with pytest.raises(fastlstm.ShapeError):
        s.state = {"lstm": (np.zeros((3, 64)), np.zeros((2, 64)))}
    with pytest.raises(fastlstm.ShapeError, match="out must be"):
        s.step(x[:, 0], out=np.empty((3, 1), np.float32))


def test_torch_and_tf1_streams_take_out():
    """The PyTorch- and TF1-shaped streams (state get/set, feed, reset
    already) write a step into the caller's array too."""
    fixtures = Path(__file__).parent / "fixtures"
    torch_model = fastlstm.load(
        fixtures / "torch/lstm_basic/model.pt", batch_first=False
    )
    tf1_model = fastlstm.load(fixtures / "tf1/basic_lstm_cell/model.ckpt")
    for model, width in ((torch_model, 5), (tf1_model, 4)):
        x = np.random.default_rng(4).normal(size=(2, width)).astype(np.float32)
        want = model.stream(2).step(x)
        out = np.empty_like(want)
        assert model.stream(2).step(x, out=out) is out
        np.testing.assert_array_equal(out, want)
