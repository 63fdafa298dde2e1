"""Batch-1 runs on one thread with each 16-step chunk's input projection
woven into the previous chunk's recurrent products (src_c/fl_woven.c):
float32-accurate over long runs, the same as the BLAS path within rounding,
and switchable off. Skipped where the CPU has no AVX-512."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import TOL_F32, long_run_on_and_off, random_weights

import fastlstm
from fastlstm import _core
from fastlstm import _reference as ref

pytestmark = pytest.mark.skipif(
    not _core.woven_available(), reason="no AVX-512 here (or not a GCC build)"
)


def run(layer: fastlstm.LSTM, x: np.ndarray, woven: bool, **kw) -> np.ndarray:
    B, T, _ = x.shape
    h = np.zeros((B, layer.output_size), np.float32)
    c = np.zeros((B, layer.units), np.float32)
    y = np.empty((B, T, layer.output_size), np.float32)
    layer._packed.forward(
        x, True, h, c, y=y, woven=woven, amx=False, check_finite=False, **kw
    )
    return y


@pytest.mark.parametrize("I,H", [(128, 128), (256, 256), (48, 100), (512, 256)])
def test_long_run_meets_1e5(I, H):
    """T=1000 at batch 1: within 1e-5 of float64 at every step, and within
    2e-6 of the same run with its projection on BLAS."""
    y_woven, y_blas, ry = long_run_on_and_off(I, H, run)
    assert np.abs(y_woven - ry).max() < TOL_F32
    assert np.abs(y_woven - y_blas).max() < 2e-6


def test_plan_uses_two_chunks_of_gates():
    """The woven plan holds two 16-step chunks of gates, whatever chunk
    size was asked for; short runs, inputs wider than twice the units, and
    several threads keep the plain plan."""
    rng = np.random.default_rng(1)
    layer = fastlstm.LSTM(**random_weights(rng, 64, 128), threads=1)
    p = layer._packed
    woven = p.workspace_size(1, 1000, 400)
    plain = p.workspace_size(1, 1000, 400, woven=False)
    assert woven < plain - 4 * 512 * 300  # 32 rows of gates instead of 400
    assert p.workspace_size(1, 31, 31) == p.workspace_size(1, 31, 31, woven=False)
    wide = fastlstm.LSTM(**random_weights(rng, 300, 128))._packed
    assert wide.workspace_size(1, 1000, 400) == wide.workspace_size(
        1, 1000, 400, woven=False
    )
    assert p.workspace_size(1, 1000, 400, threads=2) == p.workspace_size(
        1, 1000, 400, threads=2, woven=False
    )


@pytest.mark.parametrize("T", [32, 47, 160, 333])
def test_masks_reverse_and_odd_lengths(T):
    """Masked steps, go_backwards and lengths that end mid-chunk: the same
    outputs as the plain path within rounding."""
    rng = np.random.default_rng(T)
    w = random_weights(rng, 40, 72, peepholes=True)
    x = rng.normal(0, 1, (1, T, 40)).astype(np.float32)
    mask = (rng.random((1, T)) < 0.8).astype(np.uint8)
    layer = fastlstm.LSTM(**w, return_sequences=True, threads=1)
    for reverse in (False, True):
        a = run(layer, x, True, mask=mask, reverse=reverse)
        b = run(layer, x, False, mask=mask, reverse=reverse)
        assert np.abs(a - b).max() < 2e-6


def test_projection_layer():
    """With a projection (recurrent width P) the woven path still matches
    float64 over T=1000."""
    rng = np.random.default_rng(9)
    w = random_weights(rng, 64, 96, P=48)
    x = rng.normal(0, 1, (1, 1000, 64)).astype(np.float32)
    layer = fastlstm.LSTM(**w, return_sequences=True, threads=1)
    y = run(layer, x, True)
    ry, _, _, _ = ref.lstm(
        x, w["kernel"], w["recurrent_kernel"], w["bias"], projection=w["projection"]
    )
    assert np.abs(y - ry).max() < TOL_F32
    assert np.abs(y - run(layer, x, False)).max() < 2e-6


def test_environment_switch(monkeypatch):
    """FASTLSTM_NO_WOVEN=1 makes layer calls bit-identical to
    woven=False (inputs wide enough that OpenBLAS and the tiles round
    differently, so the switch is seen)."""
    rng = np.random.default_rng(6)
    w = random_weights(rng, 512, 256)
    x = rng.normal(0, 1, (1, 200, 512)).astype(np.float32)
    layer = fastlstm.LSTM(**w, return_sequences=True, threads=1)
    assert not np.array_equal(run(layer, x, True), run(layer, x, False))
    monkeypatch.setenv("FASTLSTM_NO_AMX", "1")
    monkeypatch.setenv("FASTLSTM_NO_WOVEN", "1")
    np.testing.assert_array_equal(layer(x), run(layer, x, False))
    monkeypatch.delenv("FASTLSTM_NO_WOVEN")
    np.testing.assert_array_equal(layer(x), run(layer, x, True))
