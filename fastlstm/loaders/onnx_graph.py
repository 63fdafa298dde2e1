"""ONNX graphs of LSTM nodes and the glue exporters put around them.

The file is parsed with the optional ``onnx`` package (``pip install
fastlstm[onnx]``) into a plain ``Graph`` (nodes with Python attribute
values, initializers as NumPy arrays). The glue ops torch.onnx.export and
others write around LSTM nodes (Transpose, Reshape, Squeeze, Unsqueeze,
Concat, Slice, Gather, Shape, Constant, ConstantOfShape, Identity, Cast) are
interpreted here with small NumPy implementations; LSTM nodes run on
fastlstm's engine (fastlstm.onnx_model). Any other op is refused by name
when the file is loaded.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

from fastlstm.errors import (
    FastLSTMError,
    ModelFormatError,
    ShapeError,
    UnsupportedLayerError,
)
from fastlstm.loaders._budget import ByteBudget, check_allocation
from fastlstm.loaders._files import open_companion, open_model_file

__all__ = [
    "Graph",
    "Node",
    "read_onnx",
    "GLUE_OPS",
    "SUPPORTED_OPS",
    "glue_budget",
    "run_glue",
]

# Glue ops that allocate (ConstantOfShape, Concat, Gather, Cast) charge their
# results, in bytes and before allocating, to a budget of this many times
# the bytes they start from: the model's constants when folding at load,
# constants plus the caller's inputs for a run (ByteBudget adds 64 MiB).
GLUE_EXPANSION = 16

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


@dataclasses.dataclass
class Node:
    op: str
    name: str
    inputs: list  # names; "" = an omitted optional input
    outputs: list
    attrs: dict
    domain: str = ""

    def describe(self) -> str:
        return f"node {self.name!r} ({self.op})" if self.name else f"a {self.op} node"


@dataclasses.dataclass
class Graph:
    nodes: list
    initializers: dict  # name -> np.ndarray
    inputs: list  # graph inputs that are not initializers, in order
    outputs: list
    opset: int
    source: str = ""


MIN_ONNX_VERSION = (1, 17)  # refuses external-data traversal itself


def _import_onnx() -> Any:
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "reading .onnx files needs the optional 'onnx' package: "
            "pip install fastlstm[onnx]  (or pip install 'onnx>=1.17')"
        ) from exc
    version = tuple(int(p) for p in re.findall(r"\d+", onnx.__version__)[:2])
    if version < MIN_ONNX_VERSION:
        raise ImportError(
            f"reading .onnx files needs onnx >= 1.17, found {onnx.__version__}: "
            "pip install -U onnx"
        )
    return onnx


def _attr_value(onnx: Any, attr: Any, where: str) -> Any:
    from onnx import numpy_helper

    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (list, tuple)):
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value
        ]
    if isinstance(value, (onnx.GraphProto,)):
        raise UnsupportedLayerError(f"{where}: attribute {attr.name!r} is a subgraph")
    return value


# What a corrupt protobuf's fields (wrong attribute types, undecodable
# names, bad tensor sizes) raise from onnx's helpers or from this module's
# own conversions; while a file is read they mean "corrupt file".
CORRUPT_FIELD_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)


def corrupt_model_error(where: str, exc: BaseException) -> ModelFormatError:
    return ModelFormatError(f"{where}: corrupt ONNX model: {type(exc).__name__}: {exc}")


def read_onnx(source: Any) -> Graph:
    """A Graph from an .onnx path, its bytes, or an onnx.ModelProto.

    External data (tensors kept in other files) is read here, not by onnx:
    only from regular files in the model's own folder, each range checked
    against the file's real size and the load's byte budget. A model given
    as bytes or a ModelProto may not refer to external data."""
    onnx = _import_onnx()
    where = "<onnx model>"
    folder = None
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        folder = os.path.dirname(where) or "."
        with open_model_file(where) as fh:
            data = fh.read()
        model = _parse(onnx, data, where)
        budget = ByteBudget(where, len(data))
    elif isinstance(source, (bytes, bytearray)):
        model = _parse(onnx, bytes(source), where)
        budget = ByteBudget(where, len(source))
    elif isinstance(source, onnx.ModelProto):
        model = source
        budget = ByteBudget(where, model.ByteSize())
    else:
        raise TypeError(
            "an ONNX model is read from a path, bytes or onnx.ModelProto, got "
            f"{type(source).__name__}"
        )
    try:
        read_external_data(onnx, model, folder, where, budget)
        return _graph_of(onnx, model, where)
    except FastLSTMError:
        raise
    except CORRUPT_FIELD_ERRORS as exc:
        raise corrupt_model_error(where, exc) from exc


def _parse(onnx: Any, data: bytes, where: str) -> Any:
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf DecodeError and kin
        raise ModelFormatError(
            f"{where}: not a readable ONNX model: {type(exc).__name__}: {exc}"
        ) from exc


def _tensors(model: Any, where: str) -> list:
    """Every TensorProto of the main graph: initializers and node attributes
    (subgraphs are refused later, before any of their tensors is read)."""
    g = model.graph
    if len(g.sparse_initializer):
        raise UnsupportedLayerError(f"{where}: sparse initializers are not supported")
    out = list(g.initializer)
    for node in g.node:
        for a in node.attribute:
            if a.HasField("t"):
                out.append(a.t)
            out.extend(a.tensors)
    return out


def read_external_data(
    onnx: Any, model: Any, folder: str | None, where: str, budget: ByteBudget
) -> None:
    """Replaces every external-data reference by the bytes it names."""
    opened: dict[str, int] = {}
    for t in _tensors(model, where):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {kv.key: kv.value for kv in t.external_data}
        what = f"{where}: tensor {t.name!r}"
        if folder is None:
            raise ModelFormatError(
                f"{what} keeps its data in {info.get('location')!r}; a model given "
                "as bytes may not refer to other files: load it from its path"
            )
        location = info.get("location", "")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise ModelFormatError(f"{what}: bad external data offset/length") from None
        expected = _tensor_bytes(onnx, t, what)
        if length is None:
            length = expected
        if offset < 0 or length != expected:
            raise ModelFormatError(
                f"{what}: external data of {length} bytes at offset {offset}, but "
                f"its dims and type need {expected}"
            )
        with open_companion(folder, location, what) as fh:
            size = os.fstat(fh.fileno()).st_size
            if location not in opened:
                opened[location] = size
                budget.add_stored(size)
            if offset + length > size:
                raise ModelFormatError(
                    f"{what}: external data [{offset}, {offset + length}) lies "
                    f"beyond the end of {location!r} ({size} bytes)"
                )
            budget.spend(length, f"tensor {t.name!r}")
            fh.seek(offset)
            raw = fh.read(length)
        if len(raw) != length:
            raise ModelFormatError(f"{what}: {location!r} is truncated")
        t.raw_data = raw
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def _tensor_bytes(onnx: Any, t: Any, what: str) -> int:
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        raise ModelFormatError(f"{what}: element type {t.data_type}") from None
    if t.data_type == onnx.TensorProto.STRING:
        raise ModelFormatError(f"{what}: string tensors cannot be external data")
    n = 1
    for d in t.dims:
        if d < 0:
            raise ModelFormatError(f"{what}: negative dimension {d}")
        n *= d
    return check_allocation(n * itemsize, what, "external data")


def _graph_of(onnx: Any, model: Any, where: str) -> Graph:
    from onnx import numpy_helper

    opset = 0
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    g = model.graph
    try:
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    except Exception as exc:
        raise ModelFormatError(f"{where}: unreadable initializer: {exc}") from exc
    nodes, bad = [], []
    for k, n in enumerate(g.node):
        node = Node(
            n.op_type,
            n.name or f"#{k}",
            list(n.input),
            list(n.output),
            {},
            n.domain,
        )
        if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS:
            bad.append(node)
            continue
        node.attrs = {a.name: _attr_value(onnx, a, where) for a in n.attribute}
        nodes.append(node)
    if bad:
        listed = ", ".join(
            f"{n.describe()}" + (f" in domain {n.domain!r}" if n.domain else "")
            for n in bad[:10]
        )
        raise UnsupportedLayerError(
            f"{where}: unsupported ONNX op(s): {listed}"
            + (f" (and {len(bad) - 10} more)" if len(bad) > 10 else "")
            + "; fastlstm runs LSTM nodes and the glue around them: "
            + ", ".join(sorted(SUPPORTED_OPS))
        )
    inputs = [i.name for i in g.input if i.name not in inits]
    outputs = [o.name for o in g.output]
    if not outputs:
        raise ModelFormatError(
            f"{where}: holds no ONNX graph (no outputs); not an ONNX model"
        )
    return Graph(nodes, inits, inputs, outputs, opset, where)


# --- glue ops --------------------------------------------------------------------


def _need(x: Any, node: Node, k: int) -> np.ndarray:
    if x is None:
        raise ModelFormatError(f"{node.describe()}: input {k} is missing")
    return np.asarray(x)


def _ints(x: Any, node: Node, k: int) -> list[int]:
    arr = _need(x, node, k)
    if arr.dtype.kind not in "iu":
        raise ModelFormatError(f"{node.describe()}: input {k} must hold integers")
    return [int(v) for v in arr.reshape(-1)]


def _axis(axis: int, ndim: int, node: Node) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{node.describe()}: axis {axis} out of range for rank {ndim}")
    return axis % ndim


def _charge(shape: tuple, itemsize: int, node: Node, budget: ByteBudget) -> None:
    """Charges a result of ``shape`` to ``budget`` before it is allocated."""
    n = 1
    for d in shape:
        if d < 0:
            raise ShapeError(f"{node.describe()}: negative dimension in {shape}")
        n *= d
    budget.spend(n * itemsize, f"{node.describe()}'s result of shape {shape}")


def glue_budget(where: str, arrays: Any) -> ByteBudget:
    """The budget of glue results computed from ``arrays``."""
    stored = sum(int(np.asarray(a).nbytes) for a in arrays if a is not None)
    return ByteBudget(where, stored, GLUE_EXPANSION)


def _constant(node: Node, ins: list, budget: ByteBudget) -> list:
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


def _constant_of_shape(node: Node, ins: list, budget: ByteBudget) -> list:
    shape = tuple(_ints(ins[0], node, 0))
    value = node.attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if value.size != 1:
        raise ModelFormatError(f"{node.describe()}: value must hold one element")
    _charge(shape, value.dtype.itemsize, node, budget)
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


def _shape(node: Node, ins: list, budget: ByteBudget) -> list:
    shape = np.asarray(_need(ins[0], node, 0).shape, np.int64)
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return [shape[start:end]]


def _gather(node: Node, ins: list, budget: ByteBudget) -> list:
    data = _need(ins[0], node, 0)
    idx = _need(ins[1], node, 1)
    if idx.dtype.kind not in "iu":
        raise ModelFormatError(f"{node.describe()}: indices must be integers")
    axis = _axis(node.attrs.get("axis", 0), data.ndim, node)
    n = data.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ShapeError(f"{node.describe()}: index out of range for size {n}")
    shape = data.shape[:axis] + idx.shape + data.shape[axis + 1 :]
    _charge(shape, data.dtype.itemsize, node, budget)
    return [np.take(data, np.where(idx < 0, idx + n, idx), axis=axis)]


def _axes(node: Node, ins: list, k: int) -> list[int] | None:
    if len(ins) > k and ins[k] is not None:
        return _ints(ins[k], node, k)
    return node.attrs.get("axes")


def _unsqueeze(node: Node, ins: list, budget: ByteBudget) -> list:
    x = _need(ins[0], node, 0)
    axes = _axes(node, ins, 1)
    if axes is None:
        raise ModelFormatError(f"{node.describe()}: no axes")
    ndim = x.ndim + len(axes)
    out = x
    for a in sorted(_axis(a, ndim, node) for a in axes):
        out = np.expand_dims(out, a)
    return [out]


def _squeeze(node: Node, ins: list, budget: ByteBudget) -> list:
    x = _need(ins[0], node, 0)
    axes = _axes(node, ins, 1)
    if axes is None:
        return [np.squeeze(x)]
    axes = tuple(_axis(a, x.ndim, node) for a in axes)
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(
                f"{node.describe()}: cannot squeeze axis {a} of size {x.shape[a]}"
            )
    return [np.squeeze(x, axis=axes)]


def _concat(node: Node, ins: list, budget: ByteBudget) -> list:
    parts = [np.asarray(x) for x in ins if x is not None]
    if not parts:
        raise ModelFormatError(f"{node.describe()}: no inputs")
    axis = _axis(node.attrs.get("axis", 0), parts[0].ndim, node)
    budget.spend(
        sum(int(p.nbytes) for p in parts), f"{node.describe()}'s concatenation"
    )
    try:
        return [np.concatenate(parts, axis=axis)]
    except ValueError as exc:
        raise ShapeError(f"{node.describe()}: {exc}") from None


def _slice(node: Node, ins: list, budget: ByteBudget) -> list:
    x = _need(ins[0], node, 0)
    if len(ins) > 1:  # opset >= 10: starts, ends, axes, steps as inputs
        starts = _ints(ins[1], node, 1)
        ends = _ints(ins[2], node, 2)
        axes = _axes(node, ins, 3)
        steps = _ints(ins[4], node, 4) if len(ins) > 4 and ins[4] is not None else None
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
        index[_axis(a, x.ndim, node)] = slice(s, e, st)
    return [x[tuple(index)]]


def _transpose(node: Node, ins: list, budget: ByteBudget) -> list:
    x = _need(ins[0], node, 0)
    perm = node.attrs.get("perm")
    if perm is not None and sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"{node.describe()}: perm {perm} for rank {x.ndim}")
    return [np.transpose(x, perm)]


def _reshape(node: Node, ins: list, budget: ByteBudget) -> list:
    x = _need(ins[0], node, 0)
    if len(ins) > 1:
        shape = _ints(ins[1], node, 1)
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


def _cast(node: Node, ins: list, budget: ByteBudget) -> list:
    to = node.attrs.get("to")
    if to not in ONNX_DTYPES:
        raise UnsupportedLayerError(f"{node.describe()}: Cast to type {to}")
    x = _need(ins[0], node, 0)
    _charge(x.shape, np.dtype(ONNX_DTYPES[to]).itemsize, node, budget)
    return [x.astype(ONNX_DTYPES[to])]


def _identity(node: Node, ins: list, budget: ByteBudget) -> list:
    return [_need(ins[0], node, 0)]


GLUE_OPS = {
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
    "Identity": _identity,
}
SUPPORTED_OPS = frozenset(GLUE_OPS) | {"LSTM"}


def run_glue(node: Node, ins: list, budget: ByteBudget) -> list:
    """The outputs of a glue node; what it allocates is charged to
    ``budget`` first (see glue_budget)."""
    return GLUE_OPS[node.op](node, ins, budget)
