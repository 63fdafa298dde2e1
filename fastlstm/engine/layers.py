"""Runtime layers of a model graph, built from canonical layer specs.

Each runtime layer takes its input arrays and their masks and returns its
outputs and their masks: Masking and Embedding(mask_zero) make a mask,
Dense/Activation/Identity pass it on, a recurrent layer passes it on only
with return_sequences, merges AND their inputs' masks, reshaping layers
drop it. Recurrent layers run on the C core; the rest are NumPy in float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm.activations import numpy_activation
from fastlstm.engine.gru_rnn import GRU, SimpleRNN
from fastlstm.engine.lstm import LSTM, prepare
from fastlstm.engine.recurrent import Bidirectional, Direction, state_count
from fastlstm.errors import ModelFormatError, ShapeError
from fastlstm.model_spec import (
    ActivationSpec,
    BidirectionalSpec,
    DenseSpec,
    LayerSpec,
    RecurrentSpec,
)
from fastlstm.spec import GRUSpec, LSTMSpec, SimpleRNNSpec, check_elements

__all__ = ["Layer", "RunContext"]

Mask = Any  # np.ndarray of bool, or None


@dataclasses.dataclass
class RunContext:
    """One call's state: where recurrent layers keep state across calls,
    and what the caller gives every recurrent layer (sequence lengths,
    initial states by layer name, [h0, c0, h1, c1, ...])."""

    carries: dict  # layer name -> Carry, for stateful layers and streams
    lengths: Any = None
    initial_states: dict = dataclasses.field(default_factory=dict)
    # what the caller calls lengths and initial states (error messages)
    lengths_name: str = "lengths"
    state_name: str | None = None
    input_names: dict = dataclasses.field(default_factory=dict)  # by input layer
    budget: Any = None  # the ByteBudget array ops charge their results to


class Layer:
    """Base of runtime layers. ``call`` returns (outputs, output masks)."""

    streams = True  # can run a sequence piece by piece
    # takes its inputs' own masks even in graphs whose masks are explicit
    # (Keras 3 applies them to Attention without recording them)
    reads_input_masks = False

    def __init__(self, spec: LayerSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.class_name = spec.class_name

    def call(self, inputs: list, masks: list, node: Any, ctx: RunContext) -> tuple:
        raise NotImplementedError

    # Array ops (ONNX nodes) neither read nor make masks: they define
    # arrays(inputs, ctx) -> outputs, which the graph calls directly.
    arrays: Any = None

    def param_count(self) -> int:
        return self.spec.param_count()

    def carry_names(self) -> list[str]:
        """Names under which this layer keeps state between calls."""
        return []

    def __repr__(self) -> str:
        return f"<{self.class_name} {self.name!r}>"


def _first_mask(masks: list) -> Mask:
    return masks[0] if masks else None


class InputLayer(Layer):
    def call(self, inputs, masks, node, ctx):
        return inputs, [None] * len(inputs)


class Identity(Layer):
    def call(self, inputs, masks, node, ctx):
        return [inputs[0]], [_first_mask(masks)]


class Masking(Layer):
    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0], np.float32)
        mask = np.any(x != self.spec.mask_value, axis=-1)
        if self.spec.keep_nan:
            with np.errstate(invalid="ignore"):
                y = x * mask[..., None].astype(np.float32)
        else:
            y = np.where(mask[..., None], x, np.float32(0))
        return [y.astype(np.float32, copy=False)], [mask]


class Dense(Layer):
    def __init__(self, spec: DenseSpec) -> None:
        super().__init__(spec)
        self.kernel, self.bias = spec.kernel, spec.bias
        self.activation = numpy_activation(spec.activation)

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


class Activation(Layer):
    def __init__(self, spec: ActivationSpec) -> None:
        super().__init__(spec)
        self.fn = numpy_activation(spec.activation, spec.axis)

    def call(self, inputs, masks, node, ctx):
        return [self.fn(np.asarray(inputs[0], np.float32))], [_first_mask(masks)]


class Embedding(Layer):
    def call(self, inputs, masks, node, ctx):
        ids = np.asarray(inputs[0])
        if ids.dtype.kind not in "fiub":
            raise ShapeError(
                f"layer {self.name!r}: input has dtype {ids.dtype}, expected numbers"
            )
        if ids.dtype.kind == "f" and not np.isfinite(ids).all():
            raise ShapeError(f"layer {self.name!r}: token ids contain NaN or inf")
        ids = ids.astype(np.int64)
        table = self.spec.table
        n = table.shape[0]
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            raise ShapeError(
                f"layer {self.name!r}: token id {int(ids[bad].flat[0])} is outside "
                f"[0, {n - 1}] (input_dim={n})"
            )
        mask = ids != 0 if self.spec.mask_zero else None
        return [table[ids]], [mask]


class Reshape(Layer):
    """Flatten and Reshape: no mask comes out."""

    streams = False

    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0], np.float32)
        target = self.spec.target_shape
        try:
            y = (
                x.reshape(x.shape[0], -1)
                if target is None
                else x.reshape((x.shape[0], *target))
            )
        except ValueError as exc:
            raise ShapeError(
                f"layer {self.name!r} ({self.class_name}): {exc}"
            ) from None
        return [np.ascontiguousarray(y)], [None]


class Repeat(Layer):
    streams = False

    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0], np.float32)
        n = self.spec.n
        if x.ndim != 2:
            raise ShapeError(
                f"layer {self.name!r} ({self.class_name}) takes (batch, features), "
                f"got {x.shape}"
            )
        check_elements((x.shape[0], n, *x.shape[1:]), f"{self.name!r} output")
        return [np.repeat(x[:, None, :], n, axis=1)], [None]


_MERGES: dict[str, Callable[[list], np.ndarray]] = {
    "add": lambda xs: np.sum(xs, axis=0),
    "subtract": lambda xs: xs[0] - xs[1],
    "multiply": lambda xs: np.prod(xs, axis=0),
    "average": lambda xs: np.mean(xs, axis=0),
    "maximum": lambda xs: np.max(xs, axis=0),
    "minimum": lambda xs: np.min(xs, axis=0),
}


class Merge(Layer):
    def call(self, inputs, masks, node, ctx):
        xs = [np.asarray(x, np.float32) for x in inputs]
        op = self.spec.op
        try:
            if op == "concat":
                y = np.concatenate(xs, axis=self.spec.axis)
            else:
                y = _MERGES[op](xs)
        except ValueError as exc:
            raise ShapeError(
                f"layer {self.name!r} ({self.class_name}): {exc}"
            ) from None
        present = [m for m in masks if m is not None]
        mask = np.logical_and.reduce(present) if present else None
        return [y.astype(np.float32, copy=False)], [mask]


class MaskOp(Layer):
    def call(self, inputs, masks, node, ctx):
        a = np.asarray(inputs[0])
        other = inputs[1] if len(inputs) > 1 else node.constant
        op, axis, keep = self.spec.op, self.spec.axis, self.spec.keepdims
        if op in ("not_equal", "equal", "and", "or") and other is None:
            raise ModelFormatError(
                f"op {self.name!r} ({self.class_name}) has no second operand"
            )
        if op == "not_equal":
            y = a != other
        elif op == "equal":
            y = a == other
        elif op == "any":
            y = np.any(a, axis=axis, keepdims=keep)
        elif op == "all":
            y = np.all(a, axis=axis, keepdims=keep)
        elif op == "and":
            y = np.logical_and(a, other)
        elif op == "or":
            y = np.logical_or(a, other)
        elif op == "identity":
            y = a
        else:
            y = np.logical_not(a)
        return [y], [None]


# --- recurrent layers -------------------------------------------------------------

# The engine layer of each cell spec.
CELL_LAYERS: dict[type, Any] = {LSTMSpec: LSTM, GRUSpec: GRU, SimpleRNNSpec: SimpleRNN}


def direction(
    spec: RecurrentSpec, nan_policy: str = "raise", threads: int | None = None
) -> Direction:
    """The engine's Direction for a RecurrentSpec."""
    cells = [
        CELL_LAYERS[type(c)].from_spec(
            c, time_major=spec.time_major, nan_policy=nan_policy, threads=threads
        )
        for c in spec.cells
    ]
    return Direction(cells, return_sequences=spec.return_sequences)


def _sequence(
    layer: Layer,
    x: Any,
    mask: Mask,
    ctx: RunContext,
    node: Any,
    input_size: int,
    tm: bool,
):
    xs, B, T = _inputs.sequence_input(x, input_size, tm, f"input of {layer.name!r}")
    mask = None if mask is None else np.asarray(mask, bool)
    p = prepare(xs, B, T, tm, mask, ctx.lengths, ctx.lengths_name)
    source = node.inputs[0].layer if node.inputs else None
    p.name = ctx.input_names.get(source) or f"the input of layer {layer.name!r}"
    return p


def _state_name(layer: Layer, ctx: RunContext) -> str:
    return ctx.state_name or f"initial state of {layer.name!r}"


def _initial_state(layer: Layer, inputs: list, ctx: RunContext) -> list | None:
    """Initial states from the graph (after x), else from the caller."""
    return list(inputs[1:]) or ctx.initial_states.get(layer.name)


class Recurrent(Layer):
    """A RecurrentSpec: one direction of one or more cells."""

    def __init__(
        self, spec: RecurrentSpec, nan_policy: str = "raise", threads: int | None = None
    ) -> None:
        super().__init__(spec)
        self.direction = direction(spec, nan_policy, threads)
        self.streams = not spec.go_backwards

    def carry_names(self) -> list[str]:
        return [self.name] if self.spec.stateful else []

    def call(self, inputs, masks, node, ctx):
        spec = self.spec
        mask = _first_mask(masks)
        init = _initial_state(self, inputs, ctx)
        n = state_count(self.direction.cells)
        if init and len(init) != n:
            raise ShapeError(
                f"layer {self.name!r} takes {n} initial state arrays, got {len(init)}"
            )
        p = _sequence(
            self, inputs[0], mask, ctx, node, spec.input_size, spec.time_major
        )
        y, states = self.direction.run(
            p,
            init or None,
            spec.return_sequences,
            ctx.carries.get(self.name),
            _state_name(self, ctx),
        )
        out_mask = mask if spec.return_sequences else None
        if spec.return_state:
            return [y, *states], [out_mask] + [None] * len(states)
        return [y], [out_mask]


class BidirectionalLayer(Layer):
    streams = False

    def __init__(
        self,
        spec: BidirectionalSpec,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> None:
        super().__init__(spec)
        self.engine = Bidirectional(
            direction(spec.forward, nan_policy, threads),
            direction(spec.backward, nan_policy, threads),
            spec.merge_mode,
        )

    def carry_names(self) -> list[str]:
        if not self.spec.forward.stateful:
            return []
        return [self.spec.forward.name, self.spec.backward.name]

    def call(self, inputs, masks, node, ctx):
        fw = self.spec.forward
        mask = _first_mask(masks)
        init = _initial_state(self, inputs, ctx)
        p = _sequence(self, inputs[0], mask, ctx, node, fw.input_size, fw.time_major)
        carries = (
            ctx.carries.get(self.spec.forward.name),
            ctx.carries.get(self.spec.backward.name),
        )
        out, states = self.engine.run(
            p,
            init or None,
            fw.return_sequences,
            carries,
            _state_name(self, ctx),
        )
        out_mask = mask if fw.return_sequences else None
        masks_out = [out_mask] * len(out)
        if fw.return_state:
            out += states
            masks_out += [None] * len(states)
        return out, masks_out
