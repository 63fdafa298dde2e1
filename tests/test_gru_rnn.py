"""GRU and SimpleRNN engine layers against a float64 NumPy reference written
from the equations (fastlstm.GRUSpec's docstring), with Keras call
semantics: masks, lengths, go_backwards, states, time_major, streams,
Bidirectional and Stack; and against live PyTorch where it is installed."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _helpers import TOL_F32
from _helpers import gru_rnn_reference as reference
from _helpers import gru_rnn_weights as weights

import fastlstm
from fastlstm.errors import ConfigError, ShapeError, StreamError


def make(kind, w, **kw):
    cls = fastlstm.GRU if kind == "gru" else fastlstm.SimpleRNN
    return cls(*w, **kw)


CASES = [
    ("gru", {}),
    ("gru", {"reset_after": False}),
    ("gru", {"activation": "relu", "recurrent_activation": "hard_sigmoid_k2"}),
    ("simple", {}),
    ("simple", {"activation": "relu"}),
]


@pytest.mark.parametrize("kind, opts", CASES)
@pytest.mark.parametrize("B, T", [(1, 1000), (5, 40), (70, 9)])
def test_matches_reference(rng, kind, opts, B, T):
    I, H = 7, 33
    w = weights(rng, I, H, 3 if kind == "gru" else 1, scale=0.1)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    layer = make(kind, w, return_sequences=True, **opts)
    ref = {"act": opts.get("activation", "tanh")}
    if kind == "gru":
        ref["ract"] = opts.get("recurrent_activation", "sigmoid")
        ref["reset_after"] = opts.get("reset_after", True)
    want, _ = reference(kind, w, x, **ref)
    assert np.abs(layer(x) - want).max() < TOL_F32


@pytest.mark.parametrize("kind", ["gru", "simple"])
@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize("backwards", [False, True])
def test_masks_states_and_direction(rng, kind, zero, backwards):
    B, T, I, H = 4, 12, 3, 8
    w = weights(rng, I, H, 3 if kind == "gru" else 1)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    mask = rng.random((B, T)) < 0.7
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    layer = make(
        kind,
        w,
        return_sequences=True,
        return_state=True,
        go_backwards=backwards,
        zero_output_for_mask=zero,
    )
    y, h = layer(x, initial_state=[h0], mask=mask)
    want_y, want_h = reference(kind, w, x, mask, h0, backwards, zero)
    # before a row's first valid step Keras outputs zeros, not h0
    first = np.cumsum(mask[:, ::-1] if backwards else mask, axis=1) > 0
    want_y = np.where(first[..., None], want_y, 0)
    assert np.abs(y - want_y).max() < TOL_F32
    assert np.abs(h - want_h).max() < TOL_F32
    # an array h0 works as well as [h0]; lengths are masks of a prefix
    np.testing.assert_array_equal(layer(x, initial_state=h0, mask=mask)[1], h)
    lengths = np.array([12, 5, 0, 1])
    prefix = np.arange(T)[None] < lengths[:, None]
    _, h_len = layer(x, lengths=lengths)
    np.testing.assert_allclose(h_len, layer(x, mask=prefix)[1], atol=0)


@pytest.mark.parametrize("kind", ["gru", "simple"])
def test_stream_equals_call(rng, kind):
    B, T, I, H = 3, 30, 4, 16
    w = weights(rng, I, H, 3 if kind == "gru" else 1)
    layer = make(kind, w, return_sequences=True)
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    mask = rng.random((B, T)) < 0.8
    want = layer(x, mask=mask)
    s = layer.stream(B)
    out = np.empty((B, H), np.float32)
    steps = [s.step(x[:, t], mask[:, t], out=out).copy() for t in range(10)]
    rest = s.feed(x[:, 10:], mask[:, 10:])
    np.testing.assert_array_equal(np.concatenate([np.stack(steps, 1), rest], 1), want)
    h = s.state
    s.reset()
    assert not s.state.any()
    s.state = [h]
    np.testing.assert_array_equal(s.state, h)
    with pytest.raises(ShapeError, match="state"):
        s.state = np.zeros((B, H + 1))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s)


def test_time_major_and_pickle(rng):
    w = weights(rng, 3, 5, 3)
    a = fastlstm.GRU(*w, return_sequences=True, reset_after=False)
    b = fastlstm.GRU(*w, return_sequences=True, reset_after=False, time_major=True)
    x = rng.normal(size=(2, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(b(x.transpose(1, 0, 2)), a(x).transpose(1, 0, 2))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c(x), a(x))
    assert "reset_after=False" in repr(c)


@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_and_mixed_stack(rng, mode):
    B, T, I, H = 2, 15, 4, 6
    wf, wb = weights(rng, I, H, 3), weights(rng, I, H, 3)
    bi = fastlstm.Bidirectional(
        fastlstm.GRU(*wf, return_sequences=True, return_state=True),
        fastlstm.GRU(*wb, return_sequences=True, return_state=True, go_backwards=True),
        merge_mode=mode,
    )
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    out = bi(x)
    yf, hf = reference("gru", wf, x)
    yb, hb = reference("gru", wb, x, backwards=True)
    yb = yb[:, ::-1]
    merged = {
        "concat": [np.concatenate([yf, yb], -1)],
        "sum": [yf + yb],
        "mul": [yf * yb],
        "ave": [(yf + yb) / 2],
        None: [yf, yb],
    }[mode]
    assert len(out) == len(merged) + 2  # outputs, h_fw, h_bw
    for got, want in zip(out, merged + [hf, hb]):
        assert np.abs(got - want).max() < TOL_F32
    # a stack mixing kinds, with one state list per layer
    ws = weights(rng, H, 5, 1)
    stack = fastlstm.Stack(
        [
            fastlstm.GRU(*wf, return_sequences=True),
            fastlstm.SimpleRNN(*ws, return_sequences=True),
        ],
        return_state=True,
    )
    y, states = stack(x)
    y1, h1 = reference("gru", wf, x)
    y2, h2 = reference("simple", ws, y1.astype(np.float32))
    assert np.abs(y - y2).max() < TOL_F32
    assert np.abs(states[0][0] - h1).max() < TOL_F32
    assert np.abs(states[1][0] - h2).max() < TOL_F32


def test_bad_arguments(rng):
    k, rk, b, rb = weights(rng, 3, 4, 3)
    with pytest.raises(ShapeError, match=r"recurrent_kernel must have shape \(4, 12\)"):
        fastlstm.GRU(k, rk[:3], b, rb)
    with pytest.raises(
        ShapeError, match=r"kernel must have shape \(input_size, 3\*units"
    ):
        fastlstm.GRU(k[:, :11], rk)
    with pytest.raises(ConfigError, match="reset_after must be a bool"):
        fastlstm.GRU(k, rk, reset_after="yes")
    with pytest.raises(ConfigError, match="activation"):
        fastlstm.SimpleRNN(k[:, :4], rk[:, :4], activation="gelu?")
    layer = fastlstm.GRU(k, rk, go_backwards=True)
    with pytest.raises(StreamError, match="go_backwards"):
        layer.stream(1)
    with pytest.raises(ShapeError, match=r"initial_state must have shape \(batch, 4\)"):
        layer(np.zeros((2, 3, 3), np.float32), initial_state=np.zeros((2, 5)))
    with pytest.raises(ShapeError, match="initial_state must be one array h"):
        layer(np.zeros((2, 3, 3), np.float32), initial_state=[np.zeros((2, 4))] * 2)


@pytest.mark.parametrize("module", ["GRU", "RNN_tanh", "RNN_relu"])
def test_live_torch(rng, module):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    I, H, B, T = 5, 16, 3, 200
    if module == "GRU":
        mod = torch.nn.GRU(I, H, batch_first=True)
    else:
        mod = torch.nn.RNN(I, H, batch_first=True, nonlinearity=module[4:])
    x = torch.randn(B, T, I)
    with torch.no_grad():
        want, _ = mod(x)
    sd = {k: v.numpy() for k, v in mod.state_dict().items()}

    def canonical(w):  # torch's (G*H, ...) rows r, z, n -> columns z, r, n
        if module != "GRU":
            return w.T
        r, z, n = np.split(w, 3, axis=0)
        return np.concatenate([z, r, n], 0).T

    w = [canonical(sd[k]) for k in ("weight_ih_l0", "weight_hh_l0")]
    w += [canonical(sd[k][:, None])[0] for k in ("bias_ih_l0", "bias_hh_l0")]
    if module == "GRU":
        layer = fastlstm.GRU(*w, return_sequences=True)
    else:
        layer = fastlstm.SimpleRNN(*w, activation=module[4:], return_sequences=True)
    assert np.abs(layer(x.numpy()) - want.numpy()).max() < TOL_F32
