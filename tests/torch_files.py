"""Writes torch.save-format files by hand (no torch): a tiny pickle opcode
emitter plus the zip and legacy layouts (FORMATS.md 7.2). Lets the tests
build exactly the files they need: shared storages, strides, big-endian,
dtypes, and hostile globals."""

from __future__ import annotations

import collections
import io
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

STORAGE_OF = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


@dataclass
class Tensor:
    """A tensor as torch pickles it: a view of storage ``key``."""

    key: str
    storage: str  # FloatStorage, BFloat16Storage, ...
    numel: int  # elements in the storage
    offset: int
    size: tuple
    stride: tuple
    rebuild: str = "_rebuild_tensor_v2"
    parameter: bool = False
    view: tuple | None = None  # legacy storage view (view_key, offset, size)


@dataclass
class Global:
    """``module.name(*args)`` in the pickle: GLOBAL + args + REDUCE."""

    module: str
    name: str
    args: tuple = ()


@dataclass
class Raw:
    """Opcodes spliced into the pickle as they are (for hostile files)."""

    data: bytes


@dataclass
class Storages:
    """Storage key -> raw bytes, and tensors made from arrays."""

    data: dict = field(default_factory=dict)
    numel: dict = field(default_factory=dict)
    storage: dict = field(default_factory=dict)

    def add(self, arr: np.ndarray, bf16: bool = False) -> Tensor:
        """A contiguous tensor in a storage of its own."""
        arr = np.ascontiguousarray(arr)
        key = str(len(self.data))
        if bf16:
            bits = (arr.astype(np.float32).view(np.uint32) >> 16).astype("<u2")
            self.data[key] = bits.tobytes()
            name = "BFloat16Storage"
        else:
            self.data[key] = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            name = STORAGE_OF[arr.dtype]
        self.numel[key] = arr.size
        self.storage[key] = name
        strides = tuple(s // arr.itemsize for s in arr.strides) if arr.size else ()
        if not strides:
            strides = tuple([1] * arr.ndim)
        return Tensor(key, name, arr.size, 0, arr.shape, strides)

    def add_raw(self, flat: np.ndarray) -> str:
        key = str(len(self.data))
        self.data[key] = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
        self.numel[key] = flat.size
        self.storage[key] = STORAGE_OF[flat.dtype]
        return key


class Emitter:
    """Pickle protocol 2 opcodes for dicts, lists, tuples, scalars,
    OrderedDicts, Tensors and Globals."""

    def __init__(self, legacy: bool = False) -> None:
        self.out = io.BytesIO()
        self.legacy = legacy
        self.out.write(b"\x80\x02")

    def done(self) -> bytes:
        self.out.write(b".")
        return self.out.getvalue()

    def w(self, b: bytes) -> None:
        self.out.write(b)

    def glob(self, module: str, name: str) -> None:
        self.w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def emit(self, obj) -> None:  # noqa: C901
        if isinstance(obj, Raw):
            self.w(obj.data)
        elif obj is None:
            self.w(b"N")
        elif obj is True:
            self.w(b"\x88")
        elif obj is False:
            self.w(b"\x89")
        elif isinstance(obj, int):
            if -(2**31) <= obj < 2**31:
                self.w(b"J" + struct.pack("<i", obj))
            else:
                raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
                self.w(b"\x8a" + bytes([len(raw)]) + raw)
        elif isinstance(obj, float):
            self.w(b"G" + struct.pack(">d", obj))
        elif isinstance(obj, str):
            raw = obj.encode()
            self.w(b"X" + struct.pack("<I", len(raw)) + raw)
        elif isinstance(obj, tuple):
            self.w(b"(")
            for v in obj:
                self.emit(v)
            self.w(b"t")
        elif isinstance(obj, list):
            self.w(b"](")
            for v in obj:
                self.emit(v)
            self.w(b"e")
        elif isinstance(obj, collections.OrderedDict):
            self.glob("collections", "OrderedDict")
            self.w(b")R(")
            for k, v in obj.items():
                self.emit(k)
                self.emit(v)
            self.w(b"u")
        elif isinstance(obj, dict):
            self.w(b"}(")
            for k, v in obj.items():
                self.emit(k)
                self.emit(v)
            self.w(b"u")
        elif isinstance(obj, Tensor):
            self.tensor(obj)
        elif isinstance(obj, Global):
            self.glob(obj.module, obj.name)
            self.emit(tuple(obj.args))
            self.w(b"R")
        else:
            raise TypeError(type(obj))

    def tensor(self, t: Tensor) -> None:
        if t.parameter:
            self.glob("torch._utils", "_rebuild_parameter")
            self.w(b"(")
        self.glob("torch._utils", t.rebuild)
        self.w(b"(")
        # persistent id ('storage', type, key, location, numel[, view])
        self.w(b"(")
        self.emit("storage")
        self.glob("torch", t.storage)
        self.emit(t.key)
        self.emit("cpu")
        self.emit(t.numel)
        if self.legacy:
            self.emit(t.view)
        self.w(b"tQ")
        self.emit(t.offset)
        self.emit(tuple(t.size))
        self.emit(tuple(t.stride))
        if t.rebuild == "_rebuild_tensor_v2":
            self.emit(False)
            self.emit(collections.OrderedDict())
        self.w(b"tR")
        if t.parameter:
            self.emit(False)
            self.emit(collections.OrderedDict())
            self.w(b"tR")


def pickle_bytes(obj, legacy: bool = False) -> bytes:
    e = Emitter(legacy)
    e.emit(obj)
    return e.done()


def write_zip(
    path,
    obj,
    st: Storages,
    *,
    prefix: str = "archive",
    byteorder: str | None = "little",
    swap: bool = False,
) -> None:
    """A torch >= 1.6 zip file. swap=True stores the storages big-endian."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pickle_bytes(obj))
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in st.data.items():
            if swap:
                dt = np.dtype(_storage_dtype(st.storage[key]))
                raw = np.frombuffer(raw, dt).byteswap().tobytes()
            zf.writestr(f"{prefix}/data/{key}", raw)
        zf.writestr(f"{prefix}/version", "3\n")


def _storage_dtype(name: str) -> str:
    return {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "BFloat16Storage": "<u2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }[name]


MAGIC = 0x1950A86A20F9469CFC6C


def write_legacy(path, obj, st: Storages) -> None:
    """A pre-1.6 (non-zip) torch.save file."""
    parts = [
        pickle_bytes(MAGIC),
        pickle_bytes(1001),
        pickle_bytes(
            {
                "protocol_version": 1001,
                "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4},
            }
        ),
        pickle_bytes(obj, legacy=True),
        pickle_bytes(sorted(st.data)),
    ]
    with open(path, "wb") as fh:
        for p in parts:
            fh.write(p)
        for key in sorted(st.data):
            fh.write(struct.pack("<q", st.numel[key]))
            fh.write(st.data[key])


def lstm_state_dict(
    rng: np.random.Generator,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    proj_size: int = 0,
    bias: bool = True,
    cell: bool = False,
) -> dict:
    """Random float32 weights under nn.LSTM's (or nn.LSTMCell's) key names."""
    H, P = hidden_size, proj_size
    R = P or H
    D = 2 if bidirectional else 1
    sd = collections.OrderedDict()
    if cell:
        sd["weight_ih"] = rng.normal(0, 0.4, (4 * H, input_size))
        sd["weight_hh"] = rng.normal(0, 0.4, (4 * H, H))
        if bias:
            sd["bias_ih"] = rng.normal(0, 0.2, 4 * H)
            sd["bias_hh"] = rng.normal(0, 0.2, 4 * H)
        return {k: v.astype(np.float32) for k, v in sd.items()}
    for k in range(num_layers):
        I_k = input_size if k == 0 else D * R
        for sfx in ("", "_reverse")[:D]:
            sd[f"weight_ih_l{k}{sfx}"] = rng.normal(0, 0.4, (4 * H, I_k))
            sd[f"weight_hh_l{k}{sfx}"] = rng.normal(0, 0.4, (4 * H, R))
            if bias:
                sd[f"bias_ih_l{k}{sfx}"] = rng.normal(0, 0.2, 4 * H)
                sd[f"bias_hh_l{k}{sfx}"] = rng.normal(0, 0.2, 4 * H)
            if P:
                sd[f"weight_hr_l{k}{sfx}"] = rng.normal(0, 0.4, (P, H))
    return collections.OrderedDict((k, v.astype(np.float32)) for k, v in sd.items())


def torch_reference(
    sd: dict,
    x: np.ndarray,
    num_layers: int,
    bidirectional: bool,
    h0=None,
    c0=None,
    lengths=None,
    prefix: str = "",
):
    """float64 nn.LSTM (time-major x (T, B, I)) from the oracle, per layer
    and direction: returns output (T, B, D*H_out), h_n, c_n."""
    from fastlstm._reference import lstm

    D = 2 if bidirectional else 1
    inp = np.asarray(x, np.float64).transpose(1, 0, 2)  # (B, T, I)
    hs, cs = [], []
    for k in range(num_layers):
        outs = []
        for d, sfx in enumerate(("", "_reverse")[:D]):

            def g(name, sfx=sfx, k=k):
                return sd.get(f"{prefix}{name}_l{k}{sfx}")

            b = None
            if g("bias_ih") is not None:
                b = g("bias_ih").astype(np.float64) + g("bias_hh")
            proj = None if g("weight_hr") is None else g("weight_hr").T
            init = None
            if h0 is not None:
                init = (h0[k * D + d], c0[k * D + d])
            seq, _, h, c = lstm(
                inp,
                g("weight_ih").T,
                g("weight_hh").T,
                b,
                projection=proj,
                go_backwards=d == 1,
                initial_state=init,
                lengths=lengths,
            )
            if d == 1:
                seq = seq[:, ::-1]
            outs.append(seq)
            hs.append(h)
            cs.append(c)
        inp = np.concatenate(outs, axis=-1)
    return inp.transpose(1, 0, 2), np.stack(hs), np.stack(cs)
