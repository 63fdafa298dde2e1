"""What every array op of an ``OpSpec`` node checks of its arguments, and
how it charges its result to the call's byte budget (engine/ops.py and
engine/ops_compute.py share these)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastlstm._budget import ByteBudget
from fastlstm.errors import ModelFormatError, ShapeError
from fastlstm.model_spec import OpSpec

__all__ = ["need", "arg", "ints", "axis_of", "charge"]


def need(x: Any, node: OpSpec, k: int) -> np.ndarray:
    """Input ``k`` (given as ``x``) as an array; ModelFormatError if absent."""
    if type(x) is np.ndarray:
        return x
    if x is None:
        raise ModelFormatError(f"{node.describe()}: input {k} is missing")
    return np.asarray(x)


def arg(ins: list, node: OpSpec, k: int = 0) -> np.ndarray:
    """Input ``k`` of the list ``ins``, which must be there (see need)."""
    return need(ins[k] if k < len(ins) else None, node, k)


def ints(x: Any, node: OpSpec, k: int) -> list[int]:
    arr = need(x, node, k)
    if arr.dtype.kind not in "iu":
        raise ModelFormatError(f"{node.describe()}: input {k} must hold integers")
    return [int(v) for v in arr.reshape(-1).tolist()]


def axis_of(axis: int, ndim: int, node: OpSpec) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{node.describe()}: axis {axis} out of range for rank {ndim}")
    return axis % ndim


def charge(shape: tuple, itemsize: int, node: OpSpec, budget: ByteBudget) -> None:
    """Charges a result of ``shape`` to ``budget`` before it is allocated."""
    n = 1
    for d in shape:
        if d < 0:
            raise ShapeError(f"{node.describe()}: negative dimension in {shape}")
        n *= int(d)
    if not budget.fits(n * itemsize):
        budget.spend(n * itemsize, f"{node.describe()}'s result of shape {shape}")
