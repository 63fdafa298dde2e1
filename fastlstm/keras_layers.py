"""Runtime layers of whole Keras models, built from LayerSpecs.

Each runtime layer takes its input arrays and their Keras masks and returns
its outputs and their masks, propagating masks as Keras does: Masking and
Embedding(mask_zero) make one, Dense/TimeDistributed/Activation/Dropout pass
it on, a recurrent layer passes it on only with return_sequences, merges AND
the masks of their inputs, reshaping layers drop it.

Recurrent layers run on the C core (fastlstm.LSTM); the rest are NumPy in
float32, as Keras computes them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special

from fastlstm import _inputs
from fastlstm.activations import Activation, parse_activation
from fastlstm.errors import (
    ConfigError,
    FastLSTMError,
    ModelFormatError,
    ShapeError,
    UnsupportedLayerError,
)
from fastlstm.lstm import LSTM, _prepare
from fastlstm.spec import MAX_DIM, LayerSpec, LSTMSpec, check_elements

Mask = Any  # np.ndarray of bool, or None


# --- which Keras produced the file ------------------------------------------


@dataclasses.dataclass(frozen=True)
class KerasFlavor:
    """Semantics that depend on the Keras version that wrote the file."""

    version: str
    major: int
    # tf.keras (TF 2.x) and Keras 3 set zero_output_for_mask = return_sequences
    # on both halves of a Bidirectional; standalone Keras 1/2.0-2.3 did not.
    bidirectional_zeroes_masked: bool
    # tf.keras Masking outputs x * mask (NaN stays NaN); Keras 3 where(mask, x, 0)
    masking_uses_where: bool

    @property
    def hard_sigmoid(self) -> Activation:
        return (
            Activation.HARD_SIGMOID_K3
            if self.major >= 3
            else Activation.HARD_SIGMOID_K2
        )

    @classmethod
    def from_version(cls, version: str | None, source: str = "") -> KerasFlavor:
        v = (version or "1").strip()
        m = re.match(r"^(\d+)(?:\.(\d+))?", v)
        if not m or int(m.group(1)) not in (1, 2, 3):
            raise ModelFormatError(
                f"{source}: unknown keras_version {version!r}; fastlstm reads files "
                "written by Keras 1.x, 2.x (incl. tf.keras) and 3.x"
            )
        major, minor = int(m.group(1)), int(m.group(2) or 0)
        tf_keras = major == 3 or "tf" in v or (major == 2 and minor >= 4)
        return cls(
            version=v,
            major=major,
            bidirectional_zeroes_masked=tf_keras,
            masking_uses_where=major >= 3,
        )


# --- activations of non-recurrent layers --------------------------------------


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_ELEMENTWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: (
        1.0507009873554805
        * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0.0)))
    ),
    "exponential": np.exp,
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0))),
    "log_softmax": lambda x: x - special.logsumexp(x, axis=-1, keepdims=True),
    "softmax": _softmax,
}


def activation_name(value: Any, where: str) -> str:
    """The name of a Keras activation given as a string, None (linear) or a
    serialized dict (``{"class_name": ..., "config": {"name": ...}}``)."""
    if isinstance(value, dict):
        config = value.get("config")
        inner = config.get("name") if isinstance(config, dict) else None
        value = inner if inner is not None else value.get("class_name")
    if value is None:
        return "linear"
    if not isinstance(value, str):
        raise UnsupportedLayerError(
            f"{where}: activation {str(value)[:100]!r} is not a name or a "
            "serialized activation"
        )
    return value


def dense_activation(name: Any, flavor: KerasFlavor, where: str) -> Callable:
    """A float32 -> float32 function for a Keras activation name."""
    name = activation_name(name, where)
    key = name.lower()
    if key == "hard_sigmoid":
        k3 = flavor.hard_sigmoid == Activation.HARD_SIGMOID_K3

        def fn(x):
            y = x / 6.0 + 0.5 if k3 else 0.2 * x + 0.5
            return np.clip(y, 0.0, 1.0)
    elif key in _ELEMENTWISE:
        fn = _ELEMENTWISE[key]
    else:
        raise UnsupportedLayerError(
            f"{where}: activation {name!r} is not supported; supported: "
            + ", ".join(sorted([*_ELEMENTWISE, "hard_sigmoid"]))
        )

    def apply(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.asarray(fn(x.astype(np.float64)), dtype=np.float32)

    return apply


def recurrent_activation(name: Any, flavor: KerasFlavor, where: str) -> Activation:
    name = activation_name(name, where)
    if name.lower() == "hard_sigmoid":
        return flavor.hard_sigmoid
    try:
        return parse_activation(name or "linear", where)
    except ConfigError as exc:
        raise UnsupportedLayerError(str(exc)) from None


# --- runtime layers -----------------------------------------------------------


class Layer:
    """Base of runtime layers. ``call`` returns (outputs, output masks)."""

    supports_streaming = True

    def __init__(self, spec: LayerSpec) -> None:
        self.name = spec.name
        self.class_name = spec.class_name
        self.weights: list[np.ndarray] = []

    def call(self, inputs: list, masks: list, node: Any, ctx: RunContext) -> tuple:
        raise NotImplementedError

    def param_count(self) -> int:
        return int(sum(w.size for w in self.weights))

    def __repr__(self) -> str:
        return f"<{self.class_name} {self.name!r}>"


@dataclasses.dataclass
class Carry:
    """Recurrent state kept between calls (stateful layers, streams)."""

    states: list  # per core LSTM: [h, c, seen]


@dataclasses.dataclass
class RunContext:
    """Per-call options: where recurrent layers keep state across calls."""

    carries: dict  # layer name -> Carry, for stateful layers and streams


def _as_array(x: Any, where: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise ShapeError(f"{where}: input has dtype {arr.dtype}, expected numbers")
    return arr


def _first_mask(masks: list) -> Mask:
    return masks[0] if masks else None


class InputLayer(Layer):
    def call(self, inputs, masks, node, ctx):
        return inputs, [None] * len(inputs)


class Identity(Layer):
    """Dropout and noise layers: identity at inference."""

    def call(self, inputs, masks, node, ctx):
        return [inputs[0]], [_first_mask(masks)]


class Masking(Layer):
    def __init__(self, spec: LayerSpec, flavor: KerasFlavor) -> None:
        super().__init__(spec)
        self.mask_value = float(spec.config.get("mask_value", 0.0))
        self.use_where = flavor.masking_uses_where

    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0], np.float32)
        mask = np.any(x != self.mask_value, axis=-1)
        if self.use_where:
            y = np.where(mask[..., None], x, np.float32(0))
        else:
            with np.errstate(invalid="ignore"):
                y = x * mask[..., None].astype(np.float32)
        return [y.astype(np.float32, copy=False)], [mask]


class Dense(Layer):
    def __init__(self, spec: LayerSpec, flavor: KerasFlavor, weights: list) -> None:
        super().__init__(spec)
        cfg = spec.config
        use_bias = cfg.get("use_bias", cfg.get("bias", True))
        expected = 2 if use_bias else 1
        if len(weights) != expected:
            raise ModelFormatError(
                f"layer {self.name!r} ({self.class_name}): expected {expected} weight "
                f"arrays (kernel{', bias' if use_bias else ''}), found {len(weights)}"
            )
        self.kernel = np.ascontiguousarray(weights[0], np.float32)
        self.bias = np.ascontiguousarray(weights[1], np.float32) if use_bias else None
        if self.kernel.ndim != 2 or (
            self.bias is not None and self.bias.shape != (self.kernel.shape[1],)
        ):
            raise ModelFormatError(
                f"layer {self.name!r}: kernel {self.kernel.shape} and bias "
                f"{None if self.bias is None else self.bias.shape} do not fit"
            )
        units = cfg.get("units", cfg.get("output_dim"))
        if units is not None and int(units) != self.kernel.shape[1]:
            raise ModelFormatError(
                f"layer {self.name!r}: config says {units} units but the kernel is "
                f"{self.kernel.shape}"
            )
        _check_finite(self.name, [self.kernel] + ([self.bias] if use_bias else []))
        self.activation = dense_activation(
            cfg.get("activation"), flavor, f"layer {self.name!r}"
        )
        self.weights = [self.kernel] + ([self.bias] if use_bias else [])

    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0], np.float32)
        if x.shape[-1] != self.kernel.shape[0]:
            raise ShapeError(
                f"layer {self.name!r} expects {self.kernel.shape[0]} features, got "
                f"input of shape {x.shape}"
            )
        y = x @ self.kernel
        if self.bias is not None:
            y += self.bias
        return [self.activation(y)], [_first_mask(masks)]


class ActivationLayer(Layer):
    def __init__(self, spec: LayerSpec, flavor: KerasFlavor) -> None:
        super().__init__(spec)
        cfg = spec.config
        if spec.class_name == "Softmax":
            axis = cfg.get("axis", -1)
            self.fn = lambda x: _softmax(x.astype(np.float64), axis).astype(np.float32)
        else:
            self.fn = dense_activation(
                cfg.get("activation"), flavor, f"layer {self.name!r}"
            )

    def call(self, inputs, masks, node, ctx):
        return [self.fn(np.asarray(inputs[0], np.float32))], [_first_mask(masks)]


class Embedding(Layer):
    def __init__(self, spec: LayerSpec, weights: list) -> None:
        super().__init__(spec)
        if len(weights) != 1 or np.ndim(weights[0]) != 2:
            raise ModelFormatError(
                f"layer {self.name!r} (Embedding): expected one "
                f"(input_dim, output_dim) array, found {[np.shape(w) for w in weights]}"
            )
        self.table = np.ascontiguousarray(weights[0], np.float32)
        _check_finite(self.name, [self.table])
        self.mask_zero = bool(spec.config.get("mask_zero", False))
        self.weights = [self.table]

    def call(self, inputs, masks, node, ctx):
        ids = _as_array(inputs[0], f"layer {self.name!r}")
        if ids.dtype.kind == "f":
            if not np.isfinite(ids).all():
                raise ShapeError(f"layer {self.name!r}: token ids contain NaN or inf")
        ids = ids.astype(np.int64)
        n = self.table.shape[0]
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            raise ShapeError(
                f"layer {self.name!r}: token id {int(ids[bad].flat[0])} is outside "
                f"[0, {n - 1}] (input_dim={n})"
            )
        mask = ids != 0 if self.mask_zero else None
        return [self.table[ids]], [mask]


class Reshaping(Layer):
    """Flatten, Reshape, RepeatVector: no mask comes out."""

    supports_streaming = False

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        cfg = spec.config
        if spec.class_name == "Flatten":
            self.fn = lambda x: x.reshape(x.shape[0], -1)
        elif spec.class_name == "Reshape":
            target = tuple(int(d) for d in cfg["target_shape"])
            self.fn = lambda x: x.reshape((x.shape[0], *target))
        else:  # RepeatVector
            n = cfg.get("n")
            if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= MAX_DIM:
                raise ModelFormatError(
                    f"layer {self.name!r} (RepeatVector): n={str(n)[:40]} is not a "
                    f"count from 1 to {MAX_DIM}"
                )

            def repeat(x: np.ndarray) -> np.ndarray:
                check_elements((x.shape[0], n, *x.shape[1:]), f"{self.name!r} output")
                return np.repeat(x[:, None, :], n, axis=1)

            self.fn = repeat

    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0], np.float32)
        try:
            return [np.ascontiguousarray(self.fn(x))], [None]
        except ValueError as exc:
            raise ShapeError(
                f"layer {self.name!r} ({self.class_name}): {exc}"
            ) from None


class Merge(Layer):
    """Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.axis = int(spec.config.get("axis", -1))

    def call(self, inputs, masks, node, ctx):
        xs = [np.asarray(x, np.float32) for x in inputs]
        kind = self.class_name
        try:
            if kind == "Concatenate":
                y = np.concatenate(xs, axis=self.axis)
            elif kind == "Add":
                y = np.sum(xs, axis=0)
            elif kind == "Subtract":
                y = xs[0] - xs[1]
            elif kind == "Multiply":
                y = np.prod(xs, axis=0)
            elif kind == "Average":
                y = np.mean(xs, axis=0)
            elif kind == "Maximum":
                y = np.max(xs, axis=0)
            else:
                y = np.min(xs, axis=0)
        except ValueError as exc:
            raise ShapeError(f"layer {self.name!r} ({kind}): {exc}") from None
        present = [m for m in masks if m is not None]
        mask = np.logical_and.reduce(present) if present else None
        return [y.astype(np.float32, copy=False)], [mask]


class Op(Layer):
    """Keras 3 records the mask computations of its functional graphs as
    NumPy-like op nodes (Masking: ``any(x != v, axis=-1)``; Embedding:
    ``ids != 0``) whose result is passed as a layer's ``mask`` argument."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.axis = spec.config.get("axis")
        self.keepdims = bool(spec.config.get("keepdims", False))

    def call(self, inputs, masks, node, ctx):
        a = np.asarray(inputs[0])
        other = inputs[1] if len(inputs) > 1 else node.constant
        kind = self.class_name
        if kind in ("NotEqual", "Equal") and other is None:
            raise ModelFormatError(f"op {self.name!r} ({kind}) has no second operand")
        if kind == "NotEqual":
            y = a != other
        elif kind == "Equal":
            y = a == other
        elif kind == "Any":
            y = np.any(a, axis=self.axis, keepdims=self.keepdims)
        elif kind == "All":
            y = np.all(a, axis=self.axis, keepdims=self.keepdims)
        elif kind == "LogicalAnd":
            y = np.logical_and(a, other)
        elif kind == "LogicalOr":
            y = np.logical_or(a, other)
        else:  # LogicalNot
            y = np.logical_not(a)
        return [y], [None]


# --- recurrent layers -----------------------------------------------------------


def _check_finite(name: str, arrays: list) -> None:
    for a in arrays:
        if not np.isfinite(a).all():
            raise ModelFormatError(f"layer {name!r}: weights contain NaN or inf")


def lstm_weights(cfg: dict, weights: list, class_name: str, where: str) -> dict:
    """Canonical kernel / recurrent_kernel / bias from a Keras layer's arrays."""
    units = int(cfg.get("units", cfg.get("output_dim", 0)) or 0)
    ws = [np.asarray(w, np.float32) for w in weights]
    if (
        len(ws) == 12
    ):  # Keras 1: [W_i, U_i, b_i, W_c, U_c, b_c, W_f, U_f, b_f, W_o, ...]
        return {
            "kernel": np.concatenate([ws[0], ws[6], ws[3], ws[9]], axis=1),
            "recurrent_kernel": np.concatenate([ws[1], ws[7], ws[4], ws[10]], axis=1),
            "bias": np.concatenate([ws[2], ws[8], ws[5], ws[11]]),
        }
    if len(ws) not in (2, 3):
        raise ModelFormatError(
            f"{where}: an LSTM needs 2 or 3 weight arrays (kernel, recurrent_kernel, "
            f"bias) or Keras 1's 12, found {len(ws)}"
        )
    kernel, rec = ws[0], ws[1]
    bias = ws[2] if len(ws) == 3 else None
    H = units or (kernel.shape[1] // 4 if kernel.ndim == 2 else 0)
    cudnn = class_name == "CuDNNLSTM" or (bias is not None and bias.shape == (8 * H,))
    if cudnn and kernel.ndim == 2 and rec.ndim == 2:
        # cuDNN reads each stored (I, H) gate block as a row-major (H, I) matrix
        I = kernel.shape[0]
        kernel = np.concatenate([k.reshape(H, I).T for k in np.split(kernel, 4, 1)], 1)
        rec = np.concatenate([k.T for k in np.split(rec, 4, 1)], 1)
        if bias is not None:
            bias = bias[: 4 * H] + bias[4 * H :]
    out = {"kernel": kernel, "recurrent_kernel": rec}
    if bias is not None:
        out["bias"] = bias
    return out


class Recurrent(Layer):
    """LSTM, CuDNNLSTM and RNN over LSTM/peephole cells (stacked or not)."""

    def __init__(
        self,
        spec: LayerSpec,
        flavor: KerasFlavor,
        weights: list,
        cfg: dict | None = None,
        zero_output: bool | None = None,
    ) -> None:
        super().__init__(spec)
        cfg = dict(spec.config if cfg is None else cfg)
        where = f"layer {self.name!r} ({spec.class_name})"
        cells = _cell_configs(cfg, spec.class_name, where)
        self.return_sequences = bool(cfg.get("return_sequences", False))
        self.return_state = bool(cfg.get("return_state", False))
        self.go_backwards = bool(cfg.get("go_backwards", False))
        self.stateful = bool(cfg.get("stateful", False))
        self.time_major = bool(cfg.get("time_major", False))
        zero = (
            bool(cfg.get("zero_output_for_mask", False))
            if zero_output is None
            else zero_output
        )
        self.cores: list[LSTM] = []
        offset = 0
        for k, (cell_class, ccfg) in enumerate(cells):
            n = _cell_weight_count(cell_class, ccfg, len(weights) - offset, len(cells))
            cw = weights[offset : offset + n]
            offset += n
            self.cores.append(
                _core_layer(
                    ccfg,
                    cell_class,
                    cw,
                    flavor,
                    f"{where} cell {k}" if len(cells) > 1 else where,
                    zero,
                    self.time_major,
                    # a single cell runs backwards itself; stacked cells get a
                    # reversed input instead (see run)
                    go_backwards=self.go_backwards and len(cells) == 1,
                )
            )
            self.weights.extend(np.asarray(w) for w in cw)
        if offset != len(weights):
            raise ModelFormatError(
                f"{where}: {len(weights)} weight arrays, expected {offset}"
            )
        for a, b in zip(self.cores, self.cores[1:]):
            if b.input_size != a.output_size:
                raise ModelFormatError(
                    f"{where}: stacked cells do not fit "
                    f"({a.output_size} -> {b.input_size})"
                )
        self.supports_streaming = not self.go_backwards

    @property
    def input_size(self) -> int:
        return self.cores[0].input_size

    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0])
        mask = _first_mask(masks)
        init = list(inputs[1:])  # the model passes initial states after x
        carry = ctx.carries.get(self.name)
        y, states = self.run(x, mask, init, carry)
        out_mask = mask if self.return_sequences else None
        if self.return_state:
            return [y, *states], [out_mask] + [None] * len(states)
        return [y], [out_mask]

    def run(
        self, x: np.ndarray, mask: Mask, init: list, carry: Carry | None
    ) -> tuple[np.ndarray, list]:
        tm = self.time_major
        xs, B, T = _inputs.sequence_input(
            x, self.input_size, tm, f"input of {self.name!r}"
        )
        if mask is not None:
            mask = np.asarray(mask, bool)
        if self.go_backwards and len(self.cores) > 1:
            # reverse once and run every stacked cell forward: processing order
            axis = 0 if tm else 1
            xs = np.ascontiguousarray(np.flip(xs, axis))
            mask = None if mask is None else np.flip(mask, axis)
        if init and len(init) != 2 * len(self.cores):
            raise ShapeError(
                f"layer {self.name!r} takes {2 * len(self.cores)} initial "
                f"state arrays, got {len(init)}"
            )
        if carry is not None and carry.states and carry.states[0][0].shape[0] != B:
            raise ShapeError(
                f"stateful layer {self.name!r} holds state for batch size "
                f"{carry.states[0][0].shape[0]}, got {B}; call reset_states() first"
            )
        states: list = []
        y = xs
        for k, core in enumerate(self.cores):
            last = k == len(self.cores) - 1
            p = _prepare(np.ascontiguousarray(y, np.float32), B, T, tm, mask, None)
            seen = None
            if init:
                h, c = core._initial_state(
                    init[2 * k : 2 * k + 2], B, f"initial state of {self.name!r}"
                )
            elif carry is not None and len(carry.states) > k:
                h, c, seen = (a.copy() for a in carry.states[k])
            else:
                h, c = core._initial_state(None, B)
            if seen is None and carry is not None:
                seen = np.zeros(B, np.uint8)
            seq, lst = core._run(
                p, h, c, (not last) or self.return_sequences, seen=seen
            )
            y = seq if seq is not None else lst
            states += [h, c]
            if carry is not None:
                if len(carry.states) <= k:
                    carry.states.append([h.copy(), c.copy(), seen])
                else:
                    carry.states[k] = [h.copy(), c.copy(), seen]
        return y, states


def _cell_configs(cfg: dict, class_name: str, where: str) -> list[tuple[str, dict]]:
    if class_name != "RNN":
        return [(class_name, cfg)]
    cell = cfg.get("cell")
    if isinstance(cell, list):
        entries = cell
    elif isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells":
        entries = cell["config"]["cells"]
    elif isinstance(cell, dict):
        entries = [cell]
    else:
        raise ModelFormatError(f"{where}: RNN config has no cell")
    out = []
    for e in entries:
        cname = e.get("class_name")
        if cname not in ("LSTMCell", "PeepholeLSTMCell"):
            raise UnsupportedLayerError(
                f"{where}: RNN cell class {cname!r} is not supported (LSTMCell, "
                "PeepholeLSTMCell, or a list of them)"
            )
        out.append((cname, e.get("config", {})))
    return out


def _cell_weight_count(cell_class: str, cfg: dict, available: int, n_cells: int) -> int:
    if n_cells == 1:
        return available
    count = 3 if cfg.get("use_bias", True) else 2
    return count + (3 if cell_class == "PeepholeLSTMCell" else 0)


def _core_layer(
    cfg: dict,
    class_name: str,
    weights: list,
    flavor: KerasFlavor,
    where: str,
    zero_output: bool,
    time_major: bool,
    go_backwards: bool = False,
) -> LSTM:
    peepholes = None
    weights = list(weights)
    if class_name == "PeepholeLSTMCell":
        if len(weights) < 3:
            raise ModelFormatError(
                f"{where}: PeepholeLSTMCell needs its 3 peephole weight arrays"
            )
        peepholes = np.stack([np.asarray(w, np.float32) for w in weights[-3:]])
        weights = weights[:-3]
    canonical = lstm_weights(cfg, weights, class_name, where)
    if class_name == "CuDNNLSTM":
        act, ract = Activation.TANH, Activation.SIGMOID
    else:
        act_name = cfg.get("activation", "tanh")
        ract_name = cfg.get(
            "recurrent_activation", cfg.get("inner_activation", "sigmoid")
        )
        act = recurrent_activation(act_name, flavor, f"{where} activation")
        ract = recurrent_activation(ract_name, flavor, f"{where} recurrent_activation")
    units = cfg.get("units", cfg.get("output_dim"))
    if (
        units is not None
        and canonical["kernel"].ndim == 2
        and canonical["kernel"].shape[1] != 4 * int(units)
    ):
        raise ModelFormatError(
            f"{where}: config says {units} units but the kernel has shape "
            f"{canonical['kernel'].shape}"
        )
    try:
        spec = LSTMSpec.create(
            **canonical,
            peepholes=peepholes,
            activation=act,
            recurrent_activation=ract,
            zero_output_for_mask=zero_output,
            go_backwards=go_backwards,
        )
    except FastLSTMError as exc:
        raise ModelFormatError(f"{where}: {exc}") from None
    return LSTM.from_spec(spec, time_major=time_major)


class BidirectionalLayer(Layer):
    supports_streaming = False

    def __init__(self, spec: LayerSpec, flavor: KerasFlavor, weights: list) -> None:
        super().__init__(spec)
        cfg = spec.config
        where = f"layer {self.name!r} (Bidirectional)"
        inner = cfg.get("layer")
        if not isinstance(inner, dict):
            raise ModelFormatError(f"{where}: config has no wrapped layer")
        fcls, fcfg = inner.get("class_name"), dict(inner.get("config", {}))
        back = cfg.get("backward_layer")
        if isinstance(back, dict):
            bcls, bcfg = back.get("class_name"), dict(back.get("config", {}))
        else:
            bcls, bcfg = (
                fcls,
                {**fcfg, "go_backwards": not fcfg.get("go_backwards", False)},
            )
        for c in (fcls, bcls):
            if c not in RECURRENT_CLASSES:
                raise UnsupportedLayerError(
                    f"{where}: wraps a {c}; supported: {', '.join(RECURRENT_CLASSES)}"
                )
        self.merge_mode = cfg.get("merge_mode", "concat")
        if self.merge_mode not in ("concat", "sum", "mul", "ave", None):
            raise UnsupportedLayerError(f"{where}: merge_mode {self.merge_mode!r}")
        seq = bool(fcfg.get("return_sequences", False))
        zero = seq if flavor.bidirectional_zeroes_masked else None
        half = len(weights) // 2
        fspec = LayerSpec(f"forward_{self.name}", fcls, fcfg)
        bspec = LayerSpec(f"backward_{self.name}", bcls, bcfg)
        self.forward = Recurrent(fspec, flavor, weights[:half], fcfg, zero)
        self.backward = Recurrent(bspec, flavor, weights[half:], bcfg, zero)
        if self.forward.go_backwards == self.backward.go_backwards:
            raise ModelFormatError(f"{where}: both halves run in the same direction")
        self.return_sequences = seq
        self.return_state = bool(fcfg.get("return_state", False))
        self.stateful = self.forward.stateful
        self.weights = self.forward.weights + self.backward.weights

    def call(self, inputs, masks, node, ctx):
        x = inputs[0]
        mask = _first_mask(masks)
        init = list(inputs[1:])
        fi, bi = (init[: len(init) // 2], init[len(init) // 2 :]) if init else ([], [])
        yf, sf = self.forward.run(x, mask, fi, ctx.carries.get(self.forward.name))
        yb, sb = self.backward.run(x, mask, bi, ctx.carries.get(self.backward.name))
        if self.return_sequences:
            yb = np.flip(yb, 0 if self.forward.time_major else 1)
        mode = self.merge_mode
        if mode == "concat":
            out = [np.concatenate([yf, yb], -1)]
        elif mode == "sum":
            out = [yf + yb]
        elif mode == "mul":
            out = [yf * yb]
        elif mode == "ave":
            out = [(yf + yb) * np.float32(0.5)]
        else:
            out = [yf, np.ascontiguousarray(yb)]
        out_mask = mask if self.return_sequences else None
        masks_out = [out_mask] * len(out)
        if self.return_state:
            out += sf + sb
            masks_out += [None] * (len(sf) + len(sb))
        return out, masks_out


class TimeDistributedDense(Dense):
    """TimeDistributed(Dense): a Dense on the last axis, mask passed on."""

    def __init__(self, spec: LayerSpec, flavor: KerasFlavor, weights: list) -> None:
        inner = spec.config.get("layer") or {}
        if inner.get("class_name") != "Dense":
            raise UnsupportedLayerError(
                f"layer {spec.name!r}: TimeDistributed({inner.get('class_name')}) "
                "is not supported; TimeDistributed(Dense) is"
            )
        super().__init__(
            LayerSpec(spec.name, spec.class_name, inner.get("config", {})),
            flavor,
            weights,
        )


RECURRENT_CLASSES = ("LSTM", "CuDNNLSTM", "RNN")
OP_CLASSES = (
    "NotEqual",
    "Equal",
    "Any",
    "All",
    "LogicalAnd",
    "LogicalOr",
    "LogicalNot",
)
IDENTITY_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)
MERGE_CLASSES = (
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
)

_BUILDERS: dict[str, Callable[[LayerSpec, KerasFlavor, list], Layer]] = {
    "InputLayer": lambda s, f, w: InputLayer(s),
    "Masking": lambda s, f, w: Masking(s, f),
    "Embedding": lambda s, f, w: Embedding(s, w),
    "Dense": lambda s, f, w: Dense(s, f, w),
    "TimeDistributed": lambda s, f, w: TimeDistributedDense(s, f, w),
    "TimeDistributedDense": lambda s, f, w: Dense(s, f, w),  # Keras 0.x/1.x
    "Activation": lambda s, f, w: ActivationLayer(s, f),
    "Softmax": lambda s, f, w: ActivationLayer(s, f),
    "Flatten": lambda s, f, w: Reshaping(s),
    "Reshape": lambda s, f, w: Reshaping(s),
    "RepeatVector": lambda s, f, w: Reshaping(s),
    "Bidirectional": lambda s, f, w: BidirectionalLayer(s, f, w),
    **{c: (lambda s, f, w: Op(s)) for c in OP_CLASSES},
    **{c: (lambda s, f, w: Recurrent(s, f, w)) for c in RECURRENT_CLASSES},
    **{c: (lambda s, f, w: Identity(s)) for c in IDENTITY_CLASSES},
    **{c: (lambda s, f, w: Merge(s)) for c in MERGE_CLASSES},
}

SUPPORTED_CLASSES = tuple(sorted(set(_BUILDERS) - set(OP_CLASSES)))


def build_layer(spec: LayerSpec, flavor: KerasFlavor) -> Layer:
    builder = _BUILDERS.get(spec.class_name)
    if builder is None:
        why = (
            " (Lambda layers hold Python code, which fastlstm never runs)"
            if spec.class_name == "Lambda"
            else ""
        )
        raise UnsupportedLayerError(
            f"layer {spec.name!r} of class {spec.class_name!r} is not supported{why}; "
            f"supported classes: {', '.join(SUPPORTED_CLASSES)}"
        )
    if spec.class_name not in WEIGHTED_CLASSES and spec.weights:
        raise ModelFormatError(
            f"layer {spec.name!r} ({spec.class_name}) has weights "
            "in the file but takes none"
        )
    if spec.class_name in WEIGHTED_CLASSES and not spec.weights:
        raise ModelFormatError(
            f"layer {spec.name!r} ({spec.class_name}): no weights "
            "found for it in the file"
        )
    try:
        return builder(spec, flavor, list(spec.weights))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FastLSTMError):
            raise
        raise ModelFormatError(
            f"layer {spec.name!r} ({spec.class_name}): invalid config or weights "
            f"({exc!r})"
        ) from None


WEIGHTED_CLASSES = (
    "Embedding",
    "Dense",
    "TimeDistributed",
    "TimeDistributedDense",
    "Bidirectional",
    *RECURRENT_CLASSES,
)
