"""The input projection on AMX tiles (three-way bfloat16 split, float32
sums): as accurate as the BLAS path, declined for values it cannot split,
and switchable off. Skipped where the CPU has no AMX-BF16."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import TOL_F32, long_run_on_and_off, random_weights

import fastlstm
from fastlstm import _core
from fastlstm import _reference as ref

pytestmark = pytest.mark.skipif(not _core.amx_available(), reason="no AMX-BF16 here")


def run(layer: fastlstm.LSTM, x: np.ndarray, amx: bool) -> np.ndarray:
    B, T, _ = x.shape
    h = np.zeros((B, layer.units), np.float32)
    c = np.zeros_like(h)
    y = np.empty((B, T, layer.units), np.float32)
    # woven=False: batch-1 runs would otherwise weave their projections
    # into the recurrent products (tests/test_woven.py) instead of AMX
    layer._packed.forward(x, True, h, c, y=y, amx=amx, woven=False, check_finite=False)
    return y


@pytest.mark.parametrize("I,H", [(128, 128), (256, 256), (48, 100)])
def test_long_run_on_amx_meets_1e5(I, H):
    """T=1000 at batch 1 (one 1000-row projection on AMX): within 1e-5 of
    float64 at every step, and within 2e-6 of the same run on BLAS."""
    y_amx, y_blas, ry = long_run_on_and_off(I, H, run)
    assert np.abs(y_amx - ry).max() < TOL_F32
    assert np.abs(y_amx - y_blas).max() < 2e-6
    assert not np.array_equal(y_amx, y_blas)  # the AMX path did run


def test_batches_on_amx_match_blas():
    """Batches that keep a separate input GEMM (peepholes) run it on AMX:
    same results as BLAS within 2e-6, and within 1e-5 of float64."""
    rng = np.random.default_rng(3)
    w = random_weights(rng, 64, 96, peepholes=True)
    x = rng.normal(0, 1, (8, 200, 64)).astype(np.float32)
    layer = fastlstm.LSTM(**w, return_sequences=True, threads=1)
    y_amx, y_blas = run(layer, x, True), run(layer, x, False)
    ry, _, _, _ = ref.lstm(
        x, w["kernel"], w["recurrent_kernel"], w["bias"], peepholes=w["peepholes"]
    )
    assert np.abs(y_amx - ry).max() < TOL_F32
    assert np.abs(y_amx - y_blas).max() < 2e-6


@pytest.mark.parametrize("bad", [np.nan, np.inf, 3e30])
def test_values_amx_cannot_split_go_to_blas(bad):
    """NaN, inf or |x| >= 2^100 anywhere in x: the whole projection runs
    on BLAS, bit for bit the amx=False result."""
    rng = np.random.default_rng(5)
    w = random_weights(rng, 64, 64)
    x = rng.normal(0, 1, (1, 300, 64)).astype(np.float32)
    x[0, 250, 3] = bad
    layer = fastlstm.LSTM(**w, return_sequences=True, threads=1)
    np.testing.assert_array_equal(run(layer, x, True), run(layer, x, False))


def test_environment_switch_keeps_blas(monkeypatch):
    """FASTLSTM_NO_AMX=1 makes layer calls bit-identical to amx=False."""
    rng = np.random.default_rng(6)
    w = random_weights(rng, 64, 128)
    x = rng.normal(0, 1, (1, 400, 64)).astype(np.float32)
    layer = fastlstm.LSTM(**w, return_sequences=True, threads=1)
    monkeypatch.setenv("FASTLSTM_NO_WOVEN", "1")  # AMX instead of the woven path
    monkeypatch.setenv("FASTLSTM_NO_AMX", "1")
    np.testing.assert_array_equal(layer(x), run(layer, x, False))
    monkeypatch.delenv("FASTLSTM_NO_AMX")
    assert not np.array_equal(layer(x), run(layer, x, False))


def test_workspace_makes_room_for_the_scratch():
    """A long call's workspace grows by the AMX scratch; a short one (fewer
    than 128 rows) and amx=False do not. woven=False: batch-1 runs would
    otherwise weave their projections instead of running them on AMX."""
    zeros = np.zeros((128, 512), np.float32)
    p = fastlstm.LSTM(zeros, zeros)._packed

    def size(steps: int, amx: bool) -> int:
        return p.workspace_size(1, steps, amx=amx, woven=False)

    scratch = 128 * 128 * 6  # at least the split of 128 rows of x
    assert size(1000, True) > size(1000, False) + scratch
    assert size(100, True) == size(100, False)
