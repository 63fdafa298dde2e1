"""Reads files written by ``torch.save`` without importing torch.

Two layouts (pytorch/pytorch:torch/serialization.py):

* zip (torch >= 1.6): ``<prefix>/data.pkl`` (the object, pickle protocol 2),
  ``<prefix>/data/<key>`` (raw bytes of each storage), ``<prefix>/byteorder``
  (``little`` or ``big``; absent in old files means little).
* legacy (``_use_new_zipfile_serialization=False`` and torch < 1.6):
  consecutive pickles of the magic number, the protocol version, a
  ``sys_info`` dict and the object, then the pickled list of storage keys,
  then per key an int64 element count followed by the storage's bytes.

The object is unpickled by fastlstm's own restricted interpreter
(``restricted_pickle``) with the allow-list ``ALLOWED_GLOBALS`` (OrderedDict,
the tensor rebuild functions implemented here with NumPy, storage types,
plain containers); any other global is refused by name, nothing in the file
can run code, and no object outside the load can be changed by it.
Tensors come back as NumPy arrays of their own dtype (bfloat16, which
NumPy lacks, widened exactly to float32).
"""

from __future__ import annotations

import collections
import os
import reprlib
import types
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from fastlstm._budget import MAX_ALLOCATION_BYTES, ByteBudget, check_allocation
from fastlstm.errors import ModelFormatError
from fastlstm.loaders._files import open_model_file
from fastlstm.loaders._zip import ZIP_ERRORS, read_member
from fastlstm.loaders.restricted_pickle import Call, unpickle_bytes

__all__ = [
    "ALLOWED_GLOBALS",
    "LEGACY_MAGIC",
    "is_legacy_torch_file",
    "load_torch_file",
    "load_torch_zip",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# LONG1 opcode + 10 little-endian bytes, as pickle protocol >= 2 writes it
_MAGIC_BYTES = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")

# data.pkl holds metadata only (about 200 bytes per tensor, so 20,000
# tensors fit); the restricted unpickler's time and memory are linear in it.
MAX_PICKLE_BYTES = 4 << 20
MAX_TENSOR_ELEMENTS = 1 << 32
MAX_NDIM = 32
# Tensors may view their storages more than once (tied or overlapping
# views); all of a load's tensors together may copy twice what is stored.
TENSOR_EXPANSION = 2

# storage class name -> (NumPy dtype of the stored bytes, little-endian)
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # bit patterns, widened to float32 on read
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}


class StorageType:
    """Stands for ``torch.FloatStorage`` & co. in the unpickled object.
    Shared by every load, so it is immutable."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("storage types are immutable")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])

    def __repr__(self) -> str:
        return f"<torch.{self.name}>"


class StorageRef:
    """A storage named in the pickle by a persistent id; its bytes are
    attached once read (zip: on demand; legacy: after the object)."""

    __slots__ = ("key", "type", "location", "numel", "data", "root", "offset")

    def __init__(self, key: str, type_: StorageType, location: str, numel: int):
        self.key, self.type, self.location, self.numel = key, type_, location, numel
        self.data: np.ndarray | None = None  # 1-D array of self.type.dtype
        self.root: StorageRef | None = None  # legacy storage views
        self.offset = 0

    def array(self, where: str) -> np.ndarray:
        if self.root is not None:
            base = self.root.array(where)
            return base[self.offset : self.offset + self.numel]
        if self.data is None:
            raise ModelFormatError(f"{where}: storage {self.key!r} has no data")
        return self.data


class LazyTensor:
    """A tensor whose storage bytes may not have been read yet."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        if not isinstance(storage, StorageRef):
            raise ModelFormatError(
                f"a tensor's storage is a {type(storage).__name__}, not a "
                "storage reference"
            )
        self.storage = storage
        self.offset = _int(offset, "storage_offset")
        self.size = _int_tuple(size, "size")
        self.stride = _int_tuple(stride, "stride")
        if len(self.size) != len(self.stride):
            raise ModelFormatError(
                f"tensor size {self.size} and stride {self.stride} differ in rank"
            )
        if len(self.size) > MAX_NDIM:
            raise ModelFormatError(f"tensor has {len(self.size)} dimensions")

    def materialize(self, where: str, budget: ByteBudget) -> np.ndarray:
        """The tensor as a new array, after checking in bytes that the view
        stays inside its storage and that the copy fits the load's budget
        (a zero-stride view of one element may not become gigabytes)."""
        st = self.storage
        base = st.array(where)
        numel = 1
        for n in self.size:
            numel *= n
        item = base.dtype.itemsize
        if numel > MAX_TENSOR_ELEMENTS:
            raise ModelFormatError(
                f"{where}: a tensor of shape {self.size} is above the "
                f"{MAX_TENSOR_ELEMENTS}-element limit"
            )
        # bfloat16 widens to float32: charge what the copy will take
        widened = 4 if st.type.name == "BFloat16Storage" else item
        budget.spend(numel * max(item, widened), f"tensor of shape {self.size}")
        if numel == 0:
            return _widen(np.zeros(self.size, base.dtype), st.type.name)
        reach = sum((n - 1) * s for n, s in zip(self.size, self.stride))
        first, last = self.offset * item, (self.offset + reach + 1) * item
        if last > base.shape[0] * item:
            raise ModelFormatError(
                f"{where}: tensor of shape {self.size}, stride {self.stride} "
                f"at offset {self.offset} reaches byte {last} of storage "
                f"{st.key!r}, which holds {base.shape[0] * item}"
            )
        view = np.lib.stride_tricks.as_strided(
            base[first // item :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return _widen(np.array(view, copy=True, order="C"), st.type.name)


def _widen(arr: np.ndarray, storage_name: str) -> np.ndarray:
    """bfloat16 bit patterns as the float32 values they are (exactly: NumPy
    has no bfloat16); every other dtype kept, in native byte order."""
    if storage_name == "BFloat16Storage":
        bits = arr.astype(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFormatError(f"tensor {what} is {value!r}, not an integer")
    if value < 0:
        raise ModelFormatError(f"tensor {what} is negative ({value})")
    return value


def _int_tuple(value: Any, what: str) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise ModelFormatError(f"tensor {what} is {value!r}, not a tuple")
    return tuple(_int(v, what) for v in value)


# --- the tensor rebuild functions torch pickles by name --------------------


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> Any:
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> Any:
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> Any:
    if not isinstance(data, LazyTensor):
        raise ModelFormatError(
            f"a Parameter wraps a {type(data).__name__}, not a tensor"
        )
    return data


def _size(*args: Any) -> tuple:
    """torch.Size(sequence)."""
    if len(args) != 1 or not isinstance(args[0], (list, tuple)):
        raise ModelFormatError("torch.Size takes one sequence")
    return tuple(args[0])


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """How protocol-2 pickles spell bytes objects."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ModelFormatError("_codecs.encode is only allowed for latin1 bytes")
    return text.encode("latin1")


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    return collections.OrderedDict(*args)


_TORCH_MODULES = ("torch", "torch.cuda", "torch.storage")
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): Call(_ordered_dict, "OrderedDict", copies=True),
    ("torch._utils", "_rebuild_tensor"): Call(_rebuild_tensor, "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"): Call(
        _rebuild_tensor_v2, "_rebuild_tensor_v2"
    ),
    ("torch._utils", "_rebuild_parameter"): Call(
        _rebuild_parameter, "_rebuild_parameter"
    ),
    ("torch._utils", "_rebuild_parameter_with_state"): Call(
        _rebuild_parameter, "_rebuild_parameter_with_state"
    ),
    ("torch", "Size"): Call(_size, "torch.Size"),
    ("_codecs", "encode"): Call(_codecs_encode, "_codecs.encode"),
}
for _module in ("builtins", "__builtin__"):
    for _kind in (set, frozenset, dict, list, tuple):
        _ALLOWED[(_module, _kind.__name__)] = Call(_kind, _kind.__name__, copies=True)
for _module in _TORCH_MODULES:
    for _name in STORAGE_DTYPES:
        _ALLOWED[(_module, _name)] = StorageType(_name)
_ALLOWED[("torch.storage", "TypedStorage")] = StorageType("UntypedStorage")
# dtype objects (torch.float32 ...) are only ever compared, never called
for _name in (
    "float32",
    "float",
    "float16",
    "half",
    "bfloat16",
    "float64",
    "double",
    "int64",
    "long",
    "int32",
    "int",
    "int16",
    "int8",
    "uint8",
    "bool",
):
    _ALLOWED[("torch", _name)] = f"torch.{_name}"
ALLOWED_GLOBALS: Mapping[tuple[str, str], Any] = types.MappingProxyType(_ALLOWED)


class _StorageTable:
    """The persistent ids of one load: ``('storage', type, key, location,
    numel[, view])`` become ``StorageRef`` objects, shared by key."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.storages: dict[str, StorageRef] = {}

    def __call__(self, pid: Any) -> StorageRef:
        if not (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and isinstance(pid[1], StorageType)
        ):
            raise ModelFormatError(
                f"{self.where}: unsupported persistent id {_short(pid)}"
            )
        type_, key, location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise ModelFormatError(
                f"{self.where}: storage {key!r} has element count {numel!r}"
            )
        check_allocation(
            numel * type_.dtype.itemsize,
            self.where,
            f"storage {key!r} of {numel} elements",
        )
        view = pid[5] if len(pid) == 6 else None
        ref = self.storages.get(key)
        if ref is None:
            ref = StorageRef(key, type_, str(location), numel)
            self.storages[key] = ref
        elif ref.type.name != type_.name:
            raise ModelFormatError(
                f"{self.where}: storage {key!r} is used as both "
                f"{ref.type.name} and {type_.name}"
            )
        if view is None:
            return ref
        # legacy storage views: (view_key, offset, view_size)
        if not (isinstance(view, tuple) and len(view) == 3):
            raise ModelFormatError(f"{self.where}: bad storage view {_short(view)}")
        view_key, offset, size = str(view[0]), view[1], view[2]
        vref = self.storages.get("view:" + view_key)
        if vref is None:
            vref = StorageRef(view_key, type_, str(location), _int(size, "view size"))
            vref.root = ref
            vref.offset = _int(offset, "view offset")
            if vref.offset + vref.numel > numel:
                raise ModelFormatError(
                    f"{self.where}: storage view {view_key!r} overruns storage {key!r}"
                )
            self.storages["view:" + view_key] = vref
        return vref


_ADVICE = (
    "Only tensors, storages and plain containers (dict, list, tuple, "
    "OrderedDict) are read from PyTorch files, nothing is executed. Save "
    "model.state_dict() rather than the model object."
)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _short(value: Any) -> str:
    """A bounded repr (file-made objects may nest deeply or be huge)."""
    return _REPR.repr(value)


def _unpickle(data: bytes, where: str, pos: int = 0) -> tuple[Any, _StorageTable, int]:
    """The object of the pickle at data[pos:], its storages, and the offset
    just past it."""
    table = _StorageTable(where)
    obj, end = unpickle_bytes(data, where, ALLOWED_GLOBALS, table, pos, _ADVICE)
    return obj, table, end


MAX_NESTING = 200


def materialize(obj: Any, where: str, budget: ByteBudget) -> Any:
    """Replaces every LazyTensor in nested containers by its array. Each
    object is converted once (a tensor or container the pickle refers to
    twice stays shared), so the work is linear in the pickle."""
    done: dict[int, Any] = {}

    def convert(node: Any, depth: int) -> Any:
        key = id(node)
        if key in done:
            return done[key]
        if depth > MAX_NESTING:
            raise ModelFormatError(f"{where}: containers nest too deeply")
        if isinstance(node, LazyTensor):
            out: Any = node.materialize(where, budget)
        elif isinstance(node, dict):  # OrderedDict included
            out = type(node)((k, convert(v, depth + 1)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            out = type(node)(convert(v, depth + 1) for v in node)
        else:
            return node
        done[key] = out
        return out

    return convert(obj, 0)


# --- zip archives ------------------------------------------------------------


def find_zip_prefix(zf: zipfile.ZipFile, where: str) -> str | None:
    """The top folder holding data.pkl ('archive/' or the file stem), or
    None when the archive is not a torch.save file."""
    found = [
        n[: -len("data.pkl")]
        for n in zf.namelist()
        if n.endswith("/data.pkl") and n.count("/") == 1
    ]
    if not found:
        return None
    if len(found) > 1:
        raise ModelFormatError(
            f"{where}: the archive holds several data.pkl files: {sorted(found)}"
        )
    return found[0]


def load_torch_zip(zf: zipfile.ZipFile, where: str) -> Any:
    prefix = find_zip_prefix(zf, where)
    if prefix is None:
        raise ModelFormatError(f"{where}: a zip archive without */data.pkl")
    names = {info.filename: info.file_size for info in zf.infolist()}
    if prefix + "constants.pkl" in names or any(
        n.startswith(prefix + "code/") for n in names
    ):
        raise ModelFormatError(
            f"{where}: a TorchScript archive (torch.jit.save); fastlstm reads "
            "state_dicts: torch.save(model.state_dict(), path)"
        )
    order = "little"
    if prefix + "byteorder" in names:
        raw = read_member(zf, prefix + "byteorder", 16, where).strip()
        if raw not in (b"little", b"big"):
            raise ModelFormatError(f"{where}: byteorder is {raw!r}")
        order = raw.decode()
    pkl = read_member(zf, prefix + "data.pkl", MAX_PICKLE_BYTES, where)
    obj, table, _ = _unpickle(pkl, f"{where}: data.pkl")
    stored = 0
    for ref in table.storages.values():
        if ref.root is not None:
            continue
        dtype = ref.type.dtype
        if order == "big":
            dtype = dtype.newbyteorder(">")
        member = f"{prefix}data/{ref.key}"
        nbytes = ref.numel * dtype.itemsize
        present = names.get(member)
        if present is not None and present < nbytes:
            raise ModelFormatError(
                f"{where}: storage {member!r} holds {present} bytes, the pickle "
                f"declares {ref.numel} x {dtype.itemsize} = {nbytes}"
            )
        raw = read_member(zf, member, MAX_ALLOCATION_BYTES, where, need=nbytes)
        ref.data = np.frombuffer(raw, dtype, count=ref.numel)
        stored += nbytes
    return materialize(obj, where, ByteBudget(where, stored, TENSOR_EXPANSION))


# --- legacy (non-zip) files ---------------------------------------------------


def is_legacy_torch_file(head: bytes) -> bool:
    """True if the bytes start with the pickled legacy magic number."""
    return head[:1] == b"\x80" and _MAGIC_BYTES in head[:16]


def load_torch_legacy(fh: BinaryIO, size: int, where: str) -> Any:
    head = fh.read(min(size, MAX_PICKLE_BYTES))
    magic, _, pos = _unpickle(head, where)
    if magic != LEGACY_MAGIC:
        raise ModelFormatError(f"{where}: not a PyTorch file (bad magic number)")
    protocol, _, pos = _unpickle(head, where, pos)
    if protocol != LEGACY_PROTOCOL:
        raise ModelFormatError(
            f"{where}: unsupported legacy PyTorch protocol {_short(protocol)}"
        )
    sys_info, _, pos = _unpickle(head, where, pos)
    little = True
    if isinstance(sys_info, dict):
        little = sys_info.get("little_endian", True) is not False
    obj, table, pos = _unpickle(head, where, pos)
    keys, _, pos = _unpickle(head, where, pos)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelFormatError(f"{where}: the storage key list is corrupt")
    fh.seek(pos)
    order = "<" if little else ">"
    stored = 0
    for key in keys:
        ref = table.storages.get(key)
        if ref is None or ref.data is not None:
            raise ModelFormatError(
                f"{where}: storage {key!r} follows the pickle but is not used in "
                "it, or comes twice"
            )
        raw_numel = fh.read(8)
        if len(raw_numel) != 8:
            raise ModelFormatError(f"{where}: truncated before storage {key!r}")
        numel = int.from_bytes(raw_numel, "little" if little else "big", signed=True)
        dtype = ref.type.dtype.newbyteorder(order)
        if numel != ref.numel:
            raise ModelFormatError(
                f"{where}: storage {key!r} holds {numel} elements, the pickle "
                f"declares {ref.numel}"
            )
        nbytes = numel * dtype.itemsize
        if nbytes > size - fh.tell():
            raise ModelFormatError(
                f"{where}: storage {key!r} needs {nbytes} bytes, the file is truncated"
            )
        raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise ModelFormatError(f"{where}: storage {key!r} is truncated")
        ref.data = np.frombuffer(raw, dtype)
        stored += nbytes
    missing = [
        k for k, r in table.storages.items() if r.root is None and r.data is None
    ]
    if missing:
        raise ModelFormatError(f"{where}: storages {missing[:5]} have no data")
    return materialize(obj, where, ByteBudget(where, stored, TENSOR_EXPANSION))


def load_torch_file(path: str | os.PathLike) -> Any:
    """The object ``torch.save`` wrote to ``path`` (zip or legacy format),
    tensors as NumPy arrays. Never imports torch or runs code from the file."""
    path = os.fspath(path)
    try:
        with open_model_file(path) as fh:
            head = fh.read(32)
            size = fh.seek(0, os.SEEK_END)
            fh.seek(32)
            if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
                fh.seek(0)
                try:
                    zf = zipfile.ZipFile(fh)
                except ZIP_ERRORS as exc:
                    raise ModelFormatError(
                        f"{path}: corrupt zip archive: {exc}"
                    ) from exc
                with zf:
                    return load_torch_zip(zf, path)
            if is_legacy_torch_file(head):
                fh.seek(0)
                return load_torch_legacy(fh, size, path)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read the file: {exc}") from exc
    raise ModelFormatError(
        f"{path}: not a PyTorch file (neither a zip archive with data.pkl nor "
        "a legacy torch.save pickle)"
    )
