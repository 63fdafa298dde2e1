"""Compute ops of ``OpSpec`` nodes with ONNX's definitions, in NumPy: the
layers exporters write around recurrent nodes (Gemm and MatMul heads,
elementwise arithmetic and activations, reductions, normalizations, 1-D
convolutions, comparisons). Products go through NumPy's BLAS. Results of
ops that can grow past their inputs (Tile, Range) are charged to the call's
byte budget before they are allocated; the rest are at most the size of a
broadcast of their inputs, charged as well."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

from fastlstm._budget import ByteBudget
from fastlstm.activations import NUMPY_ACTIVATIONS, softmax
from fastlstm.engine.op_args import arg, axis_of, charge
from fastlstm.errors import ModelFormatError, ShapeError, UnsupportedLayerError
from fastlstm.model_spec import OpSpec

__all__ = ["COMPUTE_OPS"]

Op = Callable[[OpSpec, list, ByteBudget], list]


def _opt(ins: list, k: int) -> np.ndarray | None:
    return None if len(ins) <= k or ins[k] is None else np.asarray(ins[k])


def _broadcast_shape(node: OpSpec, shapes: list) -> tuple:
    """NumPy's broadcast of these shapes (a few dims: plain Python is
    faster than np.broadcast_shapes here); ShapeError if they do not."""
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        for k, d in enumerate(s, n - len(s)):
            if d != out[k] and out[k] != 1 and d != 1:
                raise ShapeError(
                    f"{node.describe()}: shapes {[tuple(x) for x in shapes]} do "
                    "not broadcast"
                )
            out[k] = d if out[k] == 1 else out[k]
    return tuple(out)


def _broadcast(node: OpSpec, budget: ByteBudget, *arrays: np.ndarray) -> None:
    """Charges a broadcast result of these inputs (ShapeError if they do
    not broadcast)."""
    a, b = arrays[0], arrays[-1]
    if len(arrays) == 2 and (b.shape == a.shape[a.ndim - b.ndim :] or b.size == 1):
        shape = a.shape if a.ndim >= b.ndim else b.shape  # b broadcasts onto a
    elif len(arrays) == 2 and a.shape == b.shape[b.ndim - a.ndim :]:
        shape = b.shape
    else:
        shape = _broadcast_shape(node, [a.shape for a in arrays])
    charge(shape, max(a.dtype.itemsize for a in arrays), node, budget)


# --- elementwise -----------------------------------------------------------------


def _int_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero (C's, ONNX Runtime's)."""
    q = np.floor_divide(a, b)
    return q + ((q < 0) & (q * b != a))


def _binary(fn: Callable) -> Op:
    def op(node: OpSpec, ins: list, budget: ByteBudget) -> list:
        a, b = arg(ins, node, 0), arg(ins, node, 1)
        _broadcast(node, budget, a, b)
        return [np.asarray(fn(a, b))]

    return op


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        if (b == 0).any():
            raise ShapeError("integer division by zero")
        return _int_divide(a, b)
    return np.divide(a, b)


def _unary(fn: Callable) -> Op:
    def op(node: OpSpec, ins: list, budget: ByteBudget) -> list:
        x = arg(ins, node)
        charge(x.shape, x.dtype.itemsize, node, budget)
        return [np.asarray(fn(x)).astype(x.dtype, copy=False)]

    return op


def _clip(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = arg(ins, node)
    lo, hi = _opt(ins, 1), _opt(ins, 2)
    lo = node.attrs.get("min") if lo is None else lo  # opset < 11
    hi = node.attrs.get("max") if hi is None else hi
    charge(x.shape, x.dtype.itemsize, node, budget)
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo, x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi, x.dtype))
    return [np.asarray(out, x.dtype)]


def _where(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    c, a, b = arg(ins, node, 0), arg(ins, node, 1), arg(ins, node, 2)
    _broadcast(node, budget, c, a, b)
    return [np.where(c.astype(bool), a, b)]


def _variadic(fn: Callable) -> Op:
    """Min, Max, Sum, Mean of any number of broadcast inputs."""

    def op(node: OpSpec, ins: list, budget: ByteBudget) -> list:
        xs = [np.asarray(v) for v in ins if v is not None]
        if not xs:
            raise ModelFormatError(f"{node.describe()}: no inputs")
        _broadcast(node, budget, *xs)
        return [np.asarray(fn(xs)).astype(xs[0].dtype, copy=False)]

    return op


# --- products ----------------------------------------------------------------------


def _matmul(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    a, b = arg(ins, node, 0), arg(ins, node, 1)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"{node.describe()}: MatMul of a scalar")
    if b.ndim <= 2 or a.shape[:-2] == b.shape[:-2]:  # no broadcast of b
        shape = a.shape[:-2] if a.ndim >= b.ndim else b.shape[:-2]
    else:
        shape = _broadcast_shape(node, [a.shape[:-2], b.shape[:-2]])
    rows = a.shape[-2] if a.ndim > 1 else 1
    cols = b.shape[-1] if b.ndim > 1 else 1
    charge((*shape, rows, cols), 4, node, budget)
    try:
        return [np.matmul(a, b)]
    except ValueError as exc:
        raise ShapeError(f"{node.describe()}: {exc}") from None


def _gemm(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    """Y = alpha * A' @ B' + beta * C (A, B 2-D; C broadcast)."""
    a, b, c = arg(ins, node, 0), arg(ins, node, 1), _opt(ins, 2)
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"{node.describe()}: Gemm needs 2-D A and B")
    at = node.attrs
    a = a.T if at.get("transA", 0) else a
    b = b.T if at.get("transB", 0) else b
    if a.shape[1] != b.shape[0]:
        raise ShapeError(f"{node.describe()}: A {a.shape} and B {b.shape} do not fit")
    charge((a.shape[0], b.shape[1]), 4, node, budget)
    alpha, beta = at.get("alpha", 1.0), at.get("beta", 1.0)
    y = a @ b
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if c is not None:
        _broadcast(node, budget, y, c)
        y = y + (c if beta == 1.0 else c * np.asarray(beta, c.dtype))
    return [y]


# --- shapes of data ------------------------------------------------------------------


def _flatten(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = arg(ins, node)
    axis = node.attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis <= x.ndim:
        raise ShapeError(f"{node.describe()}: axis {axis} for rank {x.ndim}")
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [x.reshape(lead, -1) if x.size else x.reshape(lead, 0)]


def _split(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = arg(ins, node)
    axis = axis_of(node.attrs.get("axis", 0), x.ndim, node)
    sizes = _opt(ins, 1)
    sizes = node.attrs.get("split") if sizes is None else sizes.tolist()
    n = x.shape[axis]
    if sizes is None:
        parts = node.attrs.get("num_outputs") or node.outputs
        step = -(-n // parts)
        sizes = [min(step, n - k * step) for k in range(parts)]
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ShapeError(f"{node.describe()}: split {sizes} of size {n}")
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _tile(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x, reps = arg(ins, node, 0), arg(ins, node, 1)
    reps = [int(r) for r in reps.reshape(-1)]
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise ShapeError(f"{node.describe()}: repeats {reps} for rank {x.ndim}")
    charge(tuple(d * r for d, r in zip(x.shape, reps)), x.dtype.itemsize, node, budget)
    return [np.tile(x, reps)]


def _range(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    start, limit, delta = (arg(ins, node, k).reshape(()) for k in range(3))
    if delta == 0:
        raise ShapeError(f"{node.describe()}: delta 0")
    n = max(int(np.ceil((limit - start) / delta)), 0)
    charge((n,), start.dtype.itemsize, node, budget)
    return [(start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)]


def _dropout(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x = arg(ins, node)  # inference: the identity, and an all-true mask
    return [x, np.ones(x.shape, bool)]


# --- reductions and normalizations ---------------------------------------------------


def _reduce(fn: Callable) -> Op:
    """ReduceX: axes as an attribute (older opsets) or as input 1 (newer);
    keepdims; noop_with_empty_axes."""

    def op(node: OpSpec, ins: list, budget: ByteBudget) -> list:
        x = arg(ins, node)
        axes = _opt(ins, 1)
        axes = node.attrs.get("axes") if axes is None else axes.reshape(-1).tolist()
        keep = bool(node.attrs.get("keepdims", 1))
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        axes = tuple(sorted({axis_of(a, x.ndim, node) for a in axes}))
        return [np.asarray(fn(x, axis=axes, keepdims=keep)).astype(x.dtype)]

    return op


def _softmax(log: bool) -> Op:
    def op(node: OpSpec, ins: list, budget: ByteBudget) -> list:
        x = arg(ins, node)
        charge(x.shape, x.dtype.itemsize, node, budget)
        opset = node.opset or 13
        axis = axis_of(node.attrs.get("axis", -1 if opset >= 13 else 1), x.ndim, node)
        if opset < 13:  # over the flattened dims from axis on
            shape = x.shape
            x = x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1)
            return [_softmax_values(x, 1, log).reshape(shape)]
        return [_softmax_values(x, axis, log)]

    return op


def _softmax_values(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    if not log:
        return softmax(x, axis)
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _batch_norm(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x, scale, bias, mean, var = (arg(ins, node, k) for k in range(5))
    if node.attrs.get("training_mode", 0):
        raise UnsupportedLayerError(f"{node.describe()}: training_mode=1")
    eps = node.attrs.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    charge(x.shape, x.dtype.itemsize, node, budget)
    inv = (scale / np.sqrt(var + np.asarray(eps, var.dtype))).reshape(shape)
    return [((x - mean.reshape(shape)) * inv + bias.reshape(shape)).astype(x.dtype)]


def _layer_norm(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    x, scale, bias = arg(ins, node, 0), arg(ins, node, 1), _opt(ins, 2)
    axis = axis_of(node.attrs.get("axis", -1), x.ndim, node)
    eps = node.attrs.get("epsilon", 1e-5)
    axes = tuple(range(axis, x.ndim))
    charge(x.shape, 8, node, budget)
    xd = x.astype(np.float64) if node.attrs.get("stash_type", 1) == 1 else x
    mean = xd.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(((xd - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    y = (xd - mean) * inv * scale
    if bias is not None:
        y = y + bias
    return [y.astype(x.dtype), mean.astype(x.dtype), inv.astype(x.dtype)]


def _conv(node: OpSpec, ins: list, budget: ByteBudget) -> list:
    """1-D Conv (N, C, L) with strides, dilations, pads, group, auto_pad."""
    x, w, b = arg(ins, node, 0), arg(ins, node, 1), _opt(ins, 2)
    if x.ndim != 3 or w.ndim != 3:
        raise UnsupportedLayerError(f"{node.describe()}: only 1-D Conv is supported")
    at = node.attrs
    group = at.get("group", 1)
    (stride,), (dil,) = at.get("strides", [1]), at.get("dilations", [1])
    N, C, L = x.shape
    M, Cg, K = w.shape
    if C != Cg * group or M % group:
        raise ShapeError(f"{node.describe()}: weights {w.shape} for input {x.shape}")
    span = (K - 1) * dil + 1
    pads = list(at.get("pads", [0, 0]))
    auto = at.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = max((-(-L // stride) - 1) * stride + span - L, 0)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        pads = [lo, total - lo]
    elif auto == "VALID":
        pads = [0, 0]
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[1])))
    out_len = (xp.shape[2] - span) // stride + 1
    if out_len < 1:
        raise ShapeError(f"{node.describe()}: input too short for the kernel")
    charge((N, out_len, C * K), x.dtype.itemsize, node, budget)
    idx = np.arange(out_len)[:, None] * stride + np.arange(K)[None] * dil
    cols = xp[:, :, idx]  # (N, C, out_len, K)
    outs = []
    for g in range(group):
        cg = (
            cols[:, g * Cg : (g + 1) * Cg].transpose(0, 2, 1, 3).reshape(N, out_len, -1)
        )
        wg = w[g * (M // group) : (g + 1) * (M // group)].reshape(M // group, -1)
        outs.append(cg @ wg.T)  # (N, out_len, M/group)
    y = np.concatenate(outs, axis=2).transpose(0, 2, 1)
    if b is not None:
        y = y + b[None, :, None]
    return [np.ascontiguousarray(y, dtype=x.dtype)]


COMPUTE_OPS: dict[str, Op] = {
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(_div),
    "Pow": _binary(np.power),
    "Equal": _binary(np.equal),
    "Greater": _binary(np.greater),
    "Less": _binary(np.less),
    "GreaterOrEqual": _binary(np.greater_equal),
    "LessOrEqual": _binary(np.less_equal),
    "And": _binary(np.logical_and),
    "Or": _binary(np.logical_or),
    "Xor": _binary(np.logical_xor),
    "Not": _unary(np.logical_not),
    "Neg": _unary(np.negative),
    "Abs": _unary(np.abs),
    "Exp": _unary(np.exp),
    "Log": _unary(np.log),
    "Sqrt": _unary(np.sqrt),
    "Reciprocal": _unary(np.reciprocal),
    "Erf": _unary(special.erf),
    "Relu": _unary(lambda x: np.maximum(x, 0)),
    "Sigmoid": _unary(NUMPY_ACTIVATIONS["sigmoid"]),
    "Tanh": _unary(np.tanh),
    "Softplus": _unary(NUMPY_ACTIVATIONS["softplus"]),
    "Clip": _clip,
    "Where": _where,
    "Min": _variadic(lambda xs: np.minimum.reduce(np.broadcast_arrays(*xs))),
    "Max": _variadic(lambda xs: np.maximum.reduce(np.broadcast_arrays(*xs))),
    "Sum": _variadic(lambda xs: sum(xs[1:], xs[0])),
    "Mean": _variadic(lambda xs: sum(xs[1:], xs[0]) / len(xs)),
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Flatten": _flatten,
    "Split": _split,
    "Tile": _tile,
    "Range": _range,
    "Dropout": _dropout,
    "ReduceMean": _reduce(np.mean),
    "ReduceMax": _reduce(np.max),
    "ReduceMin": _reduce(np.min),
    "ReduceSum": _reduce(np.sum),
    "Softmax": _softmax(False),
    "LogSoftmax": _softmax(True),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Conv": _conv,
}
