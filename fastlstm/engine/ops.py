"""Array ops of ``OpSpec`` nodes (model_spec.ARRAY_OPS), with ONNX's
definitions: the shape and glue ops exporters write around recurrent
nodes, in NumPy (the compute ops are in ops_compute.py). Ops that
allocate (ConstantOfShape, Concat, Gather, Cast, Expand) charge their
results to a byte budget before allocating."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastlstm._budget import ByteBudget
from fastlstm.engine.layers import Layer, RunContext
from fastlstm.engine.op_args import axis_of, charge, ints, need
from fastlstm.engine.ops_compute import COMPUTE_OPS
from fastlstm.errors import ModelFormatError, ShapeError, UnsupportedLayerError
from fastlstm.model_spec import ConstantSpec, OpSpec

__all__ = ["OPS", "run_op", "op_budget", "OpLayer", "ConstantLayer"]

# Ops that allocate (ConstantOfShape, Concat, Gather, Cast) charge their
# results, in bytes and before allocating, to a budget of this many times
# the bytes they start from: the model's constants when folding at load,
# constants plus the caller's inputs for a run (ByteBudget adds 64 MiB).
OP_EXPANSION = 16

# TensorProto.DataType -> NumPy
ONNX_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}


def op_budget(where: str, arrays: Any, stored: int = 0) -> ByteBudget:
    """The budget of op results computed from ``arrays`` (and ``stored``
    more bytes counted before)."""
    stored += sum(int(np.asarray(a).nbytes) for a in arrays if a is not None)
    return ByteBudget(where, stored, OP_EXPANSION)


def _constant(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    a = node.attrs
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            v = a[key]
            if key in ("value_float", "value_floats"):
                return [np.asarray(v, np.float32)]
            if key in ("value_int", "value_ints"):
                return [np.asarray(v, np.int64)]
            return [np.asarray(v)]
    raise UnsupportedLayerError(
        f"{node.describe()}: only value / value_float(s) / value_int(s) constants "
        f"are supported, got attributes {sorted(a)}"
    )


def _constant_of_shape(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    shape = tuple(ints(ins[0], node, 0))
    value = node.attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if value.size != 1:
        raise ModelFormatError(f"{node.describe()}: value must hold one element")
    charge(shape, value.dtype.itemsize, node, budget)
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


def _shape(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    shape = np.asarray(need(ins[0], node, 0).shape, np.int64)
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return [shape[start:end]]


def _gather(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    data = need(ins[0], node, 0)
    idx = need(ins[1], node, 1)
    if idx.dtype.kind not in "iu":
        raise ModelFormatError(f"{node.describe()}: indices must be integers")
    axis = axis_of(node.attrs.get("axis", 0), data.ndim, node)
    n = data.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ShapeError(f"{node.describe()}: index out of range for size {n}")
    shape = data.shape[:axis] + idx.shape + data.shape[axis + 1 :]
    charge(shape, data.dtype.itemsize, node, budget)
    return [np.take(data, np.where(idx < 0, idx + n, idx), axis=axis)]


def _axes(node: OpSpec, ins: list, k: int) -> list[int] | None:
    if len(ins) > k and ins[k] is not None:
        return ints(ins[k], node, k)
    return node.attrs.get("axes")


def _unsqueeze(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = need(ins[0], node, 0)
    axes = _axes(node, ins, 1)
    if axes is None:
        raise ModelFormatError(f"{node.describe()}: no axes")
    ndim = x.ndim + len(axes)
    out = x
    for a in sorted(axis_of(a, ndim, node) for a in axes):
        out = np.expand_dims(out, a)
    return [out]


def _squeeze(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = need(ins[0], node, 0)
    axes = _axes(node, ins, 1)
    if axes is None:
        return [np.squeeze(x)]
    axes = tuple(axis_of(a, x.ndim, node) for a in axes)
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(
                f"{node.describe()}: cannot squeeze axis {a} of size {x.shape[a]}"
            )
    return [x.squeeze(axis=axes)]


def _concat(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    parts = [np.asarray(x) for x in ins if x is not None]
    if not parts:
        raise ModelFormatError(f"{node.describe()}: no inputs")
    axis = axis_of(node.attrs.get("axis", 0), parts[0].ndim, node)
    nbytes = sum(int(p.nbytes) for p in parts)
    if not budget.fits(nbytes):
        budget.spend(nbytes, f"{node.describe()}'s concatenation")
    try:
        return [np.concatenate(parts, axis=axis)]
    except ValueError as exc:
        raise ShapeError(f"{node.describe()}: {exc}") from None


def _slice(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = need(ins[0], node, 0)
    if len(ins) > 1:  # opset >= 10: starts, ends, axes, steps as inputs
        starts = ints(ins[1], node, 1)
        ends = ints(ins[2], node, 2)
        axes = _axes(node, ins, 3)
        steps = ints(ins[4], node, 4) if len(ins) > 4 and ins[4] is not None else None
    else:
        starts, ends = node.attrs.get("starts", []), node.attrs.get("ends", [])
        axes, steps = node.attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ModelFormatError(f"{node.describe()}: starts/ends/axes/steps differ")
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise ModelFormatError(f"{node.describe()}: step 0")
        # ONNX clamps out-of-range starts/ends (INT64_MAX sentinels included)
        # exactly as Python slicing does
        index[axis_of(a, x.ndim, node)] = slice(s, e, st)
    return [x[tuple(index)]]


def _transpose(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = need(ins[0], node, 0)
    perm = node.attrs.get("perm")
    if perm is None:
        return [x.transpose()]
    if len(perm) == x.ndim:
        try:
            return [x.transpose(perm)]
        except ValueError:  # a repeated or out-of-range axis
            pass
    raise ShapeError(f"{node.describe()}: perm {perm} for rank {x.ndim}")


def _reshape(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = need(ins[0], node, 0)
    if len(ins) > 1:
        shape = ints(ins[1], node, 1)
    else:
        shape = list(node.attrs.get("shape", []))
    allowzero = node.attrs.get("allowzero", 0)
    out = []
    for k, d in enumerate(shape):
        if d == 0 and not allowzero:
            if k >= x.ndim:
                raise ShapeError(f"{node.describe()}: 0 copies a missing dimension")
            d = x.shape[k]
        out.append(d)
    if out.count(-1) > 1:
        raise ShapeError(f"{node.describe()}: more than one -1 in {shape}")
    try:
        return [x.reshape(out)]
    except ValueError as exc:
        raise ShapeError(f"{node.describe()}: {exc}") from None


def _cast(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    to = node.attrs.get("to")
    if to not in ONNX_DTYPES:
        raise UnsupportedLayerError(f"{node.describe()}: Cast to type {to}")
    x = need(ins[0], node, 0)
    charge(x.shape, np.dtype(ONNX_DTYPES[to]).itemsize, node, budget)
    return [x.astype(ONNX_DTYPES[to])]


def _expand(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    """ONNX Expand: x broadcast with shape (both ways, as NumPy does)."""
    x = need(ins[0], node, 0)
    shape = tuple(ints(ins[1], node, 1))
    try:
        out = np.broadcast_shapes(x.shape, shape)
    except ValueError as exc:
        raise ShapeError(f"{node.describe()}: {exc}") from None
    charge(out, x.dtype.itemsize, node, budget)
    return [np.array(np.broadcast_to(x, out))]


def _identity(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    return [need(ins[0], node, 0)]


OPS = {
    **COMPUTE_OPS,
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Slice": _slice,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "Cast": _cast,
    "Expand": _expand,
    "Identity": _identity,
}


def run_op(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    """The outputs of an op node; what it allocates is charged to
    ``budget`` first (see op_budget). Overflow and division by zero give
    inf and NaN, as in ONNX Runtime, without NumPy's warnings (the graph
    sets that once per call for the ops it runs)."""
    with np.errstate(all="ignore"):
        return OPS[node.op](node, ins, budget)


class ConstantLayer(Layer):
    """A ConstantSpec: its value, every call."""

    def __init__(self, spec: ConstantSpec) -> None:
        super().__init__(spec)
        self.arrays = self._value

    def _value(self, inputs: list, ctx: RunContext) -> list:
        return [self.spec.value]

    def call(self, inputs: list, masks: list, node: Any, ctx: RunContext) -> tuple:
        return [self.spec.value], [None]


class OpLayer(Layer):
    """An OpSpec; its allocations are charged to the call's budget."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__(spec)
        self._fn = OPS[spec.op]
        self.arrays = self._outputs

    def _outputs(self, inputs: list, ctx: RunContext) -> list:
        budget = ctx.budget or op_budget(self.spec.describe(), inputs)
        return self._fn(self.spec, inputs, budget)

    def call(self, inputs: list, masks: list, node: Any, ctx: RunContext) -> tuple:
        with np.errstate(all="ignore"):
            outs = self._outputs(list(inputs), ctx)
        return outs, [None] * len(outs)
