"""Model streams of chain-shaped models step in C (engine.step_chain,
fl_chain_step): their steps match predict and the graph's own per-layer
path, share state with feed and .state, keep it over a failed step, take
any input the graph takes, and allocate nothing with out=."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32

import fastlstm
from fastlstm._core import ChainCore
from fastlstm.engine import model_stream

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
EXAMPLE = Path(fastlstm.__file__).parent / "examples" / "example_model.h5"
# every chain-shaped fixture: masking, embeddings, LSTM/GRU/RNN cells,
# Dense heads (softmax too), folded normalization, dropout and noise layers
CHAIN_CASES = [
    "k2_cudnngru",
    "k2_cudnnlstm",
    "k2_graph_td",
    "k2_hard_sigmoid",
    "k2_long_gru",
    "k2_masking_gru_h5",
    "k2_masking_lstm_h5",
    "k2_normalization",
    "k2_peephole",
    "k2_rnn_gru_cells",
    "k2_rnn_lstmcell",
    "k2_stacked_embedding",
    "k2_stateful",
    "k2_use_bias_false",
    "k3_hard_sigmoid",
    "k3_masking_gru_keras",
    "k3_masking_lstm_h5",
    "k3_normalization",
    "k3_rnn_lstmcell",
    "k3_stacked_embedding",
    "k3_use_bias_false",
]


def load(name: str) -> fastlstm.Model:
    (path,) = [p for p in (FIXTURES / name).glob("model.*")]
    return fastlstm.load(path)


def inputs(name: str) -> np.ndarray:
    ref = np.load(FIXTURES / name / "ref.npz")
    return ref["x"] if "x" in ref else ref["x_call1"]


def graph_stream(model: fastlstm.Model, batch: int, monkeypatch) -> object:
    """A stream of the same model that steps through the graph."""
    with monkeypatch.context() as m:
        m.setattr(model_stream, "chain_plan", lambda graph: None)
        return model.stream(batch)


def steps(stream: object, x: np.ndarray, start: int = 0, stop: int | None = None):
    return [
        stream.step(x[:, t]) for t in range(start, x.shape[1] if stop is None else stop)
    ]


def in_c(stream: object) -> bool:
    return isinstance(getattr(stream.step, "__self__", None), ChainCore)


@pytest.mark.parametrize("case", CHAIN_CASES)
def test_chain_steps_match_predict_and_the_graph(case, monkeypatch):
    model, x = load(case), inputs(case)
    stream = model.stream(x.shape[0])
    assert in_c(stream)
    got = np.stack(steps(stream, x), axis=1)
    slow = graph_stream(load(case), x.shape[0], monkeypatch)
    assert not in_c(slow)
    want = np.stack(steps(slow, x), axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    full = load(case).predict(x)
    last = got[:, -1] if full.ndim == 2 else got
    np.testing.assert_allclose(last, full, rtol=0, atol=TOL_F32)


def test_other_models_stream_through_the_graph():
    """A Keras 3 functional model passes masks explicitly (as NotEqual/Any
    nodes): it keeps the graph's path, with the same results as predict."""
    model, x = load("k3_graph_td"), inputs("k3_graph_td")
    stream = model.stream(x.shape[0])
    assert not in_c(stream)
    got = np.stack(steps(stream, x), axis=1)
    np.testing.assert_allclose(got, model.predict(x), atol=TOL_F32)


def test_token_ids_step_as_the_graph_takes_them():
    """An Embedding model steps on integer ids; an id outside the table
    raises the graph's message and leaves the state as it was."""
    model, x = load("k2_stacked_embedding"), inputs("k2_stacked_embedding")
    ids = x.astype(np.int64)
    s, clean = model.stream(len(ids)), model.stream(len(ids))
    assert in_c(s)
    steps(s, ids, 0, 4), steps(clean, ids, 0, 4)
    bad = ids[:, 4].copy()
    bad[0] = 10**9
    with pytest.raises(fastlstm.ShapeError, match="outside"):
        s.step(bad)
    np.testing.assert_array_equal(steps(s, ids, 4), steps(clean, ids, 4))


def test_steps_feed_state_and_reset_share_one_state(monkeypatch):
    model, x = load("k2_masking_gru_h5"), inputs("k2_masking_gru_h5")
    B = x.shape[0]
    s, slow = model.stream(B), graph_stream(model, B, monkeypatch)
    for stream in (s, slow):
        steps(stream, x, 0, 3)
        stream.feed(x[:, 3:5])
    a, b = steps(s, x, 5), steps(slow, x, 5)
    np.testing.assert_allclose(a[-1], model.predict(x), atol=TOL_F32)
    np.testing.assert_allclose(a, b, atol=1e-6)
    for name, value in s.state.items():
        np.testing.assert_allclose(value, slow.state[name], atol=1e-6)
    saved = s.state
    again = steps(s, x, 2, 4)
    s.state = saved
    np.testing.assert_array_equal(steps(s, x, 2, 4), again)
    s.reset()
    assert all(not np.any(v) for v in s.state.values())
    fresh = model.stream(B)
    np.testing.assert_array_equal(steps(s, x, 0, 3), steps(fresh, x, 0, 3))


def test_a_failed_step_keeps_the_state():
    """NaN in a valid row: the step raises the graph's error naming the
    input, and the stream goes on as if the step had not been taken."""
    model, x = load("k2_masking_lstm_h5"), inputs("k2_masking_lstm_h5")
    B = x.shape[0]
    s, clean = model.stream(B), model.stream(B)
    steps(s, x, 0, 3), steps(clean, x, 0, 3)
    bad = x[:, 3].copy()
    bad[1, 0] = np.nan
    with pytest.raises(fastlstm.NonFiniteError, match="input of layer 'lstm'"):
        s.step(bad)
    np.testing.assert_array_equal(steps(s, x, 3), steps(clean, x, 3))


def test_any_input_the_graph_takes():
    model, x = load("k2_masking_lstm_h5"), inputs("k2_masking_lstm_h5")
    B = x.shape[0]
    step = x[:, 0]
    want = model.stream(B).step(step)
    for form in (step.astype(np.float64), step.tolist(), {"input_1": step}):
        np.testing.assert_array_equal(model.stream(B).step(form), want)
    strided = np.asfortranarray(step)
    np.testing.assert_array_equal(model.stream(B).step(strided), want)
    with pytest.raises(fastlstm.ShapeError, match="input_1"):
        model.stream(B).step(np.zeros((B, 5), np.float32))
    with pytest.raises(fastlstm.ShapeError, match="batch size"):
        model.stream(B).step(np.zeros((B + 1, 4), np.float32))


def test_out_takes_the_step_without_allocating():
    model = fastlstm.load(EXAMPLE)
    s = model.stream(1)
    x = np.random.default_rng(0).normal(size=(1, 16)).astype(np.float32)
    out = np.empty((1, 1), np.float32)
    assert s.step(x, out=out) is out
    wide = np.empty((1, 1), np.float64)
    assert s.step(x, out=wide) is wide
    with pytest.raises(fastlstm.ShapeError, match="out must be"):
        s.step(x, out=np.empty((2, 1), np.float32))
    for _ in range(100):
        s.step(x, out=out)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(2000):
            s.step(x, out=out)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    assert grown < 2048, grown  # 2000 steps, not one array each


def test_threads_give_the_same_steps():
    """A large layer stepping on two threads in the chain equals one thread."""
    rng = np.random.default_rng(1)
    keras_like = fastlstm.load(EXAMPLE)
    x = rng.normal(size=(1, 20, 16)).astype(np.float32)
    one = fastlstm.Model(keras_like.spec, threads=1).stream(1)
    two = fastlstm.Model(keras_like.spec, threads=2).stream(1)
    assert in_c(one) and in_c(two)
    np.testing.assert_array_equal(steps(one, x), steps(two, x))


def test_a_dropped_stream_is_freed_at_once():
    """No reference cycle: the stream (and the thread pools of its cells)
    goes as soon as the last reference does, not at a GC pass."""
    import gc
    import weakref

    model = fastlstm.Model(fastlstm.load(EXAMPLE).spec, threads=2)
    stream = model.stream(1)
    assert in_c(stream)
    stream.step(np.zeros((1, 16), np.float32))
    gone = weakref.ref(stream)
    gc.disable()
    try:
        del stream
        assert gone() is None
    finally:
        gc.enable()


def chain_model(*layers) -> fastlstm.Model:
    """Input (6 features) -> layers, as a Sequential model's spec."""
    from fastlstm.model_spec import sequential

    return fastlstm.Model(sequential(layers, name="chain", input_shape=(None, None, 6)))


@pytest.mark.parametrize(
    "options, compiled",
    [({}, True), ({"negative_slope": 0.2}, False), ({"max_value": 6.0}, False)],
)
def test_relu_and_elu_layers_join_the_chain(options, compiled, monkeypatch):
    """ReLU and ELU (alpha 1) layers without options step in C; a ReLU
    with a slope or a cap stays on the graph. Both match predict."""
    from fastlstm.model_spec import DenseSpec, RecurrentSpec
    from fastlstm.sequence_specs import RectifierSpec
    from fastlstm.spec import LSTMSpec

    rng = np.random.default_rng(5)

    def w(*shape):
        return rng.normal(0, 0.3, shape).astype(np.float32)

    cell = LSTMSpec(kernel=w(6, 32), recurrent_kernel=w(8, 32), bias=w(32))
    model = chain_model(
        RectifierSpec("relu", "ReLU", **options),
        RecurrentSpec("lstm", "LSTM", cells=(cell,), return_sequences=True),
        RectifierSpec("elu", "ELU", elu_alpha=1.0),
        DenseSpec("dense", "Dense", kernel=w(8, 3), bias=w(3), activation="softmax"),
    )
    x = rng.normal(size=(4, 12, 6)).astype(np.float32)
    stream = model.stream(4)
    assert in_c(stream) is compiled
    got = np.stack(steps(stream, x), axis=1)
    np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=TOL_F32)
    slow = graph_stream(model, 4, monkeypatch)
    np.testing.assert_allclose(got, np.stack(steps(slow, x), axis=1), atol=1e-6)


def lstm_spec(name: str, inputs: int, units: int, rng, **options):
    from fastlstm.model_spec import RecurrentSpec
    from fastlstm.spec import LSTMSpec

    def w(*shape):
        return rng.normal(0, 0.3, shape).astype(np.float32)

    cell = LSTMSpec(
        kernel=w(inputs, 4 * units),
        recurrent_kernel=w(units, 4 * units),
        bias=w(4 * units),
    )
    return RecurrentSpec(name, "LSTM", cells=(cell,), **options)


def test_a_first_layer_wider_than_the_input_stays_on_the_graph():
    """A file declaring 4 features for an LSTM of 6: no C step (it would
    read past each row); the graph's error at the step."""
    from fastlstm.model_spec import sequential

    rng = np.random.default_rng(6)
    spec = sequential(
        [lstm_spec("lstm", 6, 8, rng)], name="m", input_shape=(None, None, 4)
    )
    stream = fastlstm.Model(spec).stream(1)
    assert not in_c(stream)
    with pytest.raises(fastlstm.ShapeError):
        stream.step(np.ones((1, 4), np.float32))


def test_a_recurrent_layer_called_twice_cannot_stream():
    """One LSTM applied twice needs a state per call; a stream keeps one per
    layer, so it refuses the model (predict runs it)."""
    from fastlstm.model_spec import InputSpec, ModelSpec, NodeSpec, TensorRef

    rng = np.random.default_rng(7)
    lstm = lstm_spec("lstm", 8, 8, rng, return_sequences=True)
    spec = ModelSpec(
        name="twice",
        layers=(InputSpec("x", "InputLayer"), lstm),
        nodes=(
            NodeSpec("x", 0, ()),
            NodeSpec("lstm", 0, (TensorRef("x"),)),
            NodeSpec("lstm", 1, (TensorRef("lstm", 0),)),
        ),
        inputs=(TensorRef("x"),),
        outputs=(TensorRef("lstm", 1),),
        input_shapes=((None, None, 8),),
    )
    model = fastlstm.Model(spec)
    assert model.predict(np.ones((1, 3, 8), np.float32)).shape == (1, 3, 8)
    with pytest.raises(fastlstm.StreamError, match="called 2 times"):
        model.stream(1)


def test_byte_swapped_arrays_are_read_and_written_right():
    model = fastlstm.load(EXAMPLE)
    x = np.random.default_rng(8).normal(size=(2, 16)).astype(np.float32)
    want = model.stream(2).step(x)
    np.testing.assert_array_equal(model.stream(2).step(x.astype(">f4")), want)
    out = np.empty((2, 1), ">f4")
    assert model.stream(2).step(x, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_a_step_failing_after_the_first_layer_keeps_every_state():
    """The second LSTM gets inf (an exponential head overflows): the step
    raises, and neither layer's state moved; a failed chunk likewise."""
    from fastlstm.model_spec import DenseSpec, sequential

    rng = np.random.default_rng(9)
    dense = DenseSpec(
        "blow",
        "Dense",
        kernel=np.eye(8, dtype=np.float32),
        bias=np.full(8, 200, np.float32),
        activation="exponential",
    )
    spec = sequential(
        [
            lstm_spec("a", 4, 8, rng, return_sequences=True),
            dense,
            lstm_spec("b", 8, 4, rng),
        ],
        name="m",
        input_shape=(None, None, 4),
    )
    stream = fastlstm.Model(spec).stream(1)
    assert in_c(stream)
    before = stream.state
    with pytest.raises(fastlstm.NonFiniteError):
        stream.step(np.ones((1, 4), np.float32))
    with pytest.raises(fastlstm.NonFiniteError):
        stream.feed(np.ones((1, 3, 4), np.float32))
    for name, value in stream.state.items():
        np.testing.assert_array_equal(value, before[name])


def test_token_ids_are_cut_toward_zero_as_the_graph_cuts_them():
    model, x = load("k2_stacked_embedding"), inputs("k2_stacked_embedding")
    ids = x[:, 0].astype(np.int64)
    want = model.stream(len(ids)).step(ids)
    near = ids.astype(np.float64) + 0.99999999
    np.testing.assert_array_equal(model.stream(len(ids)).step(near), want)
    with pytest.raises(fastlstm.ShapeError):  # one step's ids are (batch,)
        model.stream(len(ids)).step(ids[:, None].astype(np.float32))


def test_an_uninitialised_chain_refuses_to_step():
    with pytest.raises(fastlstm.StreamError):
        ChainCore().step(np.zeros((1, 1), np.float32))


@pytest.mark.parametrize("rms_scaling", [False, True])
def test_layer_normalization_joins_the_chain(rms_scaling, monkeypatch):
    """LSTM -> LayerNormalization (over the features) -> Dense steps in C
    and matches predict and the graph's own path."""
    from fastlstm.model_spec import DenseSpec, sequential
    from fastlstm.sequence_specs import LayerNormSpec

    rng = np.random.default_rng(10)
    norm = LayerNormSpec(
        "norm",
        "LayerNormalization",
        epsilon=1e-3,
        rms_scaling=rms_scaling,
        gamma=rng.normal(1, 0.2, 8).astype(np.float32),
        beta=None if rms_scaling else rng.normal(0, 0.2, 8).astype(np.float32),
    )
    dense = DenseSpec(
        "dense",
        "Dense",
        kernel=rng.normal(0, 0.3, (8, 2)).astype(np.float32),
        bias=None,
        activation="tanh",
    )
    spec = sequential(
        [lstm_spec("lstm", 6, 8, rng, return_sequences=True), norm, dense],
        name="m",
        input_shape=(None, None, 6),
    )
    model = fastlstm.Model(spec)
    x = rng.normal(size=(3, 10, 6)).astype(np.float32)
    stream = model.stream(3)
    assert in_c(stream)
    got = np.stack(steps(stream, x), axis=1)
    np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=TOL_F32)
    slow = graph_stream(model, 3, monkeypatch)
    np.testing.assert_allclose(got, np.stack(steps(slow, x), axis=1), atol=1e-6)
