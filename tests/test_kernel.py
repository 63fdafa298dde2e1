"""The C kernel against the float64 NumPy oracle over randomized
configurations: sizes, activations, peepholes, clips, projection, direction,
masks, lengths, initial states, layouts, return_sequences/return_state."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import TOL_F32, oracle_args, random_weights

import fastlstm
from fastlstm import _core
from fastlstm import _reference as ref
from fastlstm.activations import _NAMES

ACTIVATIONS = sorted({n for n in _NAMES if not n.endswith(("keras2", "keras3"))})
GATE_ACTIVATIONS = ["sigmoid", "hard_sigmoid_k2", "hard_sigmoid_k3"]
BOUNDED = {"tanh", "sigmoid", "hard_sigmoid_k2", "hard_sigmoid_k3", "softsign"}


def check_layer(
    rng,
    *,
    I,
    H,
    B,
    T,
    P=0,
    peepholes=False,
    bias=True,
    activation="tanh",
    recurrent_activation="sigmoid",
    cell_clip=None,
    proj_clip=None,
    go_backwards=False,
    masked=False,
    with_lengths=False,
    zero_output=False,
    initial=False,
    time_major=False,
    scale=0.5,
):
    w = random_weights(rng, I, H, P, peepholes, bias, scale)
    R = P or H
    x = rng.normal(0, 1, (B, T, I)).astype(np.float32)
    mask = rng.random((B, T)) < 0.7 if masked else None
    lengths = rng.integers(0, T + 1, B) if with_lengths else None
    init = None
    if initial:
        init = (
            rng.normal(0, 0.5, (B, R)).astype(np.float32),
            rng.normal(0, 0.5, (B, H)).astype(np.float32),
        )
    layer = fastlstm.LSTM(
        **w,
        activation=activation,
        recurrent_activation=recurrent_activation,
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        go_backwards=go_backwards,
        return_sequences=True,
        return_state=True,
        zero_output_for_mask=zero_output,
        time_major=time_major,
    )
    xin = np.ascontiguousarray(x.transpose(1, 0, 2)) if time_major else x
    m_in = None if mask is None else (mask.T if time_major else mask)
    y, h, c = layer(xin, initial_state=init, mask=m_in, lengths=lengths)
    if time_major:
        y = y.transpose(1, 0, 2)
    ry, rlast, rh, rc = ref.lstm(
        x,
        w["kernel"],
        w["recurrent_kernel"],
        w.get("bias"),
        **oracle_args(w),
        activation_name=activation,
        recurrent_activation_name=recurrent_activation,
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        go_backwards=go_backwards,
        initial_state=init,
        mask=mask,
        lengths=lengths,
        zero_output_for_mask=zero_output,
    )
    # the non-sequence output of the same layer
    last_layer = fastlstm.LSTM.from_spec(
        fastlstm.LSTMSpec(
            **{**layer.spec.__dict__, "return_sequences": False, "return_state": False}
        ),
        time_major=time_major,
    )
    last = last_layer(xin, initial_state=init, mask=m_in, lengths=lengths)
    assert y.dtype == np.float32 and y.shape == (B, T, R)
    assert h.shape == (B, R) and c.shape == (B, H) and last.shape == (B, R)
    # Absolute error; with unbounded activations, c and h may grow large and
    # the error is taken relative to max(1, |reference|) element by element.
    bounded = {activation, recurrent_activation} <= BOUNDED
    errs = {}
    for name, a, b in (("y", y, ry), ("last", last, rlast), ("h", h, rh), ("c", c, rc)):
        assert np.isfinite(b).all(), f"oracle {name} overflowed: bad test config"
        diff = np.abs(a - b) if bounded else np.abs(a - b) / np.maximum(1, np.abs(b))
        errs[name] = float(diff.max())
    assert max(errs.values()) <= TOL_F32, errs
    return max(errs.values())


def random_config(seed: int) -> dict:
    r = np.random.default_rng(seed)
    T = int(r.choice([1, 2, 17, 1000], p=[0.2, 0.2, 0.45, 0.15]))
    big = T == 1000
    cfg = dict(
        I=int(r.integers(1, 60 if big else 201)),
        H=int(r.integers(1, 100 if big else 301)),
        B=int(r.integers(1, 9 if big else 65)),
        T=T,
        P=int(r.integers(1, 40)) if r.random() < 0.25 else 0,
        peepholes=bool(r.random() < 0.3),
        bias=bool(r.random() < 0.85),
        activation=str(r.choice(ACTIVATIONS)) if r.random() < 0.4 else "tanh",
        recurrent_activation=str(r.choice(GATE_ACTIVATIONS)),
        go_backwards=bool(r.random() < 0.3),
        masked=bool(r.random() < 0.35),
        with_lengths=bool(r.random() < 0.25),
        zero_output=bool(r.random() < 0.5),
        initial=bool(r.random() < 0.5),
        time_major=bool(r.random() < 0.25),
    )
    if r.random() < 0.2:
        cfg["cell_clip"] = 0.5
    if cfg["P"] and r.random() < 0.5:
        cfg["proj_clip"] = 0.2
    if cfg["activation"] == "exponential" and T > 2:
        cfg["T"] = 2  # c grows like e^(e^...): float32 overflows in a few steps
    return cfg


@pytest.mark.parametrize("seed", range(60))
def test_random_configurations(seed):
    cfg = random_config(seed)
    check_layer(np.random.default_rng(seed + 1000), **cfg)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("recurrent_activation", ACTIVATIONS)
def test_every_activation_pair(rng, activation, recurrent_activation):
    # unbounded gate activations let c grow geometrically: keep runs short
    bounded_gates = recurrent_activation in BOUNDED
    tame = bounded_gates and activation != "exponential"
    check_layer(
        rng,
        I=4,
        H=6,
        B=3,
        T=17 if tame else 2,
        scale=0.5 if tame else 0.2,
        activation=activation,
        recurrent_activation=recurrent_activation,
        masked=True,
    )


@pytest.mark.parametrize("batch", [1, 5])
def test_long_sequence_meets_1e5(batch):
    """T=1000, units 256: float32 within 1e-5 of float64 at every step."""
    err = check_layer(np.random.default_rng(7), I=64, H=256, B=batch, T=1000, scale=1.0)
    assert err < TOL_F32


def test_long_sequence_wide_layer_normal_weights():
    """units 300, features 200, N(0, 0.1) weights (the brief's conditioning)."""
    err = check_layer(
        np.random.default_rng(9),
        I=200,
        H=300,
        B=8,
        T=1000,
        scale=0.1 * np.sqrt(500),
        masked=True,
    )
    assert err < TOL_F32


def test_long_sequence_with_every_option():
    err = check_layer(
        np.random.default_rng(8),
        I=32,
        H=128,
        P=48,
        B=4,
        T=1000,
        peepholes=True,
        cell_clip=3.0,
        proj_clip=0.8,
        go_backwards=True,
        masked=True,
        initial=True,
    )
    assert err < TOL_F32


def test_without_bias_equals_zero_bias(rng):
    w = random_weights(rng, 3, 5, bias=False)
    x = rng.normal(size=(2, 9, 3))
    a = fastlstm.LSTM(**w, return_sequences=True)(x)
    b = fastlstm.LSTM(**w, bias=np.zeros(20), return_sequences=True)(x)
    assert np.array_equal(a, b)
    assert np.abs(a).max() > 1e-3


def test_go_backwards_output_is_in_processing_order(rng):
    w = random_weights(rng, 3, 4)
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    back = fastlstm.LSTM(**w, go_backwards=True, return_sequences=True)(x)
    fwd_on_reversed = fastlstm.LSTM(**w, return_sequences=True)(x[:, ::-1])
    np.testing.assert_array_equal(back, fwd_on_reversed)


def test_masked_step_carries_state_and_output(rng):
    """Keras rule: at a masked step h, c are carried; the output repeats the
    previous output, zeros before the first valid step (or zeros always with
    zero_output_for_mask)."""
    w = random_weights(rng, 2, 3)
    x = rng.normal(size=(1, 5, 2)).astype(np.float32)
    mask = np.array([[False, True, False, True, False]])
    carry = fastlstm.LSTM(**w, return_sequences=True)(x, mask=mask)[0]
    zero = fastlstm.LSTM(**w, return_sequences=True, zero_output_for_mask=True)(
        x, mask=mask
    )[0]
    assert np.all(carry[0] == 0) and np.all(zero[0] == 0)
    np.testing.assert_array_equal(carry[2], carry[1])
    np.testing.assert_array_equal(carry[4], carry[3])
    assert np.all(zero[2] == 0) and np.all(zero[4] == 0)
    np.testing.assert_array_equal(zero[3], carry[3])
    # the masked steps change nothing: dropping them gives the same state
    _, h, c = fastlstm.LSTM(**w, return_state=True)(x, mask=mask)
    _, h2, c2 = fastlstm.LSTM(**w, return_state=True)(x[:, [1, 3]])
    np.testing.assert_allclose(h, h2, atol=1e-7)
    np.testing.assert_allclose(c, c2, atol=1e-7)


def test_lengths_match_running_each_row_alone(rng):
    """PyTorch packed-sequence semantics: zeros past each length, final state
    at each row's own last step, in both directions."""
    w = random_weights(rng, 3, 4)
    x = rng.normal(size=(3, 7, 3)).astype(np.float32)
    lengths = np.array([7, 4, 1])
    for backwards in (False, True):
        layer = fastlstm.LSTM(
            **w, go_backwards=backwards, return_sequences=True, return_state=True
        )
        y, h, c = layer(x, lengths=lengths)
        for b, n in enumerate(lengths):
            yb, hb, cb = layer(x[b : b + 1, :n])
            np.testing.assert_allclose(h[b], hb[0], atol=1e-6)
            np.testing.assert_allclose(c[b], cb[0], atol=1e-6)
            if backwards:  # processing order: padding comes first, as zeros
                assert np.all(y[b, : 7 - n] == 0)
                np.testing.assert_allclose(y[b, 7 - n :], yb[0], atol=1e-6)
            else:
                assert np.all(y[b, n:] == 0)
                np.testing.assert_allclose(y[b, :n], yb[0], atol=1e-6)
        last = fastlstm.LSTM(**w, go_backwards=backwards)(x, lengths=lengths)
        np.testing.assert_allclose(last, h, atol=1e-7)


def test_chunked_input_projection_matches_single_gemm(rng):
    """The input GEMM in chunks of steps (what large calls get): the same
    numbers as one GEMM over all steps."""
    w = random_weights(rng, 5, 8)
    x = rng.normal(size=(3, 50, 5)).astype(np.float32)
    layer = fastlstm.LSTM(**w)
    for backwards in (False, True):
        outs = []
        for chunk in (0, 7):
            h, c = np.zeros((3, 8), np.float32), np.zeros((3, 8), np.float32)
            y = np.empty((3, 50, 8), np.float32)
            layer._packed.forward(
                x, True, h, c, y=y, reverse=backwards, chunk_steps=chunk
            )
            outs.append(y)
        # the last chunk may be small enough for the one-row kernel: same math,
        # other summation order
        np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
        assert np.abs(outs[0]).max() > 1e-2


def test_long_batch1_run_on_wh_panels_meets_1e5():
    """One thread, batch 1, T=1000, I=H=256: the call reads its copy of Wh in
    the panel layout; float32 within 1e-5 of float64 at every step, and the
    same numbers as the steps fed in pieces too short for the copy."""
    rng = np.random.default_rng(11)
    w = random_weights(rng, 256, 256)
    x = rng.normal(0, 1, (1, 1000, 256)).astype(np.float32)
    layer = fastlstm.LSTM(**w, return_sequences=True, threads=1)
    y = layer(x)
    ry, _, _, _ = ref.lstm(x, w["kernel"], w["recurrent_kernel"], w["bias"])
    assert np.abs(y - ry).max() < TOL_F32
    stream = layer.stream(1)
    pieces = [stream.feed(x[:, t : t + 100]) for t in range(0, 1000, 100)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", ["auto", "rows"])
@pytest.mark.parametrize("I", [16, 256, 1024])
@pytest.mark.parametrize("H", [128, 181, 200, 256, 300, 384, 400])
def test_wh_copy_is_planned_and_laid_out_together(I, H, layout):
    """A batch-1 call on one thread reads a copy of Wh in panels exactly when
    the C core's plan says so, and its workspace then holds that copy;
    short calls, small Wh and layers stored in panels get none, long calls
    with large Wh and wide inputs do."""
    kernel = np.zeros((I, 4 * H), np.float32)
    recurrent = np.zeros((H, 4 * H), np.float32)
    packed = fastlstm.LSTM(kernel, recurrent, threads=1)._packed
    if layout == "rows":
        packed = _core.PackedLSTM(
            kernel, recurrent, None, None, None, 0, 1, weight_layout="rows"
        )
    wh_bytes = 4 * H * -(-4 * H // 128) * 128  # its panels, the last one padded

    def plan(T):  # chunks of 2 steps, off the woven path: only the copy varies
        return packed.plan(1, T, chunk_steps=2, with_y=False, woven=False)

    base = plan(2)["workspace_bytes"]
    for T in (127, 128, 1000, 5000):
        p = plan(T)
        assert p["workspace_bytes"] - base == (wh_bytes if p["wh_copy"] else 0)
        if T == 127 or H in (128, 181) or packed.weight_layout == "panels":
            assert not p["wh_copy"]  # too short; Wh under 512 KB; no copy needed
        elif I == 1024 and H >= 256 and T >= 1000:
            assert p["wh_copy"]
