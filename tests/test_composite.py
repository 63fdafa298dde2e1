"""Bidirectional layers and stacks against compositions of the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import TOL_F32, oracle_args, random_weights

import fastlstm
from fastlstm import _reference as ref


def oracle(w, x, **kw):
    return ref.lstm(
        x, w["kernel"], w["recurrent_kernel"], w.get("bias"), **oracle_args(w), **kw
    )


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_bidirectional_matches_oracle(rng, merge_mode, return_sequences, masked):
    I, H, B, T = 5, 7, 3, 23
    wf, wb = random_weights(rng, I, H), random_weights(rng, I, H)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    mask = rng.random((B, T)) < 0.7 if masked else None
    zero = return_sequences  # tf.keras / Keras 3 rule for Bidirectional
    fw = fastlstm.LSTM(
        **wf,
        return_sequences=return_sequences,
        return_state=True,
        zero_output_for_mask=zero,
    )
    bw = fastlstm.LSTM(
        **wb,
        return_sequences=return_sequences,
        return_state=True,
        zero_output_for_mask=zero,
        go_backwards=True,
    )
    out = fastlstm.Bidirectional(fw, bw, merge_mode=merge_mode)(x, mask=mask)
    yf, lf, hf, cf = oracle(wf, x, mask=mask, zero_output_for_mask=zero)
    yb, lb, hb, cb = oracle(
        wb, x, mask=mask, zero_output_for_mask=zero, go_backwards=True
    )
    a, b = (yf, yb[:, ::-1]) if return_sequences else (lf, lb)
    expected = {
        "concat": [np.concatenate([a, b], -1)],
        "sum": [a + b],
        "mul": [a * b],
        "ave": [(a + b) / 2],
        None: [a, b],
    }[merge_mode]
    expected += [hf, cf, hb, cb]
    assert len(out) == len(expected)
    for got, want in zip(out, expected):
        assert got.shape == want.shape
        assert np.abs(got - want).max() < TOL_F32


def test_bidirectional_alignment_index_t_is_input_step_t(rng):
    """With return_sequences the backward half at index t has seen input
    steps T-1 .. t: so it equals a backward run over x[:, t:]'s last output."""
    w = random_weights(rng, 3, 4)
    x = rng.normal(size=(1, 6, 3)).astype(np.float32)
    fw = fastlstm.LSTM(**random_weights(rng, 3, 4), return_sequences=True)
    bw = fastlstm.LSTM(**w, return_sequences=True, go_backwards=True)
    y = fastlstm.Bidirectional(fw, bw)(x)
    for t in range(6):
        tail = fastlstm.LSTM(**w, go_backwards=True)(x[:, t:])
        np.testing.assert_allclose(y[0, t, 4:], tail[0], atol=1e-6)


def test_bidirectional_with_lengths_matches_pytorch_rule(rng):
    w1, w2 = random_weights(rng, 3, 4), random_weights(rng, 3, 4)
    x = rng.normal(size=(2, 8, 3)).astype(np.float32)
    lengths = np.array([8, 5])
    fw = fastlstm.LSTM(**w1, return_sequences=True)
    bw = fastlstm.LSTM(**w2, return_sequences=True, go_backwards=True)
    y = fastlstm.Bidirectional(fw, bw)(x, lengths=lengths)
    short = fastlstm.Bidirectional(fw, bw)(x[1:, :5])
    np.testing.assert_allclose(y[1, :5], short[0], atol=1e-6)
    assert np.all(y[1, 5:] == 0)


def test_bidirectional_initial_state(rng):
    wf, wb = random_weights(rng, 3, 4), random_weights(rng, 3, 4)
    x = rng.normal(size=(2, 5, 3))
    s = [rng.normal(size=(2, 4)).astype(np.float32) for _ in range(4)]
    fw = fastlstm.LSTM(**wf, return_sequences=True)
    bw = fastlstm.LSTM(**wb, return_sequences=True, go_backwards=True)
    y = fastlstm.Bidirectional(fw, bw)(x, initial_state=s)
    np.testing.assert_allclose(y[..., :4], fw(x, initial_state=s[:2]), atol=1e-7)
    np.testing.assert_allclose(
        y[..., 4:], bw(x, initial_state=s[2:])[:, ::-1], atol=1e-7
    )


@pytest.mark.parametrize("masked", [False, True])
def test_stack_of_three_matches_oracle(rng, masked):
    B, T = 3, 40
    w1 = random_weights(rng, 6, 10)
    w2 = random_weights(rng, 10, 8, P=5)
    w3 = random_weights(rng, 5, 7, peepholes=True)
    x = rng.normal(size=(B, T, 6)).astype(np.float32)
    mask = rng.random((B, T)) < 0.7 if masked else None
    stack = fastlstm.Stack(
        [
            fastlstm.LSTM(**w1, return_sequences=True),
            fastlstm.LSTM(**w2, return_sequences=True),
            fastlstm.LSTM(**w3),
        ],
        return_state=True,
    )
    out, states = stack(x, mask=mask)
    y1, _, h1, c1 = oracle(w1, x, mask=mask)
    y2, _, h2, c2 = oracle(w2, y1, mask=mask)
    _, l3, h3, c3 = oracle(w3, y2, mask=mask)
    assert np.abs(out - l3).max() < TOL_F32
    for (h, c), (rh, rc) in zip(states, [(h1, c1), (h2, c2), (h3, c3)]):
        assert np.abs(h - rh).max() < TOL_F32 and np.abs(c - rc).max() < TOL_F32


def test_stack_with_bidirectional_layers(rng):
    """A 2-layer bidirectional stack, the shape PyTorch's nn.LSTM(num_layers=2,
    bidirectional=True) has."""
    ws = [
        random_weights(rng, 4, 6),
        random_weights(rng, 4, 6),
        random_weights(rng, 12, 5),
        random_weights(rng, 12, 5),
    ]
    x = rng.normal(size=(2, 15, 4)).astype(np.float32)
    lengths = np.array([15, 9])
    layers = [
        fastlstm.Bidirectional(
            fastlstm.LSTM(
                **ws[2 * k], return_sequences=True, zero_output_for_mask=True
            ),
            fastlstm.LSTM(
                **ws[2 * k + 1],
                return_sequences=True,
                go_backwards=True,
                zero_output_for_mask=True,
            ),
        )
        for k in range(2)
    ]
    y = fastlstm.Stack(layers)(x, lengths=lengths)
    ya, *_ = oracle(ws[0], x, lengths=lengths)
    yb, *_ = oracle(ws[1], x, lengths=lengths, go_backwards=True)
    mid = np.concatenate([ya, yb[:, ::-1]], -1)
    yc, *_ = oracle(ws[2], mid, lengths=lengths)
    yd, *_ = oracle(ws[3], mid, lengths=lengths, go_backwards=True)
    want = np.concatenate([yc, yd[:, ::-1]], -1)
    assert y.shape == (2, 15, 10)
    assert np.abs(y - want).max() < TOL_F32


def test_stack_initial_state_per_layer(rng):
    l1 = fastlstm.LSTM(**random_weights(rng, 3, 4), return_sequences=True)
    l2 = fastlstm.LSTM(**random_weights(rng, 4, 5))
    x = rng.normal(size=(2, 6, 3))
    s1 = (np.ones((2, 4)) * 0.3, np.ones((2, 4)) * -0.2)
    s2 = (np.ones((2, 5)) * 0.1, np.ones((2, 5)) * 0.5)
    got = fastlstm.Stack([l1, l2])(x, initial_state=[s1, s2])
    want = l2(l1(x, initial_state=s1), initial_state=s2)
    np.testing.assert_array_equal(got, want)
