"""Reads TensorFlow checkpoints (the tensor bundle ``tf.train.Saver`` and
``tf.train.Checkpoint`` write) without TensorFlow.

``<prefix>.index`` is an SSTable (the leveldb table format): data blocks of
prefix-compressed ``key -> value`` entries with restart points, an index
block pointing at them, and a 48-byte footer holding the metaindex and index
block handles (varint64 offset and size) and the magic 0xdb4775248b80fb57.
Each block is followed by a 1-byte compression type (0 none, 1 snappy) and
a masked CRC32C. Keys are tensor names; the key "" holds a
``BundleHeaderProto`` (num_shards, endianness), every other value a
``BundleEntryProto`` (dtype, shape, shard_id, offset, size, crc32c) saying
where the tensor's bytes sit in ``<prefix>.data-<shard>-of-<num_shards>``.
The few protobuf fields needed are decoded here with a small varint reader.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

from fastlstm._budget import check_allocation
from fastlstm.errors import ModelFormatError, UnsupportedLayerError
from fastlstm.loaders import _sstable
from fastlstm.loaders._files import companion_path, open_companion, open_model_file
from fastlstm.loaders._sstable import crc32c

__all__ = [
    "CheckpointReader",
    "crc32c",
    "latest_checkpoint",
    "is_checkpoint_index",
]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
# An index entry takes about 100 bytes: 64 MiB is over half a million tensors.
MAX_INDEX_BYTES = 64 << 20
MAX_ENTRIES = 1_000_000
KEY_EXPANSION = 16  # the full keys may take 16x the index (+ 1 MiB)
MAX_NDIM = 32

# DataType enum (tensorflow/core/framework/types.proto) -> NumPy dtype
DTYPES = {
    1: "<f4",  # DT_FLOAT
    2: "<f8",  # DT_DOUBLE
    3: "<i4",  # DT_INT32
    4: "u1",  # DT_UINT8
    5: "<i2",  # DT_INT16
    6: "i1",  # DT_INT8
    9: "<i8",  # DT_INT64
    10: "?",  # DT_BOOL
    14: "<u2",  # DT_BFLOAT16 (bit patterns)
    17: "<u2",  # DT_UINT16
    19: "<f2",  # DT_HALF
    22: "<u4",  # DT_UINT32
    23: "<u8",  # DT_UINT64
}
DTYPE_NAMES = {1: "float32", 2: "float64", 14: "bfloat16", 19: "float16", 7: "string"}
FLOAT_TYPES = (1, 2, 14, 19)


# --- CRC32C (Castagnoli), as leveldb masks it ---------------------------------


def unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --- varints, protobuf, snappy ----------------------------------------------------


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ModelFormatError(f"{where}: truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def proto_fields(buf: bytes, where: str) -> list[tuple[int, Any]]:
    """(field number, value) of every field: ints for varint / fixed, bytes
    for length-delimited."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, where)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ModelFormatError(f"{where}: truncated protobuf")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos, where)
            if pos + n > len(buf):
                raise ModelFormatError(f"{where}: truncated protobuf")
            value = bytes(buf[pos : pos + n])
            pos += n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ModelFormatError(f"{where}: truncated protobuf")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise ModelFormatError(f"{where}: unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


def snappy_decompress(data: bytes, where: str, limit: int = MAX_INDEX_BYTES) -> bytes:
    """Raw snappy (the block format leveldb tables use), compiled."""
    try:
        return _sstable.snappy_decompress(data, limit)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{where}: {exc}") from None


# --- the SSTable -----------------------------------------------------------------


def _block(data: bytes, offset: int, size: int, where: str) -> bytes:
    if offset < 0 or size < 0 or offset + size + 5 > len(data):
        raise ModelFormatError(
            f"{where}: block handle [{offset}, +{size}] lies outside the "
            f"{len(data)}-byte index file"
        )
    view = memoryview(data)
    contents = view[offset : offset + size]
    kind = data[offset + size]
    stored = int.from_bytes(data[offset + size + 1 : offset + size + 5], "little")
    if crc32c(view[offset : offset + size + 1]) != unmask_crc(stored):
        raise ModelFormatError(f"{where}: checksum mismatch in the block at {offset}")
    if kind == 0:
        return bytes(contents)
    if kind == 1:
        return snappy_decompress(contents, where)
    raise ModelFormatError(f"{where}: unknown block compression type {kind}")


class _Keys:
    """What the full keys of one index may take: prefix compression lets a
    few bytes describe a long key, and a block of such entries quadratically
    many bytes. Bounded by KEY_EXPANSION times the index's size, and the
    entries by MAX_ENTRIES."""

    def __init__(self, index_bytes: int, where: str) -> None:
        self.left = KEY_EXPANSION * index_bytes + (1 << 20)
        self.entries = 0
        self.where = where

    def entries_of(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            out, used = _sstable.block_entries(
                block, self.left, MAX_ENTRIES - self.entries
            )
        except ModelFormatError as exc:
            raise ModelFormatError(f"{self.where}: {exc}") from None
        self.left -= used
        self.entries += len(out)
        return out


def read_table(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable, in order."""
    if len(data) < FOOTER_SIZE:
        raise ModelFormatError(f"{where}: too short for a checkpoint index")
    footer = data[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise ModelFormatError(
            f"{where}: not a TensorFlow checkpoint index (bad table magic)"
        )
    pos = 0
    _, pos = _varint(footer, pos, where)  # metaindex offset
    _, pos = _varint(footer, pos, where)  # metaindex size
    index_off, pos = _varint(footer, pos, where)
    index_size, pos = _varint(footer, pos, where)
    body = data[: len(data) - FOOTER_SIZE]
    keys = _Keys(len(data), where)
    out = []
    for _, handle in keys.entries_of(_block(body, index_off, index_size, where)):
        off, p = _varint(handle, 0, where)
        size, _ = _varint(handle, p, where)
        out.extend(keys.entries_of(_block(body, off, size, where)))
    return out


def is_checkpoint_index(path: str) -> bool:
    try:
        with open_model_file(path) as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() < FOOTER_SIZE:
                return False
            fh.seek(-8, os.SEEK_END)
            return int.from_bytes(fh.read(8), "little") == TABLE_MAGIC
    except (OSError, ModelFormatError):
        return False


# --- the bundle --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    dtype: int
    shape: tuple
    shard: int
    offset: int
    size: int
    crc: int | None
    sliced: bool


def _entry(name: str, value: bytes, where: str) -> Entry:
    dtype = shard = offset = size = 0
    crc = None
    shape: list[int] = []
    sliced = False
    for field, v in proto_fields(value, f"{where}: entry {name!r}"):
        if field == 1:
            dtype = v
        elif field == 2:
            for f2, dim in proto_fields(v, where):
                if f2 == 2:
                    d = dict(proto_fields(dim, where)).get(1, 0)
                    if d >= 1 << 63:  # int64 -1 (unknown)
                        raise ModelFormatError(f"{where}: {name!r} has unknown dims")
                    shape.append(d)
                elif f2 == 3 and v:
                    raise ModelFormatError(f"{where}: {name!r} has unknown rank")
        elif field == 3:
            shard = v
        elif field == 4:
            offset = v
        elif field == 5:
            size = v
        elif field == 6:
            crc = v
        elif field == 7:
            sliced = True
    if len(shape) > MAX_NDIM:
        raise ModelFormatError(f"{where}: {name!r} has {len(shape)} dimensions")
    return Entry(name, dtype, tuple(shape), shard, offset, size, crc, sliced)


def latest_checkpoint(folder: str) -> str | None:
    """The prefix named by ``<folder>/checkpoint`` (model_checkpoint_path),
    or the only ``*.index`` in the folder. The named prefix is used if it
    lies in the folder; TF's Saver writes absolute paths, so a prefix
    elsewhere is looked for by its base name in the folder; anything else
    is refused (the caller may still pass any prefix explicitly)."""
    state = os.path.join(folder, "checkpoint")
    if os.path.lexists(state):
        with open_companion(folder, "checkpoint", state) as fh:
            text = fh.read(1 << 20).decode("utf-8", errors="replace")
        m = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
        if m:
            name = re.sub(r"\\(.)", r"\1", m.group(1))
            return _prefix_in_folder(folder, name, state)
    try:
        found = [n for n in os.listdir(folder) if n.endswith(".index")]
    except OSError:
        return None
    if len(found) == 1:
        return os.path.join(folder, found[0][: -len(".index")])
    return None


def _prefix_in_folder(folder: str, name: str, where: str) -> str:
    candidate = name if os.path.isabs(name) else os.path.join(folder, name)
    base = os.path.basename(candidate)
    if base and os.path.realpath(os.path.dirname(candidate)) == os.path.realpath(
        folder
    ):
        return companion_path(folder, base, where)
    if base and os.path.isfile(os.path.join(folder, base + ".index")):
        return companion_path(folder, base, where)
    raise ModelFormatError(
        f"{where}: model_checkpoint_path {name!r} lies outside {folder} and "
        f"{base!r} is not in it; pass the checkpoint prefix itself to load it"
    )


class CheckpointReader:
    """Names, shapes and values of the tensors in a checkpoint, read lazily."""

    def __init__(self, prefix: str | os.PathLike) -> None:
        prefix = os.fspath(prefix)
        if prefix.endswith(".index"):
            prefix = prefix[: -len(".index")]
        self.prefix = prefix
        where = prefix + ".index"
        self.where = where
        try:
            with open_model_file(where) as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > MAX_INDEX_BYTES:
                    raise ModelFormatError(f"{where}: index of {size} bytes refused")
                data = fh.read()
        except OSError as exc:
            raise ModelFormatError(f"{where}: cannot read the file: {exc}") from exc
        self.num_shards = 1
        self.big_endian = False
        self.entries: dict[str, Entry] = {}
        for key, value in read_table(data, where):
            if key == b"":
                fields = dict(proto_fields(value, f"{where}: header"))
                self.num_shards = fields.get(1, 1)
                self.big_endian = fields.get(2, 0) == 1
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise ModelFormatError(f"{where}: a tensor name is not UTF-8") from None
            self.entries[name] = _entry(name, value, where)
        if not 1 <= self.num_shards <= 100000:
            raise ModelFormatError(f"{where}: num_shards is {self.num_shards}")

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple:
        return self.entries[name].shape

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name``; floating types as float32."""
        e = self.entries.get(name)
        if e is None:
            raise ModelFormatError(f"{self.where}: no tensor {name!r}")
        where = f"{self.where}: {name!r}"
        if e.sliced:
            raise UnsupportedLayerError(
                f"{where} is saved as partitioned slices, which fastlstm does not "
                "read; re-save the checkpoint without partitioning"
            )
        if e.dtype not in DTYPES:
            raise ModelFormatError(
                f"{where} has dtype {DTYPE_NAMES.get(e.dtype, e.dtype)}; numbers "
                "expected"
            )
        dtype = np.dtype(DTYPES[e.dtype])
        if self.big_endian:
            dtype = dtype.newbyteorder(">")
        count = 1
        for d in e.shape:
            count *= d
        check_allocation(max(count * 4, e.size), where, f"a tensor of shape {e.shape}")
        if count * dtype.itemsize != e.size:
            raise ModelFormatError(
                f"{where} has shape {e.shape} ({count} x {dtype.itemsize} bytes) but "
                f"the index says {e.size} bytes"
            )
        if not 0 <= e.shard < self.num_shards:
            raise ModelFormatError(f"{where} names shard {e.shard}")
        folder, stem = os.path.split(self.prefix)
        shard = f"{stem}.data-{e.shard:05d}-of-{self.num_shards:05d}"
        try:
            with open_companion(folder or ".", shard, where) as fh:
                total = os.fstat(fh.fileno()).st_size
                if e.offset + e.size > total:
                    raise ModelFormatError(
                        f"{where} spans bytes [{e.offset}, {e.offset + e.size}) of "
                        f"{shard}, which has {total} (truncated)"
                    )
                fh.seek(e.offset)
                raw = fh.read(e.size)
        except OSError as exc:
            raise ModelFormatError(
                f"{where}: cannot read the data file {shard}: {exc}"
            ) from exc
        if len(raw) != e.size:
            raise ModelFormatError(f"{where}: the data file is truncated")
        if e.crc is not None:
            if crc32c(raw) != unmask_crc(e.crc):
                raise ModelFormatError(f"{where}: checksum mismatch (corrupt data)")
        arr = np.frombuffer(raw, dtype).reshape(e.shape)
        if e.dtype == 14:
            return (arr.astype(np.uint32) << 16).view(np.float32)
        if e.dtype in FLOAT_TYPES:
            with np.errstate(over="ignore"):
                return arr.astype(np.float32)
        return arr.astype(dtype.newbyteorder("="))
