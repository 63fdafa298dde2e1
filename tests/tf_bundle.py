"""Writes TensorFlow tensor bundles (``.index`` SSTable + ``.data-*``) by
hand, so the reader can be tested on crafted files (big-endian, snappy
blocks, prefix-compressed keys, corrupt checksums) without TensorFlow."""

from __future__ import annotations

import numpy as np

from fastlstm.loaders.tf1_checkpoint import TABLE_MAGIC


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C bit by bit, independent of fastlstm's compiled one (the
    oracle the tests compare it with)."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


DT = {
    np.dtype(np.float32): 1,
    np.dtype(np.float64): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.int64): 9,
    np.dtype(np.float16): 19,
}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, wire: int, payload: bytes) -> bytes:
    return varint(num << 3 | wire) + payload


def ld(num: int, payload: bytes) -> bytes:
    return field(num, 2, varint(len(payload)) + payload)


def mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def entry_proto(dtype: int, shape, offset: int, size: int, crc: int | None, **extra):
    shape_pb = b"".join(ld(2, field(1, 0, varint(d))) for d in shape)
    out = field(1, 0, varint(dtype)) + ld(2, shape_pb)
    if extra.get("shard"):
        out += field(3, 0, varint(extra["shard"]))
    out += field(4, 0, varint(offset)) + field(5, 0, varint(size))
    if crc is not None:
        out += field(6, 5, mask(crc).to_bytes(4, "little"))
    if extra.get("sliced"):
        out += ld(7, b"")
    return out


def block(entries: list, restart_interval: int = 4) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        if i % restart_interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        prev = key
    for r in restarts or [0]:
        out += r.to_bytes(4, "little")
    out += len(restarts or [0]).to_bytes(4, "little")
    return bytes(out)


def snappy_literal(data: bytes) -> bytes:
    """Valid snappy: the length, then literals of at most 60 bytes."""
    out = bytearray(varint(len(data)))
    for i in range(0, len(data), 60):
        chunk = data[i : i + 60]
        out.append((len(chunk) - 1) << 2)
        out += chunk
    return bytes(out)


def framed(contents: bytes, compress: bool, corrupt: bool = False) -> bytes:
    kind = 0
    if compress:
        contents, kind = snappy_literal(contents), 1
    crc = crc32c(contents + bytes([kind]))
    if corrupt:
        crc ^= 1
    return contents + bytes([kind]) + mask(crc).to_bytes(4, "little")


def index_file(
    blocks: list,
    compress: bool = False,
    corrupt_block: bool = False,
    magic: int = TABLE_MAGIC,
) -> bytes:
    """An SSTable of data blocks given as (contents, last key): each block
    framed (snappy or not, CRC), then the index block, an empty metaindex
    and the footer."""
    index = bytearray()
    handles = []
    for contents, last_key in blocks:
        stored = snappy_literal(contents) if compress else contents
        handles.append((last_key, varint(len(index)) + varint(len(stored))))
        index += framed(contents, compress, corrupt_block)
    index_block = block(handles)
    index_off = len(index)
    index += framed(index_block, False)
    meta_off = len(index)
    meta = block([])
    index += framed(meta, False)
    footer = varint(meta_off) + varint(len(meta)) + varint(index_off)
    footer += varint(len(index_block))
    footer += bytes(40 - len(footer)) + magic.to_bytes(8, "little")
    return bytes(index) + footer


def write_bundle(
    prefix,
    tensors: dict,
    *,
    big_endian: bool = False,
    compress: bool = False,
    corrupt_block: bool = False,
    bad_crc: str | None = None,
    sliced: str | None = None,
    num_shards: int = 1,
    magic: int = TABLE_MAGIC,
) -> None:
    """A one-shard bundle of ``tensors`` (names sorted, as TF writes them)."""
    data = bytearray()
    entries = []
    header = field(1, 0, varint(num_shards)) + field(2, 0, varint(int(big_endian)))
    entries.append((b"", header))
    for name in sorted(tensors):
        arr = np.array(tensors[name], order="C")
        raw = arr.astype(arr.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
        crc = crc32c(raw) ^ (1 if name == bad_crc else 0)
        pb = entry_proto(
            DT[arr.dtype], arr.shape, len(data), len(raw), crc, sliced=name == sliced
        )
        entries.append((name.encode(), pb))
        data += raw
    half = max(1, len(entries) // 2)  # two data blocks: two index handles
    blocks = [
        (block(chunk), chunk[-1][0])
        for chunk in (entries[:half], entries[half:])
        if chunk
    ]
    with open(f"{prefix}.index", "wb") as fh:
        fh.write(index_file(blocks, compress, corrupt_block, magic))
    with open(f"{prefix}.data-00000-of-{num_shards:05d}", "wb") as fh:
        fh.write(bytes(data))
