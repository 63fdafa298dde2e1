"""One stream of every kind, hammered from 8 threads: each stream counts its
steps in its cell state (every gate saturated open, candidate 1, so c grows
by exactly 1 per step), and the final count must equal the number of steps
that succeeded; every other step raised StreamError. Without an atomic
guard held across the whole step, two threads run the kernel on the same
state and steps are lost or doubled."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from _helpers import write_keras2_h5

import fastlstm

THREADS = 8
STEPS = 400  # per thread
I, H = 3, 4
OPEN = 30.0  # sigmoid(30) and tanh(30) are exactly 1 in float32


def counting_weights(units: int = H, inputs: int = I) -> dict:
    """Keras gate order (i, f, c, o): every gate open, candidate 1."""
    return {
        "kernel": np.zeros((inputs, 4 * units), np.float32),
        "recurrent_kernel": np.zeros((units, 4 * units), np.float32),
        "bias": np.full(4 * units, OPEN, np.float32),
    }


def hammer(step, count) -> tuple[int, int]:
    """Runs step() from THREADS threads; returns (successes, StreamErrors)
    after checking that count() equals the successes."""
    done = [0] * THREADS
    refused = [0] * THREADS
    other: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(k: int) -> None:
        start.wait()
        for _ in range(STEPS):
            try:
                step()
                done[k] += 1
            except fastlstm.StreamError:
                refused[k] += 1
            except BaseException as exc:  # noqa: B036 - reported below
                other.append(exc)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a stream step hung"
    finally:
        sys.setswitchinterval(interval)
    assert not other, other[:3]
    successes, errors = sum(done), sum(refused)
    assert successes + errors == THREADS * STEPS
    assert successes > 0
    np.testing.assert_array_equal(count(), np.full_like(count(), successes))
    return successes, errors


def engine_layer() -> fastlstm.LSTM:
    return fastlstm.LSTM(**counting_weights())


INPUTS = {
    "float32": lambda: np.zeros((1, I), np.float32),
    "float64": lambda: np.zeros((1, I), np.float64),
    "non_contiguous": lambda: np.zeros((1, 2 * I), np.float32)[:, ::2],
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("masked", [False, True])
def test_engine_stream(kind, masked):
    stream = engine_layer().stream(1)
    x = INPUTS[kind]()
    mask = np.ones(1, bool) if masked else None
    hammer(lambda: stream.step(x, mask), lambda: stream.state[1])


def test_engine_stream_feed_and_state():
    """feed() and the state property share the step's guard."""
    stream = engine_layer().stream(1)
    x = np.zeros((1, 2, I), np.float32)
    ok, _ = hammer(lambda: stream.feed(x), lambda: stream.state[1] / 2)
    assert ok > 0


def test_stack_stream():
    stream = fastlstm.Stack(
        [
            fastlstm.LSTM(**counting_weights(), return_sequences=True),
            fastlstm.LSTM(**counting_weights(inputs=H)),
        ]
    ).stream(1)
    x = np.zeros((1, I), np.float32)
    hammer(lambda: stream.step(x), lambda: [c for _, c in stream.state])


def counting_gru() -> fastlstm.GRU:
    """Update gate shut (z = sigmoid(-30)), reset gate open, a linear
    candidate h + 1: h counts the steps."""
    zeros = np.zeros((H, H), np.float32)
    bias = np.concatenate([np.full(H, -OPEN), np.full(H, OPEN), np.ones(H)])
    return fastlstm.GRU(
        np.zeros((I, 3 * H), np.float32),
        np.concatenate([zeros, zeros, np.eye(H, dtype=np.float32)], axis=1),
        bias.astype(np.float32),
        activation="linear",
        return_sequences=True,
    )


def counting_simple_rnn(inputs: int = I) -> fastlstm.SimpleRNN:
    """h' = h + 1 (identity recurrent kernel, bias 1, linear)."""
    return fastlstm.SimpleRNN(
        np.zeros((inputs, H), np.float32),
        np.eye(H, dtype=np.float32),
        np.ones(H, np.float32),
        activation="linear",
    )


@pytest.mark.parametrize("make", [counting_gru, counting_simple_rnn])
def test_gru_and_simple_rnn_streams(make):
    stream = make().stream(1)
    x = np.zeros((1, I), np.float32)
    hammer(lambda: stream.step(x), lambda: stream.state)
    stream.reset()
    ok, _ = hammer(lambda: stream.feed(x[:, None]), lambda: stream.state)
    assert ok > 0


def test_mixed_stack_stream():
    """A GRU feeding a simple RNN: the RNN's input (the GRU's count) does
    not reach its state, which counts its own steps."""
    stack = fastlstm.Stack([counting_gru(), counting_simple_rnn(inputs=H)])
    stream = stack.stream(1)
    x = np.zeros((1, I), np.float32)
    hammer(lambda: stream.step(x), lambda: stream.state)


def test_torch_stream():
    """Two layers: a step that runs layer 0 but is refused at layer 1
    would leave the layers' counts apart."""
    b = np.full(4 * H, OPEN / 2, np.float32)  # bias_ih + bias_hh
    sd = {}
    for k, inputs in enumerate((I, H)):
        sd[f"weight_ih_l{k}"] = np.zeros((4 * H, inputs), np.float32)
        sd[f"weight_hh_l{k}"] = np.zeros((4 * H, H), np.float32)
        sd[f"bias_ih_l{k}"] = sd[f"bias_hh_l{k}"] = b
    stream = fastlstm.load(sd, batch_first=True).stream(1)
    x = np.zeros((1, I), np.float32)
    hammer(lambda: stream.step(x), lambda: stream.state[1][:, 0])


def test_tf1_stream():
    cells = "rnn/multi_rnn_cell/cell_{}/lstm_cell/"
    variables = {}
    for k, inputs in enumerate((I, H)):
        variables[cells.format(k) + "kernel"] = np.zeros(
            (inputs + H, 4 * H), np.float32
        )
        variables[cells.format(k) + "bias"] = np.full(4 * H, OPEN, np.float32)
    stream = fastlstm.load(variables).stream(1)
    x = np.zeros((1, I), np.float32)
    hammer(lambda: stream.step(x), lambda: [s.c for s in stream.state])


def test_keras_model_stream(tmp_path):
    """A Keras model whose LSTM has a linear activation: its output (h =
    o * c, the candidate being the bias itself) is OPEN times the count."""
    cfg = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {"name": "inp", "batch_input_shape": [None, None, I]},
                },
                {
                    "class_name": "LSTM",
                    "config": {"name": "lstm", "units": H, "activation": "linear"},
                },
            ],
        },
    }
    w = counting_weights()
    arrays = {
        "kernel:0": w["kernel"],
        "recurrent_kernel:0": w["recurrent_kernel"],
        "bias:0": w["bias"],
    }
    path = write_keras2_h5(tmp_path / "count.h5", cfg, {"lstm": arrays})
    stream = fastlstm.load(path).stream(1)
    x = np.zeros((1, I), np.float32)
    last = []

    def step():
        last.append(stream.step(x))

    def count():
        assert len({float(np.max(o)) for o in last}) == len(last)  # no repeats
        return max(float(np.max(o)) for o in last) / OPEN

    hammer(step, count)


def test_objects_owning_c_memory_cannot_be_reinitialised():
    """Calling __init__ again would free the C layer (or a stream's
    workspace) under a thread running on it: it raises instead, and the
    object keeps working."""
    layer = engine_layer()
    packed = layer._packed
    w = counting_weights()
    with pytest.raises(TypeError, match="immutable: __init__ runs once"):
        packed.__init__(w["kernel"], w["recurrent_kernel"], w["bias"], None, None, 1, 2)
    stream = layer.stream(1)
    with pytest.raises(TypeError, match="initialised once"):
        stream._init_core(packed, 1, False, False)
    stream.step(np.zeros((1, I), np.float32))
    np.testing.assert_array_equal(stream.state[1], 1.0)
    fresh = fastlstm.LSTM(**counting_weights(), return_state=True)
    c = fresh(np.zeros((1, 5, I), np.float32))[2]
    np.testing.assert_array_equal(c, 5.0)
    np.testing.assert_allclose(
        layer(np.zeros((1, 5, I), np.float32)), np.tanh(5.0), 1e-6
    )
