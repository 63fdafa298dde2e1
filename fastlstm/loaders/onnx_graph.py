"""ONNX graphs of LSTM nodes and the glue exporters put around them.

The file is parsed with the optional ``onnx`` package (``pip install
fastlstm[onnx]``) into a plain ``Graph`` (nodes with Python attribute
values, initializers as NumPy arrays); ``onnx_reader`` turns that into the
canonical graph. Besides LSTM nodes, the glue ops exporters write around
them (model_spec.ARRAY_OPS) are read; any other op is refused by name.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from fastlstm._budget import ByteBudget, check_allocation
from fastlstm.errors import (
    FastLSTMError,
    ModelFormatError,
    UnsupportedLayerError,
)
from fastlstm.loaders._files import open_companion, open_model_file
from fastlstm.model_spec import ARRAY_OPS

__all__ = ["Graph", "Node", "read_onnx", "RECURRENT_OPS", "SUPPORTED_OPS"]

# the recurrent ops fastlstm runs, and the array ops around them
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
SUPPORTED_OPS = frozenset(ARRAY_OPS) | RECURRENT_OPS


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
    # each input's declared shape (None: a dimension of any size), or None
    input_shapes: list = dataclasses.field(default_factory=list)
    producer: str = ""  # producer_name and producer_version, as recorded
    # each graph input's and output's declared shape and element type
    # ("tensor(float)", as ONNX Runtime names them), for get_inputs()
    declared: dict = dataclasses.field(default_factory=dict)


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
            + "; fastlstm runs LSTM, GRU and RNN nodes and the glue around them: "
            + ", ".join(sorted(SUPPORTED_OPS))
        )
    inputs = [i.name for i in g.input if i.name not in inits]
    shapes = [_declared_shape(i) for i in g.input if i.name not in inits]
    outputs = [o.name for o in g.output]
    if not outputs:
        raise ModelFormatError(
            f"{where}: holds no ONNX graph (no outputs); not an ONNX model"
        )
    producer = f"{model.producer_name} {model.producer_version}".strip()[:200]
    declared = {
        v.name: (_declared_shape(v), _declared_type(v))
        for v in [*g.input, *g.output]
        if v.name in inputs or v.name in outputs
    }
    return Graph(
        nodes, inits, inputs, outputs, opset, where, shapes, producer, declared
    )


def _declared_type(value_info: Any) -> str | None:
    """A graph input's or output's element type as ONNX Runtime names it
    ("tensor(float)"), or None when not declared."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.elem_type:
        return None
    onnx = _import_onnx()
    try:
        name = onnx.TensorProto.DataType.Name(t.tensor_type.elem_type)
    except ValueError:
        return None
    return f"tensor({name.lower()})"


def _declared_shape(value_info: Any) -> tuple | None:
    """A graph input's shape as declared: a fixed size per dimension, None
    for a named or unknown one; None when no shape is declared."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    if len(dims) > 64:
        return None
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in dims
    )
