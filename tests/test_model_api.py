"""The Model API on real Keras files: predict input forms, batch_size,
summary, shapes, streaming, stateful reset."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import fastlstm

KERAS = Path(__file__).parent / "fixtures" / "keras"


@pytest.fixture(scope="module")
def example():
    files = resources.files("fastlstm.examples")
    with resources.as_file(files.joinpath("example_model.h5")) as path:
        model = fastlstm.load(path)
    io = dict(np.load(files.joinpath("example_io.npz").open("rb")))
    return model, io


def test_example_matches_keras(example):
    model, io = example
    assert np.abs(model.predict(io["x"]) - io["y"]).max() < 1e-5
    assert np.abs(model(io["x"]) - io["y"]).max() < 1e-5  # __call__ alias


def test_batch_size_splitting_gives_the_same_result(example):
    model, io = example
    whole = model.predict(io["x"])
    # pieces of 3 and 2 rows may take other kernels (same math, other
    # summation order): equal to float rounding
    np.testing.assert_allclose(model.predict(io["x"], batch_size=3), whole, atol=1e-6)
    with pytest.raises(fastlstm.ShapeError, match="batch_size must be an integer >= 1"):
        model.predict(io["x"], batch_size=0)


def test_input_forms_and_shape_checks(example):
    model, io = example
    x = io["x"]
    want = model.predict(x)
    np.testing.assert_array_equal(model.predict({"input_1": x}), want)
    np.testing.assert_array_equal(model.predict(x.astype(np.float64)), want)
    with pytest.raises(
        fastlstm.ShapeError,
        match=r"input 'input_1' has shape .* "
        r"expects \(None, None, 16\)",
    ):
        model.predict(x[..., :5])
    with pytest.raises(fastlstm.ShapeError, match="missing"):
        model.predict({"wrong": x})


def test_layers_inputs_outputs_and_summary(example):
    model, _ = example
    assert [layer.class_name for layer in model.layers] == [
        "InputLayer",
        "Masking",
        "LSTM",
        "LSTM",
        "Dense",
    ]
    assert model.inputs == [(None, None, 16)]
    assert model.outputs == [(None, 1)]
    assert model.count_params() == 4 * 64 * (16 + 64 + 1) + 4 * 32 * (64 + 32 + 1) + 33
    lines = []
    text = model.summary(print_fn=lines.append)
    assert "lstm_1 (LSTM)" in text and "(None, 32)" in text and "12416" in text
    assert "Total params: 33,185" in text and lines


def test_model_stream_equals_predict(example):
    model, io = example
    x = io["x"]
    want = model.predict(x)
    stream = model.stream(x.shape[0])
    for t in range(x.shape[1]):
        out = stream.step(x[:, t])
    assert np.abs(out - want).max() < 1e-6
    stream.reset()
    parts = [stream.feed(x[:, a : a + 7]) for a in range(0, x.shape[1], 7)]
    assert np.abs(parts[-1] - want).max() < 1e-6


def test_bidirectional_model_refuses_to_stream():
    path = KERAS / "k2_bidir_concat" / "model.h5"
    if not path.exists():
        pytest.skip("fixture missing")
    model = fastlstm.load(path)
    with pytest.raises(fastlstm.StreamError, match="Bidirectional.*whole sequence"):
        model.stream(2)


def test_from_keras_needs_a_keras_model():
    with pytest.raises(TypeError, match="takes a Keras model"):
        fastlstm.from_keras(object())


def test_stream_of_a_model_with_a_fixed_time_length():
    """Fixtures declare their time length; a stream feeds one step at a time
    and must equal predict on the whole sequence."""
    path = KERAS / "k2_masking_lstm_h5" / "model.h5"
    if not path.exists():
        pytest.skip("fixture missing")
    model = fastlstm.load(path)
    assert model.inputs[0][1] is not None  # a declared time length
    x = dict(np.load(path.parent / "ref.npz"))["x"]
    want = model.predict(x)
    stream = model.stream(x.shape[0])
    for t in range(x.shape[1]):
        out = stream.step(x[:, t])
    assert np.abs(out - want).max() < 1e-6
