"""Generators of hostile model files, one per way a file could abuse a
format's own features (fastlstm issue 17's classes). Each generator writes
its file(s) into a folder and returns a ``Case``: what to load, with which
options, whether to run a prediction after loading, and the message the
refusal must contain. ``tests/test_hostile_files.py`` loads each one in a
child process (``tests/hostile_child.py``) and checks the outcome.

Every file here is made by code, so a reviewer can read what it does; no
opaque blobs are committed.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch_files import Emitter, Storages

# Bytes of "another file" the hostile files try to reach; they may appear in
# no result and no message.
SECRET = b"fastlstm-secret-" * 64


@dataclass
class Case:
    path: Path
    match: str  # regex the FastLSTMError message must contain
    kwargs: dict = field(default_factory=dict)
    predict: tuple | None = None  # input shape of a predict() after loading


CASES: dict[str, Callable[[Path], Case]] = {}


def case(name: str):
    def register(fn: Callable[[Path], Case]) -> Callable[[Path], Case]:
        CASES[name] = fn
        return fn

    return register


def write_secret(folder: Path) -> Path:
    path = folder / "secret.bin"
    path.write_bytes(SECRET)
    return path


# --- PyTorch pickles --------------------------------------------------------


def opcodes(*parts) -> bytes:
    """Pickle opcodes for objects and Raw pieces, without PROTO or STOP."""
    e = Emitter()
    for part in parts:
        e.emit(part)
    return e.out.getvalue()[2:]


def tensor_opcodes(st: Storages, arr: np.ndarray) -> bytes:
    e = Emitter()
    e.tensor(st.add(arr))
    return e.out.getvalue()[2:]


def torch_zip(folder: Path, body: bytes, st: Storages | None = None) -> Path:
    """A torch zip file whose data.pkl is ``body`` (opcodes) + STOP."""
    path = folder / "hostile.pt"
    st = st or Storages()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02" + body + b".")
        zf.writestr("archive/byteorder", "little")
        for key, raw in st.data.items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def _weights_dict(entries: bytes) -> bytes:
    """An OrderedDict literal holding ``entries`` (key/value opcodes)."""
    return (
        b"ccollections\nOrderedDict\n)R(" + entries + b"u"  # REDUCE, SETITEMS
    )


@case("pickle_build_rewrites_tensor_stride")
def _build_on_tensor(folder: Path) -> Case:
    """BUILD on a validated tensor, setting a huge negative stride: with
    CPython's unpickler this read heap memory before the storage."""
    st = Storages()
    t = tensor_opcodes(st, np.ones((4, 4), np.float32))
    state = opcodes((None, {"stride": (-(1 << 40), 1), "offset": 0}))
    body = _weights_dict(opcodes("weight_ih_l0") + t + state + b"b")
    return Case(torch_zip(folder, body, st), r"BUILD applied to a LazyTensor")


@case("pickle_build_on_module_function")
def _build_on_function(folder: Path) -> Case:
    body = b"ctorch._utils\n_rebuild_tensor_v2\n" + opcodes({"x": 1}) + b"b"
    return Case(torch_zip(folder, body), r"BUILD applied to a Call")


@case("pickle_build_renames_storage_type")
def _build_on_storage_type(folder: Path) -> Case:
    """BUILD on the shared HalfStorage object: it would read float16 files
    as bfloat16 for the rest of the process."""
    body = (
        b"ctorch\nHalfStorage\n" + opcodes((None, {"name": "BFloat16Storage"})) + b"b"
    )
    return Case(torch_zip(folder, body), r"BUILD applied to a StorageType")


@case("pickle_setitem_on_global")
def _setitem_on_global(folder: Path) -> Case:
    body = b"ccollections\nOrderedDict\n" + opcodes("k", 1) + b"s"
    return Case(torch_zip(folder, body), r"SETITEM applied to a Call")


@case("pickle_list_copies")
def _list_copies(folder: Path) -> Case:
    """list(L) of one memo'd list, again and again: each copy costs a few
    bytes of file and allocates the whole list."""
    body = b"c__builtin__\nlist\nq\x01" + b"(" + b"K\x07" * 4000 + b"lq\x02"
    body += b"h\x01h\x02\x85R0" * 20000
    return Case(torch_zip(folder, body + b"N"), r"more work than its size allows")


@case("pickle_deep_tuples_as_key")
def _deep_tuples(folder: Path) -> Case:
    """Tuples nested 100,000 deep, used as a dict key: hashing them would
    recurse in C until the stack overflows."""
    body = b"}" + b"N" + b"\x85" * 100_000 + b"K\x01s"
    return Case(torch_zip(folder, body), r"tuples nest more than")


@case("pickle_shared_dicts_fan_out")
def _shared_dicts(folder: Path) -> Case:
    """Each level a dict holding the level below 64 times: a walk that
    does not notice sharing visits 64^8 dicts."""
    body = b"}q\x00"
    for level in range(1, 9):
        items = b"".join(
            opcodes(f"k{i}") + b"h" + bytes([level - 1]) for i in range(64)
        )
        body += b"}(" + items + b"uq" + bytes([level])
    return Case(torch_zip(folder, body), r"no nn.LSTM")


@case("pickle_zero_stride_expansion")
def _zero_stride(folder: Path) -> Case:
    """A one-element storage viewed as a 2^15 x 2^14 tensor (stride 0):
    2 GiB of copies from 4 bytes."""
    st = Storages()
    key = st.add_raw(np.ones(1, np.float32))
    e = Emitter()
    from torch_files import Tensor

    e.tensor(Tensor(key, "FloatStorage", 1, 0, (1 << 15, 1 << 14), (0, 0)))
    body = _weights_dict(opcodes("weight_ih_l0") + e.out.getvalue()[2:])
    return Case(torch_zip(folder, body, st), r"holds too little data")


@case("pickle_overlong_frame")
def _overlong_frame(folder: Path) -> Case:
    body = b"\x95" + struct.pack("<Q", 1 << 40) + b"N"
    return Case(torch_zip(folder, body), r"frame of \d+ bytes runs past")


@case("pickle_busywork_at_size_limit")
def _busywork(folder: Path) -> Case:
    """A data.pkl just under the size limit of pushes and pops: the
    interpreter's time is linear in it and bounded."""
    body = b"N0" * ((4 << 20) // 2 - 16) + b"\xff"
    return Case(torch_zip(folder, body), r"opcode 0xff is not allowed")
