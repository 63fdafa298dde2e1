"""The canonical weight spec every loader converts into.

One LSTM layer (one direction) is described by ``LSTMSpec`` in Keras' layout:

* ``kernel`` (I, 4H), ``recurrent_kernel`` (R, 4H), ``bias`` (4H,): column
  blocks in gate order **i, f, g, o** (input, forget, cell candidate, output),
  the order Keras and PyTorch both use. ``z = x @ kernel + h @ recurrent_kernel
  + bias``. R = P with a projection, else H.
* ``peepholes`` (3, H): rows w_i, w_f, w_o (TF1 / Keras PeepholeLSTMCell).
* ``projection`` (H, P): ``h = m @ projection`` (TF1 num_proj, torch proj_size).

``GRUSpec`` and ``SimpleRNNSpec`` describe the other recurrent cells the
same way (see their docstrings); ``CELL_SPECS`` lists the three.

Arrays are stored as read-only float32 C-contiguous copies.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from fastlstm.activations import Activation, parse_activation
from fastlstm.errors import ConfigError, DTypeError, NonFiniteError, ShapeError

__all__ = [
    "CELL_SPECS",
    "GRUSpec",
    "LSTMSpec",
    "SimpleRNNSpec",
    "as_float32_array",
    "real_array",
]

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


def _lstm_shape_problems(arrays: dict[str, np.ndarray]) -> list[str]:
    """Every shape problem of an LSTM's arrays (checked before any copy)."""
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
    return problems


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

    def param_count(self) -> int:
        arrays = (
            self.kernel,
            self.recurrent_kernel,
            self.bias,
            self.peepholes,
            self.projection,
        )
        return sum(int(a.size) for a in arrays if a is not None)

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

        problems = _lstm_shape_problems(arrays)
        proj = arrays.get("projection")
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
        _first_nonfinite(arrays)
        _check_flags(
            {
                "go_backwards": go_backwards,
                "return_sequences": return_sequences,
                "return_state": return_state,
                "zero_output_for_mask": zero_output_for_mask,
            }
        )

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


def _check_flags(flags: dict[str, Any]) -> None:
    for name, flag in flags.items():
        if not isinstance(flag, (bool, np.bool_)):
            raise ConfigError(f"{name} must be a bool, got {flag!r}")


def _first_nonfinite(arrays: dict[str, np.ndarray]) -> None:
    for name, arr in arrays.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise NonFiniteError(
                f"{name} holds {int(bad.sum())} NaN/inf value(s), first at "
                f"index {where}"
            )


def _gate_arrays(kind: str, G: int, values: dict[str, Any]) -> dict[str, np.ndarray]:
    """Checked, frozen float32 copies of a GRU's or simple RNN's arrays:
    kernel (I, G*H), recurrent_kernel (H, G*H), bias and recurrent_bias
    (G*H,); one ShapeError lists every shape problem, checked before any
    copy is made."""
    arrays = {n: real_array(v, n) for n, v in values.items() if v is not None}
    k = arrays["kernel"]
    problems: list[str] = []
    if k.ndim != 2 or k.shape[1] % G or min(k.shape, default=0) < 1:
        what = f"{G}*units" if G > 1 else "units"
        problems.append(
            f"kernel must have shape (input_size, {what}) with both >= 1, got {k.shape}"
        )
    elif max(k.shape[0], k.shape[1] // G) > MAX_DIM:
        problems.append(
            f"kernel shape {k.shape} exceeds the size limit of {MAX_DIM} per dimension"
        )
    else:
        H = k.shape[1] // G
        expected = {
            "recurrent_kernel": (H, G * H),
            "bias": (G * H,),
            "recurrent_bias": (G * H,),
        }
        for name, shape in expected.items():
            arr = arrays.get(name)
            if arr is not None and arr.shape != shape:
                problems.append(
                    f"{name} must have shape {shape} for kernel {k.shape}, "
                    f"got {arr.shape}"
                )
    if problems:
        raise ShapeError(f"invalid {kind} weights:\n  - " + "\n  - ".join(problems))
    arrays = {n: a.astype(np.float32, copy=False) for n, a in arrays.items()}
    _first_nonfinite(arrays)
    return {n: _frozen(a) for n, a in arrays.items()}


@dataclasses.dataclass(frozen=True)
class _HiddenStateSpec:
    """What GRUSpec and SimpleRNNSpec share: weights in the canonical
    layout (kernel (I, G*H), recurrent_kernel (H, G*H), bias and
    recurrent_bias (G*H,) or None) and the options of one direction. The
    state is h alone."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None = None
    recurrent_bias: np.ndarray | None = None
    activation: Activation = Activation.TANH
    go_backwards: bool = False
    return_sequences: bool = False
    return_state: bool = False
    zero_output_for_mask: bool = False

    gates: ClassVar[int] = 1
    kind: ClassVar[str] = ""

    @property
    def input_size(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def units(self) -> int:
        return int(self.kernel.shape[1] // self.gates)

    @property
    def output_size(self) -> int:
        return self.units

    def param_count(self) -> int:
        return sum(
            int(a.size)
            for a in (
                self.kernel,
                self.recurrent_kernel,
                self.bias,
                self.recurrent_bias,
            )
            if a is not None
        )

    @classmethod
    def _create(cls, values: dict[str, Any], flags: dict[str, Any], **options: Any):
        arrays = _gate_arrays(cls.kind, cls.gates, values)
        _check_flags(flags)
        return cls(**arrays, **{n: bool(v) for n, v in flags.items()}, **options)


@dataclasses.dataclass(frozen=True)
class GRUSpec(_HiddenStateSpec):
    """One GRU direction. Gate blocks in the order **z, r, n** (update,
    reset, candidate; Keras' and ONNX's order). With x_k = (x @ kernel +
    bias)_k and h_k = (h @ recurrent_kernel + recurrent_bias)_k:
    z = ract(x_z + h_z), r = ract(x_r + h_r), n = act(x_n + r * h_n) when
    ``reset_after`` (PyTorch, Keras reset_after=True, ONNX
    linear_before_reset=1), else n = act(x_n + (r * h) @ U_n + b_n);
    h' = z * h + (1 - z) * n."""

    recurrent_activation: Activation = Activation.SIGMOID
    reset_after: bool = True

    gates: ClassVar[int] = 3
    kind: ClassVar[str] = "GRU"

    @classmethod
    def create(
        cls,
        kernel: Any,
        recurrent_kernel: Any,
        bias: Any = None,
        recurrent_bias: Any = None,
        *,
        activation: str | Activation = "tanh",
        recurrent_activation: str | Activation = "sigmoid",
        reset_after: bool = True,
        go_backwards: bool = False,
        return_sequences: bool = False,
        return_state: bool = False,
        zero_output_for_mask: bool = False,
    ) -> GRUSpec:
        """Validates and normalizes (errors as LSTMSpec.create)."""
        act = parse_activation(activation, "activation")
        ract = parse_activation(recurrent_activation, "recurrent_activation")
        values = {
            "kernel": kernel,
            "recurrent_kernel": recurrent_kernel,
            "bias": bias,
            "recurrent_bias": recurrent_bias,
        }
        flags = {
            "reset_after": reset_after,
            "go_backwards": go_backwards,
            "return_sequences": return_sequences,
            "return_state": return_state,
            "zero_output_for_mask": zero_output_for_mask,
        }
        return cls._create(values, flags, activation=act, recurrent_activation=ract)


@dataclasses.dataclass(frozen=True)
class SimpleRNNSpec(_HiddenStateSpec):
    """One simple (Elman) RNN direction: h' = act(x @ kernel + bias +
    h @ recurrent_kernel + recurrent_bias) (Keras SimpleRNN, torch nn.RNN,
    ONNX RNN)."""

    gates: ClassVar[int] = 1
    kind: ClassVar[str] = "SimpleRNN"

    @classmethod
    def create(
        cls,
        kernel: Any,
        recurrent_kernel: Any,
        bias: Any = None,
        recurrent_bias: Any = None,
        *,
        activation: str | Activation = "tanh",
        go_backwards: bool = False,
        return_sequences: bool = False,
        return_state: bool = False,
        zero_output_for_mask: bool = False,
    ) -> SimpleRNNSpec:
        """Validates and normalizes (errors as LSTMSpec.create)."""
        act = parse_activation(activation, "activation")
        values = {
            "kernel": kernel,
            "recurrent_kernel": recurrent_kernel,
            "bias": bias,
            "recurrent_bias": recurrent_bias,
        }
        flags = {
            "go_backwards": go_backwards,
            "return_sequences": return_sequences,
            "return_state": return_state,
            "zero_output_for_mask": zero_output_for_mask,
        }
        return cls._create(values, flags, activation=act)


# Every kind of recurrent cell spec (one direction of one layer).
CELL_SPECS = (LSTMSpec, GRUSpec, SimpleRNNSpec)
