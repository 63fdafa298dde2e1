"""How the C core stores a layer's weights (PackedLSTM weight_layout): large
layers default to panels of 128 columns (src_c/fl_internal.h), which a
batch-1 step streams from L3 faster. Both layouts give the same outputs on
every path, and the panel one meets 1e-5 against float64 over T=1000."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import TOL_F32, random_weights

import fastlstm
from fastlstm import _core
from fastlstm import _reference as ref
from fastlstm.errors import ConfigError


def with_layout(layer: fastlstm.LSTM, layout: str) -> fastlstm.LSTM:
    """The layer with its weights packed again in `layout`."""
    s = layer.spec
    layer._packed = _core.PackedLSTM(
        s.kernel,
        s.recurrent_kernel,
        s.bias,
        s.peepholes,
        s.projection,
        int(s.activation),
        int(s.recurrent_activation),
        s.cell_clip,
        s.proj_clip,
        weight_layout=layout,
    )
    assert layer._packed.weight_layout == layout
    return layer


def pair(rng, I, H, **kw) -> tuple[fastlstm.LSTM, fastlstm.LSTM]:
    w = random_weights(rng, I, H, **kw)
    make = lambda: fastlstm.LSTM(**w, return_sequences=True, threads=1)  # noqa: E731
    return with_layout(make(), "rows"), with_layout(make(), "panels")


def test_auto_layout_by_size():
    """Automatic: panels from 256 KB of [Wx; Wh] (units a multiple of 16) on
    CPUs without AMX, rows otherwise."""
    rng = np.random.default_rng(0)
    big = fastlstm.LSTM(**random_weights(rng, 64, 512))._packed
    edge = fastlstm.LSTM(**random_weights(rng, 1, 128))._packed  # 258 KB
    small = fastlstm.LSTM(**random_weights(rng, 64, 96))._packed  # 240 KB
    odd = fastlstm.LSTM(**random_weights(rng, 600, 300))._packed  # 300 % 16 != 0
    for layer in (big, edge):
        assert layer.weight_layout == ("rows" if _core.amx_available() else "panels")
    assert small.weight_layout == "rows"
    assert odd.weight_layout == "rows"


def test_bad_layout_names_the_problem():
    w = random_weights(np.random.default_rng(1), 8, 20)
    args = (w["kernel"], w["recurrent_kernel"], w["bias"], None, None, 0, 1)
    with pytest.raises(ConfigError, match="weight_layout must be one of"):
        _core.PackedLSTM(*args, weight_layout="columns")
    with pytest.raises(ConfigError, match="divisible by 16, got 20"):
        _core.PackedLSTM(*args, weight_layout="panels")


@pytest.mark.parametrize(
    "I,H,P,peep", [(64, 512, 0, False), (40, 144, 0, True), (72, 96, 48, False)]
)
def test_long_sequence_meets_1e5(I, H, P, peep):
    """Batch 1, T=1000 (the woven projection where the CPU has it): the
    panel layout within 1e-5 of float64 and within 1e-6 of the rows."""
    rng = np.random.default_rng(I + H)
    rows, panels = pair(rng, I, H, P=P, peepholes=peep)
    x = rng.normal(0, 1, (1, 1000, I)).astype(np.float32)
    s = rows.spec
    ry, _, _, _ = ref.lstm(
        x,
        s.kernel,
        s.recurrent_kernel,
        s.bias,
        peepholes=s.peepholes,
        projection=s.projection,
    )
    y_panels = panels(x)
    assert np.abs(y_panels - ry).max() < TOL_F32
    assert np.abs(y_panels - rows(x)).max() < 1e-6


@pytest.mark.parametrize("batch", [2, 5, 64, 300])
def test_batches_agree(batch):
    """Small batches (own GEMM), the fused batch path and BLAS (over 256
    rows), with masks."""
    rng = np.random.default_rng(batch)
    rows, panels = pair(rng, 48, 160)
    x = rng.normal(0, 1, (batch, 12, 48)).astype(np.float32)
    mask = rng.random((batch, 12)) < 0.8
    assert np.abs(panels(x, mask=mask) - rows(x, mask=mask)).max() < 1e-6


def test_two_threads_agree():
    """Batch 1 on 2 threads: each thread's columns straddle panels."""
    rng = np.random.default_rng(7)
    w = random_weights(rng, 64, 272)  # 4H = 1088: threads split 136 units
    x = rng.normal(0, 1, (1, 300, 64)).astype(np.float32)
    one = with_layout(fastlstm.LSTM(**w, return_sequences=True, threads=1), "rows")
    two = with_layout(fastlstm.LSTM(**w, return_sequences=True, threads=2), "panels")
    assert np.abs(two(x) - one(x)).max() < 1e-6


def test_stream_steps_agree():
    """A stream, one step per call (the fused [x; h] product over panels),
    against the rows and against the whole sequence at once."""
    rng = np.random.default_rng(11)
    rows, panels = pair(rng, 64, 256)
    x = rng.normal(0, 1, (1, 200, 64)).astype(np.float32)
    outs = []
    for layer in (rows, panels):
        stream = layer.stream(1)
        outs.append(np.stack([stream.step(x[:, t]) for t in range(200)], axis=1))
    assert np.abs(outs[1] - outs[0]).max() < 1e-6
    assert np.abs(outs[1] - panels(x)).max() < 1e-6
