"""Streams: feeding a sequence in chunks equals one stateless call."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import random_weights

import fastlstm


def chunks(T: int, size: int):
    return [(s, min(s + size, T)) for s in range(0, T, size)]


def layer_for(rng, *, I=6, H=9, P=0, peepholes=False, zero=False, **kw):
    w = random_weights(rng, I, H, P, peepholes)
    return fastlstm.LSTM(**w, return_sequences=True, zero_output_for_mask=zero, **kw)


@pytest.mark.parametrize("size", [1, 3, 7, 50])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("zero", [False, True])
def test_feed_in_chunks_equals_whole(rng, size, masked, zero):
    layer = layer_for(rng, P=4, peepholes=True, zero=zero, cell_clip=2.0)
    x = rng.normal(size=(3, 50, 6)).astype(np.float32)
    mask = rng.random((3, 50)) < 0.6 if masked else None
    mask_arg = {} if mask is None else {"mask": mask}
    whole = layer(x, **mask_arg)
    stream = layer.stream(3)
    parts = [
        stream.feed(x[:, a:b], mask=None if mask is None else mask[:, a:b])
        for a, b in chunks(50, size)
    ]
    got = np.concatenate(parts, axis=1)
    assert got.shape == whole.shape
    assert np.abs(got - whole).max() < 1e-6
    assert np.abs(whole).max() > 1e-2  # the comparison is not vacuous


def test_step_by_step_equals_whole(rng):
    layer = layer_for(rng)
    x = rng.normal(size=(2, 40, 6))
    mask = rng.random((2, 40)) < 0.7
    whole = layer(x, mask=mask)
    stream = layer.stream(2)
    steps = np.stack([stream.step(x[:, t], mask=mask[:, t]) for t in range(40)], 1)
    assert np.abs(steps - whole).max() < 1e-6


def test_mixed_step_and_feed_and_final_state(rng):
    w = random_weights(rng, 6, 9)
    layer = fastlstm.LSTM(**w, return_sequences=True, return_state=True)
    x = rng.normal(size=(4, 30, 6)).astype(np.float32)
    y, h, c = layer(x)
    stream = layer.stream(4)
    out = [stream.feed(x[:, :7])]
    out += [stream.step(x[:, t])[:, None] for t in range(7, 10)]
    out.append(stream.feed(x[:, 10:]))
    assert np.abs(np.concatenate(out, 1) - y).max() < 1e-6
    sh, sc = stream.state
    assert np.abs(sh - h).max() < 1e-6 and np.abs(sc - c).max() < 1e-6


def test_reset_and_state_round_trip(rng):
    layer = layer_for(rng)
    x = rng.normal(size=(2, 12, 6))
    stream = layer.stream(2)
    first = stream.feed(x)
    saved = stream.state
    after = stream.feed(x)
    assert not np.allclose(after, first)  # state carried over
    stream.reset()
    np.testing.assert_array_equal(stream.feed(x), first)
    stream.state = saved
    np.testing.assert_array_equal(stream.feed(x), after)
    # state returns copies: mutating them changes nothing
    h, _ = stream.state
    h += 100
    assert np.abs(stream.state[0]).max() < 1.5


def test_initial_state_equals_stream_state(rng):
    layer = layer_for(rng)
    x = rng.normal(size=(2, 8, 6))
    h0 = rng.normal(size=(2, 9)).astype(np.float32)
    c0 = rng.normal(size=(2, 9)).astype(np.float32)
    stream = layer.stream(2)
    stream.state = (h0, c0)
    np.testing.assert_allclose(
        stream.feed(x), layer(x, initial_state=(h0, c0)), atol=1e-6
    )


def test_time_major_stream(rng):
    w = random_weights(rng, 6, 9)
    layer = fastlstm.LSTM(**w, return_sequences=True, time_major=True)
    x = rng.normal(size=(20, 3, 6)).astype(np.float32)
    stream = layer.stream(3)
    got = np.concatenate([stream.feed(x[a:b]) for a, b in chunks(20, 6)], axis=0)
    assert np.abs(got - layer(x)).max() < 1e-6


@pytest.mark.parametrize("size", [1, 3, 7, 25])
def test_stack_stream_equals_stack(rng, size):
    l1 = layer_for(rng, I=6, H=8)
    l2 = fastlstm.LSTM(**random_weights(rng, 8, 5, P=3), return_sequences=True)
    stack = fastlstm.Stack([l1, l2])
    x = rng.normal(size=(2, 25, 6)).astype(np.float32)
    whole = stack(x)
    stream = stack.stream(2)
    got = np.concatenate([stream.feed(x[:, a:b]) for a, b in chunks(25, size)], 1)
    assert np.abs(got - whole).max() < 1e-6
    assert [s[0].shape for s in stream.state] == [(2, 8), (2, 3)]
    stream.reset()
    steps = np.stack([stream.step(x[:, t]) for t in range(25)], 1)
    assert np.abs(steps - whole).max() < 1e-6


def test_stream_is_independent_of_other_streams(rng):
    layer = layer_for(rng)
    x = rng.normal(size=(1, 10, 6))
    a, b = layer.stream(1), layer.stream(1)
    ya = a.feed(x)
    b.feed(rng.normal(size=(1, 10, 6)))
    a2 = layer.stream(1)
    np.testing.assert_array_equal(a2.feed(x), ya)


def test_state_setter_with_leading_masked_steps_matches_initial_state(rng):
    """Keras: before a row's first valid step the output is zeros, even with
    a non-zero initial state; a state set on a stream behaves the same."""
    w = random_weights(rng, 6, 9)
    layer = fastlstm.LSTM(**w, return_sequences=True)
    x = rng.normal(size=(2, 6, 6)).astype(np.float32)
    mask = np.array([[0, 0, 1, 1, 0, 1], [1, 0, 1, 0, 1, 1]], bool)
    h0 = np.ones((2, 9), np.float32)
    c0 = np.full((2, 9), 0.5, np.float32)
    want = layer(x, initial_state=(h0, c0), mask=mask)
    assert np.all(want[0, :2] == 0)
    stream = layer.stream(2)
    stream.feed(x, mask=mask)  # leave some state behind first
    stream.state = (h0, c0)
    got = np.concatenate(
        [
            stream.feed(x[:, :3], mask=mask[:, :3]),
            stream.feed(x[:, 3:], mask=mask[:, 3:]),
        ],
        1,
    )
    assert np.abs(got - want).max() < 1e-6
