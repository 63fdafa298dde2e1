"""Checks and conversions of call arguments, with messages that name the
argument. Everything the C core receives has passed through here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from fastlstm.errors import ConfigError, DTypeError, NonFiniteError, ShapeError
from fastlstm.spec import MAX_DIM, real_array

NAN_POLICIES = ("raise", "propagate")
F = TypeVar("F", bound=Callable[..., Any])


def reports_memory(what: str) -> Callable[[F], F]:
    """A public method whose MemoryError (sizes the caller asked for that
    do not fit) comes out as a ShapeError saying what and how large (NumPy's
    message gives the size and shape)."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except MemoryError as exc:
                raise ShapeError(
                    f"not enough memory for {what}: {exc or 'allocation failed'}"
                ) from None

        return run  # type: ignore[return-value]

    return wrap


def check_nan_policy(nan_policy: str) -> str:
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(
            f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}"
        )
    return nan_policy


def is_count(value: Any, high: int) -> bool:
    """Whether ``value`` is an integer (a NumPy one too, never a bool) in
    [1, high]."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, np.integer))
        and 1 <= value <= high
    )


def batch_size_input(value: Any, name: str = "batch_size") -> int:
    """A batch size (or another count): an integer in [1, MAX_DIM] (bools
    refused)."""
    if not is_count(value, MAX_DIM):
        raise ShapeError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def sequence_input(
    x: Any, input_size: int, time_major: bool, name: str = "x"
) -> tuple[np.ndarray, int, int]:
    """x as float32 C-contiguous (3-D, layout unchanged); returns (x, B, T).
    The shape is checked before x is converted or copied."""
    arr = real_array(x, name)
    layout = "(time, batch, features)" if time_major else "(batch, time, features)"
    if arr.ndim != 3:
        raise ShapeError(f"{name} must be 3-D {layout}, got shape {arr.shape}")
    T, B = (arr.shape[0], arr.shape[1]) if time_major else (arr.shape[1], arr.shape[0])
    if arr.shape[2] != input_size:
        raise ShapeError(
            f"{name} has {arr.shape[2]} features per step but the layer expects "
            f"{input_size}: shape {arr.shape}, expected {layout} with "
            f"features={input_size}"
        )
    if B == 0:
        raise ShapeError(f"{name} has batch size 0: shape {arr.shape}")
    if T == 0:
        raise ShapeError(f"{name} has 0 time steps: shape {arr.shape}")
    if B > MAX_DIM or T > MAX_DIM:
        raise ShapeError(f"{name} shape {arr.shape} exceeds {MAX_DIM} per dimension")
    return np.ascontiguousarray(arr, dtype=np.float32), B, T


def step_input(x: Any, input_size: int, batch: int, name: str = "x") -> np.ndarray:
    """One time step (batch, features) as float32 C-contiguous."""
    arr = real_array(x, name)
    if arr.ndim != 2 or arr.shape != (batch, input_size):
        raise ShapeError(
            f"{name} must have shape (batch, features) = ({batch}, {input_size}), "
            f"got {arr.shape}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def mask_input(mask: Any, shape: tuple[int, int], time_major: bool) -> np.ndarray:
    """A (batch, time) mask (or (time, batch) when time_major) as uint8."""
    arr = np.asarray(mask)
    if arr.dtype.kind not in "biu":
        raise DTypeError(
            f"mask must be boolean (or 0/1 integers), got dtype {arr.dtype}"
        )
    if len(shape) == 1:
        layout = "(batch,)"
    else:
        layout = "(time, batch)" if time_major else "(batch, time)"
    if arr.shape != shape:
        raise ShapeError(f"mask must have shape {layout} = {shape}, got {arr.shape}")
    return np.ascontiguousarray(arr != 0, dtype=np.uint8)


def lengths_input(
    lengths: Any, batch: int, steps: int, name: str = "lengths"
) -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.shape != (batch,):
        raise ShapeError(
            f"{name} must have shape (batch,) = ({batch},), got {arr.shape}"
        )
    bad = np.flatnonzero((arr < 0) | (arr > steps))
    if bad.size:
        i = int(bad[0])
        raise ShapeError(
            f"{name}[{i}] = {int(arr[i])} is outside [0, {steps}] "
            f"(the input has {steps} time steps)"
        )
    return np.ascontiguousarray(arr, dtype=np.int32)


def state_input(
    value: Any, batch: int, width: int, name: str, nan_policy: str
) -> np.ndarray:
    """A fresh float32 (batch, width) copy of a state array."""
    arr = real_array(value, name)
    if arr.shape != (batch, width):
        raise ShapeError(
            f"{name} must have shape (batch, {width}) = ({batch}, {width}), "
            f"got {arr.shape}"
        )
    arr = np.array(arr, dtype=np.float32, order="C", copy=True)
    if nan_policy == "raise" and not np.isfinite(arr).all():
        raise NonFiniteError(f"{name} contains NaN or inf")
    return arr


def pair_input(initial_state: Any, name: str = "initial_state") -> tuple[Any, Any]:
    """(h, c) from a tuple/list of two arrays."""
    if not is_sequence(initial_state, 2):
        raise ShapeError(f"{name} must be a pair (h, c) of arrays")
    return initial_state[0], initial_state[1]


def is_sequence(value: Any, length: int) -> bool:
    """True for a list/tuple-like (not an ndarray, string or mapping) of
    ``length`` items."""
    return (
        not isinstance(value, (np.ndarray, str, bytes, Mapping))
        and hasattr(value, "__len__")
        and hasattr(value, "__getitem__")
        and len(value) == length
    )


def raise_nonfinite(
    x: np.ndarray, valid: np.ndarray | None, time_major: bool, name: str = "x"
) -> None:
    """Raises NonFiniteError naming the first bad (batch, time) position."""
    bad = ~np.isfinite(x).all(axis=-1)
    if valid is not None:
        bad &= valid
    pos = np.argwhere(bad)
    t, b = (pos[0] if time_major else pos[0][::-1]) if pos.size else (-1, -1)
    raise NonFiniteError(
        f"{name} contains NaN or inf at batch row {int(b)}, time step {int(t)} "
        "(nan_policy='raise'; masked steps are not checked; "
        "nan_policy='propagate' skips the check)"
    )
