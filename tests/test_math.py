"""The kernel's own exp/sigmoid/tanh against double-precision libm over a
dense grid (the bounds stated in src_c/fl_math.h), plus NaN/inf handling and
every other activation against its float64 definition."""

from __future__ import annotations

import numpy as np
import pytest

from fastlstm import _core
from fastlstm import _reference as ref
from fastlstm.activations import Activation

TINY = np.finfo(np.float32).tiny


def kernel(act: Activation, x: np.ndarray) -> np.ndarray:
    out = np.array(x, dtype=np.float32, copy=True)
    _core._test_activation(int(act), out)
    return out


def grid() -> np.ndarray:
    dense = np.linspace(-120, 120, 2_000_001, dtype=np.float64)
    near0 = np.concatenate(
        [np.geomspace(1e-30, 1, 20001), -np.geomspace(1e-30, 1, 20001)]
    )
    edges = np.array(
        [
            0.0,
            -0.0,
            0.625,
            -0.625,
            88.72283935546875,
            -103.97208404541016,
            88.7228,
            -87.33654,
            9.0,
            -9.0,
            15.9,
            16.0,
            17.0,
        ]
    )
    x = np.concatenate([dense, near0, edges]).astype(np.float32)
    return np.concatenate(
        [x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))]
    )


def errors(got: np.ndarray, want: np.ndarray, floor: float) -> tuple[float, float]:
    """(max relative error where |want| >= floor, max absolute error elsewhere)."""
    big = np.abs(want) >= floor
    rel = np.abs(got[big] - want[big]) / np.abs(want[big])
    ab = np.abs(got[~big] - want[~big])
    return float(rel.max(initial=0)), float(ab.max(initial=0))


def test_sigmoid_error_bound():
    x = grid()
    want = 0.5 * (1 + np.tanh(0.5 * x.astype(np.float64)))
    rel, ab = errors(kernel(Activation.SIGMOID, x), want, 1e-3)
    assert rel < 2.5e-7, rel  # src_c/fl_math.h states the measured 1.8e-7
    assert ab < 1e-7, ab


def test_tanh_error_bound():
    x = grid()
    want = np.tanh(x.astype(np.float64))
    rel, ab = errors(kernel(Activation.TANH, x), want, 1e-3)
    assert rel < 2.5e-7, rel
    assert ab < 1e-7, ab
    # relative precision holds far below 1e-3 too (odd polynomial near 0)
    small = (np.abs(want) > 1e-30) & (np.abs(want) < 1e-3)
    got = kernel(Activation.TANH, x)
    assert (np.abs(got[small] - want[small]) / np.abs(want[small])).max() < 2.5e-7


def test_exp_error_bound():
    x = grid()
    x = x[x < 88.72]
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64))
    got = kernel(Activation.EXPONENTIAL, x)
    rel, ab = errors(got, want, TINY)  # relative over the normal range
    assert rel < 2.5e-7, rel
    assert ab < 2 * 1.5e-45  # denormal range: within one denormal step


@pytest.mark.parametrize("act", list(Activation))
def test_nan_propagates_and_infinities_saturate(act):
    x = np.array([np.nan, np.inf, -np.inf], np.float32)
    got = kernel(act, x)
    assert np.isnan(got[0]), f"{act.name} must propagate NaN"
    with np.errstate(all="ignore"):
        want = ref.activation(act.name.lower(), x.astype(np.float64)[1:])
    np.testing.assert_array_equal(got[1:], want.astype(np.float32))


def test_exp_overflow_and_underflow_edges():
    got = kernel(
        Activation.EXPONENTIAL,
        np.array([88.7228, 88.73, 200.0, -104.0, -200.0], np.float32),
    )
    assert np.isfinite(got[0]) and got[0] > 3.4e38
    assert np.isinf(got[1]) and np.isinf(got[2])
    assert got[3] == 0.0 and got[4] == 0.0


@pytest.mark.parametrize("act", list(Activation))
def test_every_activation_matches_its_definition(act):
    x = np.linspace(-30, 30, 100_001).astype(np.float32)
    if act == Activation.EXPONENTIAL:
        x = x[x < 80]
    want = ref.activation(act.name.lower(), x.astype(np.float64))
    got = kernel(act, x)
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    assert err.max() < 3e-7, (act.name, float(err.max()))
