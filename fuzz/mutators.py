"""Structure-aware mutators: they abuse the formats' own features instead of
flipping bytes, so that what a file can declare (pickle opcodes over the
allow-list, HDF5 storage layouts, filters, external files and types, JSON
trees, ONNX attributes and shapes, TF1 index entries) is exercised well
past the first parse error.

Each mutator takes a seed file's bytes and a random.Random and returns the
bytes of a new file of the same format. They parse only the project's own
seed fixtures (trusted), with the standard tools of each format.
"""

from __future__ import annotations

import io
import json
import pickletools
import random
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# Mutated JSON stays below this (twice the readers' 16 MiB cap), so the
# fuzzer's own memory is not mistaken for the loader's.
MAX_TEXT = 32 << 20
HUGE_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, -(2**40), 10**9]


def huge_int(rng: random.Random) -> int:
    return rng.choice(HUGE_INTS + [rng.randrange(-1000, 1000)])


# --- pickles ------------------------------------------------------------------

_GLOBALS = [
    b"ccollections\nOrderedDict\n",
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch._utils\n_rebuild_parameter\n",
    b"ctorch\nFloatStorage\n",
    b"ctorch\nHalfStorage\n",
    b"c__builtin__\nlist\n",
    b"c__builtin__\nset\n",
    b"c__builtin__\ntuple\n",
    b"c__builtin__\ndict\n",
    b"ctorch\nSize\n",
    b"c_codecs\nencode\n",
    b"cposix\nsystem\n",
]


def _pickle_snippet(rng: random.Random) -> bytes:
    """A short opcode sequence over the allow-list: BUILD, SETITEMS,
    APPENDS, memo traffic, persistent ids, nested REDUCE, deep nesting."""
    kind = rng.randrange(12)
    small = struct.pack("<i", huge_int(rng) & 0x7FFFFFFF)
    if kind == 0:  # BUILD with a slot-state dict on whatever is on top
        return b"(N}X\x06\x00\x00\x00strideJ" + small + b"s\x86b"
    if kind == 1:
        return b"(" + b"K\x01" * rng.randrange(1, 64) + b"e"  # APPENDS
    if kind == 2:
        return b"(X\x01\x00\x00\x00kK\x02u"  # SETITEMS
    if kind == 3:
        return rng.choice([b"q", b"h"]) + bytes([rng.randrange(256)])
    if kind == 4:
        return rng.choice([b"r", b"j"]) + struct.pack(
            "<I", rng.choice(HUGE_INTS) & 0xFFFFFFFF
        )
    if kind == 5:
        return b"\x94"  # MEMOIZE
    if kind == 6:  # a persistent id tuple
        return (
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
            b"X\x03\x00\x00\x00cpuJ" + small + b"tQ"
        )
    if kind == 7:  # GLOBAL + args + REDUCE
        return rng.choice(_GLOBALS) + b"(" + b"K\x03" * rng.randrange(0, 5) + b"tR"
    if kind == 8:  # deep tuples or lists
        depth = rng.choice([10, 200, 5000])
        return b"N" + (b"\x85" if rng.random() < 0.5 else b"]") * depth
    if kind == 9:  # a frame header
        return b"\x95" + struct.pack("<Q", rng.choice(HUGE_INTS) & (2**64 - 1))
    if kind == 10:  # copies of a memo entry
        return b"c__builtin__\nlist\nh\x01\x85R" * rng.randrange(1, 50)
    return bytes([rng.randrange(256)])  # any opcode


def mutate_pickle(data: bytes, rng: random.Random) -> bytes:
    """Opcode-level edits: snippets inserted at opcode boundaries, integer
    arguments replaced with interesting values, opcodes dropped."""
    try:
        ops = [(pos, op, arg) for op, arg, pos in pickletools.genops(data)]
    except Exception:  # noqa: BLE001 - not a clean pickle: insert anywhere
        ops = [(i, None, None) for i in range(len(data))]
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        pos, op, arg = rng.choice(ops)
        pos = min(pos, len(buf))
        action = rng.randrange(4)
        if action <= 1:
            buf[pos:pos] = _pickle_snippet(rng)
        elif (
            action == 2
            and op is not None
            and op.name in ("BININT", "BININT1", "BININT2")
        ):
            width = {"BININT": 4, "BININT1": 1, "BININT2": 2}[op.name]
            value = huge_int(rng) % (1 << (8 * width))
            buf[pos + 1 : pos + 1 + width] = value.to_bytes(width, "little")
        elif action == 3 and op is not None:
            del buf[pos : pos + 1]
    return bytes(buf)


def mutate_torch_zip(data: bytes, rng: random.Random) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename.endswith("data.pkl"):
                raw = mutate_pickle(raw, rng)
            elif "/data/" in info.filename and rng.random() < 0.1:
                raw = raw[: rng.randrange(len(raw) + 1)]
            dst.writestr(info.filename, raw)
    return out.getvalue()


def mutate_torch_legacy(data: bytes, rng: random.Random) -> bytes:
    """The legacy layout's fourth pickle (the object) is mutated; the magic,
    protocol, sys_info, key list and storages stay."""
    pos = 0
    bounds = []
    try:
        for _ in range(5):
            start = pos
            for op, _arg, p in pickletools.genops(data[pos:]):
                if op.name == "STOP":
                    pos = start + p + 1
                    break
            bounds.append((start, pos))
    except Exception:  # noqa: BLE001
        return mutate_pickle(data, rng)
    start, end = bounds[rng.choice((3, 3, 3, 2, 4))]
    return data[:start] + mutate_pickle(data[start:end], rng) + data[end:]


# --- JSON trees ---------------------------------------------------------------------


def _nodes(tree, out, parent=None, key=None, depth=0):
    out.append((parent, key, tree))
    if depth > 60:
        return
    if isinstance(tree, dict):
        for k, v in tree.items():
            _nodes(v, out, tree, k, depth + 1)
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            _nodes(v, out, tree, i, depth + 1)


def _confusing(rng: random.Random, old):
    choices = [
        None,
        True,
        huge_int(rng),
        -1,
        1e308,
        float("nan"),
        "",
        "x" * rng.choice((1, 1000)),
        "/dev/zero",
        [],
        {},
        {"class_name": "Dense", "config": "oops"},
        [old, old] if old is not None else [1],
        {"config": old},
    ]
    return rng.choice(choices)


def mutate_json_tree(tree, rng: random.Random):
    """Type confusion, absurd numbers, deepening and widening of a parsed
    JSON value; returns the new value. A step that would make the text
    longer than MAX_TEXT is undone (repeated widenings of shared nodes grow
    exponentially when serialized)."""
    for _ in range(rng.choice((1, 1, 2, 4))):
        nodes = []
        _nodes(tree, nodes)
        parent, key, node = rng.choice(nodes)
        new = _mutated_node(node, rng)
        if parent is None:
            if json_size(new) <= MAX_TEXT:
                tree = new
            continue
        parent[key] = new
        if json_size(tree) > MAX_TEXT:
            parent[key] = node
    return tree


def _mutated_node(node, rng: random.Random):
    action = rng.randrange(5)
    if action <= 1:
        return _confusing(rng, node)
    if action == 2:  # deepen
        new = node
        for _ in range(rng.choice((5, 120, 3000))):
            new = [new]
        return new
    if action == 3 and isinstance(node, list) and node:  # widen
        return node + [node[0]] * rng.choice((2, 10, 10, 100, 1000, 30000))
    if isinstance(node, dict) and node:  # drop or duplicate a key
        new = dict(node)
        k = rng.choice(list(new))
        if rng.random() < 0.5:
            del new[k]
        else:
            new[k + "_"] = new[k]
        return new
    return _confusing(rng, node)


def json_size(tree, memo: dict | None = None, depth: int = 0) -> int:
    """About how long json.dumps(tree) is, computed without serializing
    (shared nodes sized once, counted each time they occur)."""
    memo = {} if memo is None else memo
    key = id(tree)
    if key in memo:
        return memo[key]
    if depth > 5000:
        size = 2
    elif isinstance(tree, list):
        size = 2 + sum(json_size(v, memo, depth + 1) + 2 for v in tree)
    elif isinstance(tree, dict):
        size = 2 + sum(
            len(str(k)) + 6 + json_size(v, memo, depth + 1) for k, v in tree.items()
        )
    else:
        size = len(repr(tree)) + 2
    memo[key] = size
    return size


def dumps_unbounded(tree) -> str:
    """json.dumps that survives the deep trees this module makes; a tree
    whose text would pass MAX_TEXT is never serialized."""
    if json_size(tree) > MAX_TEXT:
        return " " * (MAX_TEXT + 1)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        return json.dumps(tree)
    except (RecursionError, ValueError):
        return "[" * 5000 + "]" * 5000
    finally:
        sys.setrecursionlimit(limit)


def mutate_json_text(text: bytes, rng: random.Random) -> bytes:
    try:
        tree = json.loads(text)
    except ValueError:
        return text
    out = dumps_unbounded(mutate_json_tree(tree, rng)).encode()
    return out if len(out) <= MAX_TEXT else out[:MAX_TEXT]


def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    n = int.from_bytes(data[:8], "little")
    header = mutate_json_text(data[8 : 8 + n], rng)
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


# --- HDF5 ---------------------------------------------------------------------------


def _read_tree(f) -> list:
    """[(path, kind, value, attrs)] of a trusted seed file."""
    import h5py

    items = []

    def visit(name, obj):
        attrs = {k: obj.attrs[k] for k in obj.attrs}
        if isinstance(obj, h5py.Dataset):
            items.append((name, "dataset", obj[()], attrs))
        else:
            items.append((name, "group", None, attrs))

    items.append(("", "group", None, {k: f.attrs[k] for k in f.attrs}))
    f.visititems(visit)
    return items


def _hostile_dataset(g, name: str, value, rng: random.Random, folder: Path) -> None:
    """Writes ``name`` into group ``g`` with a random storage feature."""
    import h5py

    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub" or arr.ndim == 0 or arr.size == 0:
        g.create_dataset(name, data=value)
        return
    choice = rng.randrange(10)
    if choice == 0:  # raw data in another file
        other = folder / "secret.bin"
        if not other.exists():
            other.write_bytes(b"fastlstm-secret-" * 4096)
        g.create_dataset(
            name, arr.shape, arr.dtype, external=[(str(other), 0, arr.nbytes)]
        )
    elif choice == 1:  # a virtual dataset over another file
        src = folder / "source.h5"
        with h5py.File(src, "a") as s:
            if name not in s:
                s.create_dataset(name, data=arr)
        layout = h5py.VirtualLayout(shape=arr.shape, dtype=arr.dtype)
        layout[...] = h5py.VirtualSource(str(src), name, shape=arr.shape)
        g.create_virtual_dataset(name, layout)
    elif choice == 2:  # a filter id no one registered
        ds = g.create_dataset(
            name,
            arr.shape,
            arr.dtype,
            chunks=arr.shape,
            compression=rng.choice((307, 32001, 32008)),
            allow_unknown_filter=True,
        )
        ds.id.write_direct_chunk((0,) * arr.ndim, arr.tobytes())
    elif choice == 3:  # giant chunks
        chunks = tuple(
            min(1 << 12, max(1, d) * rng.choice((1, 64, 4096))) for d in arr.shape
        )
        g.create_dataset(
            name,
            data=arr,
            chunks=chunks,
            maxshape=(None,) * arr.ndim,
            compression="gzip",
        )
    elif choice == 4:  # another type
        dt = rng.choice(
            [h5py.string_dtype(), np.float16, ">f8", np.int8, h5py.enum_dtype({"a": 0})]
        )
        try:
            g.create_dataset(
                name,
                data=arr.astype(dt)
                if dt is not h5py.string_dtype()
                else arr.astype(str).astype(object),
                dtype=dt,
            )
        except (TypeError, ValueError):
            g.create_dataset(name, data=arr)
        if rng.random() < 0.3:
            g[name].attrs["dtype"] = "bfloat16"
    elif choice == 5:  # compact, shuffled, fletcher32
        g.create_dataset(
            name,
            data=arr,
            chunks=True,
            shuffle=True,
            fletcher32=True,
            compression=rng.choice(("gzip", "lzf")),
        )
    elif choice == 6:  # another shape
        shape = tuple(huge_int(rng) % 70 + 1 for _ in range(rng.randrange(1, 4)))
        g.create_dataset(name, shape, arr.dtype)
    else:
        g.create_dataset(name, data=arr)


def mutate_hdf5(data: bytes, rng: random.Random, folder: Path) -> bytes:
    """Rebuilds a seed HDF5 file with random datasets given hostile storage
    (external files, virtual datasets, unknown filters, giant chunks, other
    types and shapes), links, and mutated attributes (JSON configs as trees,
    name lists)."""
    import h5py

    with h5py.File(io.BytesIO(data), "r") as f:
        items = _read_tree(f)
    out_path = folder / "rebuilt.h5"
    with h5py.File(out_path, "w") as out:
        picked = {i for i in range(len(items)) if rng.random() < 0.3}
        for i, (path, kind, value, attrs) in enumerate(items):
            if kind == "group":
                g = out.require_group(path) if path else out
            else:
                parent, _, name = path.rpartition("/")
                g = out.require_group(parent) if parent else out
                if i in picked:
                    _hostile_dataset(g, name, value, rng, folder)
                else:
                    g.create_dataset(name, data=value)
                g = g[name]
            for k, v in attrs.items():
                if i in picked and rng.random() < 0.5:
                    v = _mutate_attr(k, v, rng)
                try:
                    g.attrs[k] = v
                except (TypeError, ValueError):
                    g.attrs[k] = str(v)
        if rng.random() < 0.2:  # a link where a group was
            target = rng.choice([p for p, k, _, _ in items if p] or ["x"])
            name = f"link_{rng.randrange(100)}"
            if rng.random() < 0.5:
                out[name] = h5py.SoftLink("/" + target)
            else:
                out[name] = h5py.ExternalLink(str(folder / "secret.h5"), "/x")
    return out_path.read_bytes()


def _mutate_attr(key: str, value, rng: random.Random):
    if key in ("model_config", "training_config"):
        text = value.decode() if isinstance(value, bytes) else str(value)
        return mutate_json_text(text.encode(), rng).decode()
    arr = np.asarray(value)
    if arr.dtype.kind in "SUO" and arr.size:
        names = [x for x in arr.reshape(-1)]
        action = rng.randrange(3)
        if action == 0:
            names = names * rng.choice((2, 100))
        elif action == 1:
            names = [
                b"../" + (n if isinstance(n, bytes) else str(n).encode()) for n in names
            ]
        else:
            names = names[: rng.randrange(len(names))]
        return np.array(names)
    return _confusing(rng, None) if rng.random() < 0.5 else value


def mutate_keras_zip(data: bytes, rng: random.Random, folder: Path) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename.endswith(".json") and rng.random() < 0.6:
                raw = mutate_json_text(raw, rng)
            elif info.filename.endswith(".h5") and rng.random() < 0.6:
                raw = mutate_hdf5(raw, rng, folder)
            dst.writestr(info.filename, raw)
    return out.getvalue()


# --- ONNX ---------------------------------------------------------------------------


def mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    """Node attributes (values, types, unknown names), initializer dims and
    types, node inputs, op types, external-data fields and opsets."""
    import onnx
    from onnx import helper

    model = onnx.load_model_from_string(data)
    g = model.graph
    for _ in range(rng.choice((1, 1, 2, 4))):
        action = rng.randrange(7)
        if action == 0 and len(g.node):
            node = rng.choice(g.node)
            if len(node.attribute):
                a = rng.choice(node.attribute)
                if a.type == onnx.AttributeProto.INT:
                    a.i = huge_int(rng)
                elif a.type == onnx.AttributeProto.INTS:
                    a.ints[:] = [huge_int(rng) for _ in range(rng.randrange(0, 6))]
                elif a.type == onnx.AttributeProto.FLOATS:
                    a.floats[:] = [float("nan")] * rng.randrange(0, 4)
                elif a.type == onnx.AttributeProto.STRING:
                    a.s = rng.choice([b"", b"x" * 100, b"Tanh", b"reverse"])
        elif action == 1 and len(g.node):
            node = rng.choice(g.node)
            node.attribute.append(
                helper.make_attribute(
                    rng.choice(["value", "axis", "perm", "hidden_size"]),
                    rng.choice([huge_int(rng), [1, 2, 3], "s"]),
                )
            )
        elif action == 2 and len(g.initializer):
            t = rng.choice(g.initializer)
            if len(t.dims):
                t.dims[rng.randrange(len(t.dims))] = abs(huge_int(rng))
            else:
                t.dims.append(abs(huge_int(rng)))
        elif action == 3 and len(g.initializer):
            t = rng.choice(g.initializer)
            if rng.random() < 0.5:
                t.data_type = rng.choice([7, 8, 11, 16, 0, 99])
            else:
                t.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (
                    ("location", rng.choice(["../x", "/etc/passwd", "w.bin", ""])),
                    ("offset", str(huge_int(rng))),
                    ("length", str(huge_int(rng))),
                ):
                    e = t.external_data.add()
                    e.key, e.value = k, v
        elif action == 4 and len(g.node):
            node = rng.choice(g.node)
            if len(node.input):
                node.input[rng.randrange(len(node.input))] = rng.choice(
                    [node.output[0] if len(node.output) else "", "", "missing"]
                )
        elif action == 5 and len(g.node):
            rng.choice(g.node).op_type = rng.choice(
                ["ConstantOfShape", "Concat", "Gather", "Reshape", "Expand", "Loop"]
            )
        else:
            for imp in model.opset_import:
                imp.version = rng.choice([1, 7, 14, 99, 10**6])
    return model.SerializeToString()


# --- TF1 checkpoints ------------------------------------------------------------------


def mutate_tf1_index(data: bytes, rng: random.Random) -> bytes:
    """Decodes the seed's index with the project's reader, edits entries
    (shapes, dtypes, offsets, sizes, shards, keys sharing long prefixes)
    and writes a new table with tests/tf_bundle.py (snappy or not)."""
    from tf_bundle import block, index_file

    from fastlstm.loaders.tf1_checkpoint import read_table

    entries = read_table(data, "seed")
    out = []
    for key, value in entries:
        if rng.random() < 0.3:
            value = _mutate_entry_proto(value, rng)
        if rng.random() < 0.1:
            key = key + b"/" * rng.choice((1, 100, 5000))
        out.append((key, value))
    if rng.random() < 0.2:
        out += [
            (out[-1][0] + bytes([65 + k % 26]) * 1, b"")
            for k in range(rng.choice((10, 5000)))
        ]
    out.sort(key=lambda kv: kv[0])
    restart = rng.choice((1, 4, 16, 1000))
    blocks = [
        (block(chunk, restart), chunk[-1][0])
        for chunk in (out[: len(out) // 2], out[len(out) // 2 :])
        if chunk
    ]
    return index_file(blocks, compress=rng.random() < 0.5)


def _mutate_entry_proto(value: bytes, rng: random.Random) -> bytes:
    from tf_bundle import field, ld, varint

    choice = rng.randrange(5)
    if choice == 0:  # dtype
        return field(1, 0, varint(rng.choice([1, 2, 7, 14, 19, 99]))) + value
    if choice == 1:  # shape with huge dims
        dims = b"".join(
            ld(2, field(1, 0, varint(abs(huge_int(rng)) % 2**63)))
            for _ in range(rng.randrange(1, 4))
        )
        return value + ld(2, dims)
    if choice == 2:  # shard, offset, size
        return value + field(
            rng.choice([3, 4, 5]), 0, varint(abs(huge_int(rng)) % 2**63)
        )
    if choice == 3:  # sliced
        return value + ld(7, b"")
    return value[: rng.randrange(len(value) + 1)]


def mutate_npz(data: bytes, rng: random.Random) -> bytes:
    """.npy headers declaring other shapes and types, members deflated."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    compress = zipfile.ZIP_DEFLATED if rng.random() < 0.5 else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compress) as dst:
        for info in src.infolist():
            raw = src.read(info)
            if rng.random() < 0.4:
                raw = _mutate_npy(raw, rng)
            dst.writestr(info.filename, raw)
        if rng.random() < 0.1:
            dst.writestr(
                "bomb.npy", _mutate_npy(b"", rng) + bytes(1 << rng.choice((10, 20, 24)))
            )
    return out.getvalue()


def _mutate_npy(raw: bytes, rng: random.Random) -> bytes:
    from numpy.lib import format as npy_format

    shape = tuple(
        abs(huge_int(rng)) % (1 << rng.choice((4, 16, 40)))
        for _ in range(rng.randrange(0, 4))
    )
    descr = rng.choice(["<f4", "<f8", "|O", "<c8", "V8", ">i8", "<U4"])
    head = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(
            head, {"descr": descr, "fortran_order": rng.random() < 0.2, "shape": shape}
        )
    except ValueError:
        return raw
    try:
        body_start = raw.index(b"\n") + 1
    except ValueError:
        body_start = len(raw)
    return head.getvalue() + raw[body_start:]
