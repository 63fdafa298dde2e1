"""The canonical weight spec every loader converts into.

One LSTM layer (one direction) is described by ``LSTMSpec`` in Keras' layout:

* ``kernel`` (I, 4H), ``recurrent_kernel`` (R, 4H), ``bias`` (4H,): column
  blocks in gate order **i, f, g, o** (input, forget, cell candidate, output),
  the order Keras and PyTorch both use. ``z = x @ kernel + h @ recurrent_kernel
  + bias``. R = P with a projection, else H.
* ``peepholes`` (3, H): rows w_i, w_f, w_o (TF1 / Keras PeepholeLSTMCell).
* ``projection`` (H, P): ``h = m @ projection`` (TF1 num_proj, torch proj_size).

Arrays are stored as read-only float32 C-contiguous copies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fastlstm.activations import Activation, parse_activation
from fastlstm.errors import ConfigError, DTypeError, NonFiniteError, ShapeError

__all__ = ["LSTMSpec", "as_float32_array", "real_array"]

I, F, G, O = range(4)  # canonical gate blocks

# Largest accepted size of one dimension (FL_MAX_DIM in fastlstm.h).
MAX_DIM = 1 << 24
# Largest array (elements) fastlstm accepts or allocates: 16 GiB of float32.
MAX_ELEMENTS = 1 << 32


def check_elements(shape: tuple, name: str) -> None:
    """ShapeError if an array of this shape would be absurdly large."""
    n = 1
    for d in shape:
        n *= int(d)
    if n > MAX_ELEMENTS:
        raise ShapeError(
            f"{name} of shape {tuple(shape)} has {n} elements ({n * 4 / 2**30:.0f} GiB "
            f"as float32), above the limit of {MAX_ELEMENTS}"
        )


def real_array(value: Any, name: str) -> np.ndarray:
    """``value`` as an array of a real numeric dtype, not yet converted (so
    its shape can be checked before a copy is made); refuses bool, complex,
    strings and objects with a DTypeError naming ``name``."""
    if (
        not isinstance(value, np.ndarray)
        and hasattr(value, "detach")
        and hasattr(value, "numpy")
    ):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and other oddities
        raise DTypeError(f"{name} cannot be read as an array: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise DTypeError(
            f"{name} has dtype {arr.dtype}; a real floating or integer array "
            "is required"
        )
    check_elements(arr.shape, name)
    return arr


def as_float32_array(value: Any, name: str) -> np.ndarray:
    """Converts real numeric array-likes to float32; refuses bool, complex,
    strings and objects with a DTypeError naming ``name``."""
    return real_array(value, name).astype(np.float32, copy=False)


def _frozen(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    out.setflags(write=False)
    return out


def _check_clip(value: float | None, name: str, problems: list[str]) -> None:
    if value is None:
        return
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        problems.append(f"{name} must be a positive number or None, got {value!r}")
        return
    if not (np.isfinite(v) and v > 0):
        problems.append(f"{name} must be a positive finite number, got {v}")
        return
    with np.errstate(over="ignore", under="ignore"):
        v32 = np.float32(v)
    if not (np.isfinite(v32) and v32 > 0):
        problems.append(f"{name}={v} is not representable as a positive float32")


@dataclasses.dataclass(frozen=True)
class LSTMSpec:
    """Weights and options of one LSTM layer in the canonical layout."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None = None
    peepholes: np.ndarray | None = None
    projection: np.ndarray | None = None
    activation: Activation = Activation.TANH
    recurrent_activation: Activation = Activation.SIGMOID
    cell_clip: float | None = None
    proj_clip: float | None = None
    go_backwards: bool = False
    return_sequences: bool = False
    return_state: bool = False
    zero_output_for_mask: bool = False

    @property
    def input_size(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def units(self) -> int:
        return int(self.kernel.shape[1] // 4)

    @property
    def proj_size(self) -> int:
        return 0 if self.projection is None else int(self.projection.shape[1])

    @property
    def output_size(self) -> int:
        """Width of h and of the outputs: P with a projection, else H."""
        return self.proj_size or self.units

    @classmethod
    def create(
        cls,
        kernel: Any,
        recurrent_kernel: Any,
        bias: Any = None,
        *,
        peepholes: Any = None,
        projection: Any = None,
        activation: str | Activation = "tanh",
        recurrent_activation: str | Activation = "sigmoid",
        cell_clip: float | None = None,
        proj_clip: float | None = None,
        go_backwards: bool = False,
        return_sequences: bool = False,
        return_state: bool = False,
        zero_output_for_mask: bool = False,
    ) -> LSTMSpec:
        """Validates and normalizes; raises one ShapeError listing every shape
        problem, NonFiniteError for NaN/inf weights, ConfigError for options.
        Shapes are checked before any conversion, so a huge broadcast view
        fails without being copied."""
        act = parse_activation(activation, "activation")
        ract = parse_activation(recurrent_activation, "recurrent_activation")
        arrays = {
            "kernel": real_array(kernel, "kernel"),
            "recurrent_kernel": real_array(recurrent_kernel, "recurrent_kernel"),
        }
        for name, value in (
            ("bias", bias),
            ("peepholes", peepholes),
            ("projection", projection),
        ):
            if value is not None:
                arrays[name] = real_array(value, name)

        problems: list[str] = []
        k = arrays["kernel"]
        if k.ndim != 2 or k.shape[1] % 4 or k.shape[0] < 1 or k.shape[1] < 4:
            problems.append(
                f"kernel must have shape (input_size, 4*units) with both >= 1, "
                f"got {k.shape}"
            )
            units = None
        else:
            units = k.shape[1] // 4
        proj = arrays.get("projection")
        if proj is not None and (proj.ndim != 2 or min(proj.shape, default=0) < 1):
            problems.append(
                f"projection must have shape (units, proj_size), got {proj.shape}"
            )
            proj = None
        if proj is not None and proj.shape[1] > MAX_DIM:
            problems.append(
                f"projection shape {proj.shape} exceeds the size "
                f"limit of {MAX_DIM} per dimension"
            )
        if units is not None:
            if units > MAX_DIM or k.shape[0] > MAX_DIM:
                problems.append(
                    f"kernel shape {k.shape} exceeds the size limit "
                    f"of {MAX_DIM} per dimension"
                )
            width = proj.shape[1] if proj is not None else units
            expected = {
                "recurrent_kernel": (width, 4 * units),
                "bias": (4 * units,),
                "peepholes": (3, units),
                "projection": (units, width),
            }
            if proj is None:  # absent, or malformed and already reported
                del expected["projection"]
            for name, shape in expected.items():
                arr = arrays.get(name)
                if arr is not None and arr.shape != shape:
                    what = (
                        " (rows = proj_size)"
                        if name == "recurrent_kernel" and proj is not None
                        else ""
                    )
                    problems.append(
                        f"{name} must have shape {shape}{what} for "
                        f"kernel {k.shape}, got {arr.shape}"
                    )
        if problems:
            raise ShapeError("invalid LSTM weights:\n  - " + "\n  - ".join(problems))
        options: list[str] = []
        _check_clip(cell_clip, "cell_clip", options)
        _check_clip(proj_clip, "proj_clip", options)
        if proj_clip is not None and proj is None:
            options.append("proj_clip is set but there is no projection")
        if options:
            raise ConfigError("invalid LSTM options:\n  - " + "\n  - ".join(options))

        arrays = {
            name: arr.astype(np.float32, copy=False) for name, arr in arrays.items()
        }
        for name, arr in arrays.items():
            bad = ~np.isfinite(arr)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise NonFiniteError(
                    f"{name} holds {int(bad.sum())} NaN/inf value(s), first at "
                    f"index {where}"
                )
        for name, flag in (
            ("go_backwards", go_backwards),
            ("return_sequences", return_sequences),
            ("return_state", return_state),
            ("zero_output_for_mask", zero_output_for_mask),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise ConfigError(f"{name} must be a bool, got {flag!r}")

        return cls(
            kernel=_frozen(arrays["kernel"]),
            recurrent_kernel=_frozen(arrays["recurrent_kernel"]),
            bias=_frozen(arrays["bias"]) if "bias" in arrays else None,
            peepholes=_frozen(arrays["peepholes"]) if "peepholes" in arrays else None,
            projection=_frozen(arrays["projection"])
            if "projection" in arrays
            else None,
            activation=act,
            recurrent_activation=ract,
            cell_clip=None if cell_clip is None else float(cell_clip),
            proj_clip=None if proj_clip is None else float(proj_clip),
            go_backwards=bool(go_backwards),
            return_sequences=bool(return_sequences),
            return_state=bool(return_state),
            zero_output_for_mask=bool(zero_output_for_mask),
        )
