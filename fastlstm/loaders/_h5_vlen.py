"""Checks a variable-length attribute's on-disk descriptors before h5py reads it.

On disk every element of a variable-length attribute is a descriptor:
4-byte element count, address of a global-heap collection (GCOL), 4-byte
object index. libhdf5 allocates count * element-size bytes before it looks
at the heap object, so one corrupt count makes it allocate gigabytes (found
by fuzzing Keras ``.h5`` files). This module finds the attribute message in
the object header itself and compares every descriptor with the heap object
it names, which must exist and hold exactly that many bytes.

References (HDF5 File Format Specification 3.0): superblock II.A, version 1
and 2 object headers IV.A.1, dataspace IV.A.2.b, datatype IV.A.2.d, object
header continuation IV.A.2.q, attribute IV.A.2.m, attribute info IV.A.2.v,
global heap III.E. Only what these checks need is parsed; every offset is
bounds-checked, so a corrupt file yields ModelFormatError and nothing else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from fastlstm.errors import ModelFormatError

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MSG_CONTINUATION, _MSG_ATTRIBUTE, _MSG_ATTRIBUTE_INFO = 0x10, 0x0C, 0x15
_CLASS_VLEN = 9
_MAX_CHUNKS = 4096  # object header chunks followed (continuations)
# Work one attribute check may do, whatever the file says: bytes read and
# loop steps (header messages and heap objects walked). Real Keras files
# need a few KB and a few hundred steps (a 20 MB model_config is one heap
# object); a crafted file hits these bounds in well under a second.
_MAX_READ_BYTES = 256 << 20
_MAX_STEPS = 200_000

# In-memory HDF5 images (files opened from a BytesIO), by HDF5 file number.
_images: dict[tuple, bytes] = {}


@contextlib.contextmanager
def image_of(f: Any, data: bytes) -> Iterator[None]:
    """Tell the checks the bytes of an HDF5 file opened from memory."""
    key = f.id.fileno
    _images[key] = data
    try:
        yield
    finally:
        _images.pop(key, None)


class _Corrupt(Exception):
    pass


class _Reader:
    """Bounds-checked reads of an HDF5 file's bytes, within a work budget."""

    def __init__(self, read: Callable[[int, int], bytes], size: int) -> None:
        self._read, self.size = read, size
        self.bytes_left, self.steps_left = _MAX_READ_BYTES, _MAX_STEPS
        self._superblock()

    @classmethod
    def of_file(cls, f: Any) -> _Reader:
        """A reader of an open h5py file: pread on its descriptor, or the
        bytes registered by image_of (or its file image) when in memory."""
        size = int(f.id.get_filesize())
        data = _images.get(f.id.fileno)
        if data is None and f.driver == "sec2":
            fd = f.id.get_vfd_handle()
            return cls(lambda off, n: os.pread(fd, n, off), size)
        if data is None:
            data = f.id.get_file_image()
        return cls(lambda off, n: data[off : off + n], size)

    def step(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise _Corrupt(f"more than {_MAX_STEPS} header messages or heap objects")

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise _Corrupt(f"{n} bytes at offset {off} lie outside the file")
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise _Corrupt(f"its structures span more than {_MAX_READ_BYTES} bytes")
        out = self._read(off, n)
        if len(out) != n:
            raise _Corrupt(f"short read at offset {off}")
        return out

    def _superblock(self) -> None:
        at = 0
        while self.read(at, 8) != _SIGNATURE:  # after a user block: 512, 1024, ...
            at = 512 if at == 0 else at * 2
        head = self.read(at, 32)
        if head[8] in (0, 1):
            self.off_size, self.len_size = head[13], head[14]
            base_at = at + (24 if head[8] == 0 else 28)
        else:
            self.off_size, self.len_size = head[9], head[10]
            base_at = at + 12
        if self.off_size not in (2, 4, 8) or self.len_size not in (2, 4, 8):
            raise _Corrupt("bad superblock sizes")
        self.base = self.uint(self.read(base_at, self.off_size))
        self.undefined = (1 << (8 * self.off_size)) - 1

    @staticmethod
    def uint(b: bytes) -> int:
        return int.from_bytes(b, "little")


def _u(b: bytes, at: int, n: int) -> int:
    if at + n > len(b):
        raise _Corrupt("field runs past its message")
    return int.from_bytes(b[at : at + n], "little")


def _messages(r: _Reader, addr: int) -> Iterator[tuple[int, int, bytes]]:
    """(type, flags, data) of every message in the object header at addr."""
    start = r.base + addr
    pending: list[tuple[int, int, bool]] = []
    if r.read(start, 4) == b"OHDR":
        v2 = True
        flags = r.read(start + 5, 1)[0]
        at = start + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        size = r.uint(r.read(at, width))
        pending.append((at + width, size, True))
    else:
        prefix = r.read(start, 16)
        if prefix[0] != 1:
            raise _Corrupt(f"unknown object header version {prefix[0]}")
        v2 = False
        pending.append((start + 16, _u(prefix, 8, 4), False))
    seen = 0
    while pending:
        at, size, first = pending.pop(0)
        seen += 1
        if seen > _MAX_CHUNKS:
            raise _Corrupt("too many object header continuation chunks")
        chunk = r.read(at, size)
        pos, end = 0, size
        if v2:
            if not first:
                if chunk[:4] != b"OCHK":
                    raise _Corrupt("object header continuation without OCHK")
                pos = 4
            end = size - 4  # checksum
        hdr = (6 if flags & 0x04 else 4) if v2 else 8
        while pos + hdr <= end:
            r.step()
            if v2:
                mtype, msize, mflags = chunk[pos], _u(chunk, pos + 1, 2), chunk[pos + 3]
            else:
                mtype, msize, mflags = (
                    _u(chunk, pos, 2),
                    _u(chunk, pos + 2, 2),
                    chunk[pos + 4],
                )
            data = chunk[pos + hdr : pos + hdr + msize]
            if len(data) != msize:
                raise _Corrupt("header message runs past its chunk")
            pos += hdr + msize
            if mtype == _MSG_CONTINUATION:
                c_at = _u(data, 0, r.off_size)
                c_len = _u(data, r.off_size, r.len_size)
                pending.append((r.base + c_at, c_len, False))
            yield mtype, mflags, data


def _attribute(data: bytes) -> tuple[str, int, bytes, bytes, bytes]:
    """(name, flags, datatype, dataspace, values) of an attribute message."""
    version, flags = data[0], data[1]
    name_n, dt_n, ds_n = _u(data, 2, 2), _u(data, 4, 2), _u(data, 6, 2)

    def pad(n: int) -> int:
        return (n + 7) & ~7 if version == 1 else n

    if version not in (1, 2, 3):
        raise _Corrupt(f"unknown attribute message version {version}")
    pos = 9 if version == 3 else 8
    fields = []
    for n in (name_n, dt_n, ds_n):
        if pos + n > len(data):
            raise _Corrupt("attribute message fields run past the message")
        fields.append(data[pos : pos + n])
        pos += pad(n)
    name = fields[0].rstrip(b"\0").decode("utf-8", "replace")
    return name, (0 if version == 1 else flags), fields[1], fields[2], data[pos:]


def _element_count(ds: bytes, len_size: int) -> int:
    version, rank = ds[0], ds[1]
    if version == 2 and ds[3] == 2:
        return 0  # null dataspace
    at = 8 if version == 1 else 4
    count = 1
    for k in range(rank):
        count *= _u(ds, at + k * len_size, len_size)
    return count


def _collection(r: _Reader, addr: int) -> dict[int, int]:
    """{object index: size} of the global heap collection at addr, walked
    the way libhdf5 walks it when it loads the collection (all of it, not
    just the object wanted): an object list that would not end (a
    zero-sized free-space entry makes libhdf5 loop forever) or that runs
    past the collection is corrupt."""
    at = r.base + addr
    head = r.read(at, 8 + r.len_size)
    if head[:4] != b"GCOL":
        raise _Corrupt(f"no global heap collection at address {addr}")
    size = r.uint(head[8:])
    hdr = 8 + r.len_size  # index (2), reference count (2), reserved (4), size
    if size < hdr:
        raise _Corrupt("global heap collection smaller than its header")
    body = r.read(at, size)  # raises if it runs past the end of the file
    objects: dict[int, int] = {}
    pos = hdr
    while pos + hdr <= size:  # a shorter tail is free space
        r.step()
        index, obj_size = _u(body, pos, 2), _u(body, pos + 8, r.len_size)
        # free space (index 0) counts its own header; it is never shorter
        need = obj_size if index == 0 else hdr + ((obj_size + 7) & ~7)
        if need < hdr or pos + need > size:
            raise _Corrupt("corrupt global heap object list")
        if index:
            if index in objects:
                raise _Corrupt(f"global heap object {index} appears twice")
            objects[index] = obj_size
        pos += need
    return objects


def _check_values(r: _Reader, dt: bytes, ds: bytes, values: bytes) -> None:
    # byte 0: class (low 4 bits) and version; byte 1: vlen kind (low 4 bits,
    # 1 = string) and padding (high 4 bits); byte 2: character set. The base
    # type (one byte per character) follows the 8-byte vlen header. Anything
    # else is refused: libhdf5 converts undefined kinds by guesswork (a
    # fuzzed kind byte made it allocate 313 GB and crash).
    if len(dt) < 16 or dt[0] & 0x0F != _CLASS_VLEN or not 1 <= dt[0] >> 4 <= 3:
        raise _Corrupt("a variable-length attribute expected")
    if dt[1] & 0x0F != 1 or dt[1] >> 4 > 2 or dt[2] > 1 or dt[3] != 0:
        raise _Corrupt("not a variable-length string (undefined type bits)")
    base_size = _u(dt, 12, 4)
    if dt[8] & 0x0F not in (0, 3) or base_size != 1:
        raise _Corrupt("a variable-length string of one-byte characters expected")
    step = 4 + r.off_size + 4
    count = _element_count(ds, r.len_size)
    collections: dict[int, dict[int, int]] = {}
    if count * step > len(values):
        raise _Corrupt(f"{count} elements declared, {len(values) // step} stored")
    for k in range(count):
        d = values[k * step : (k + 1) * step]
        n, addr = _u(d, 0, 4), _u(d, 4, r.off_size)
        index = _u(d, 4 + r.off_size, 4)
        if n == 0:
            continue
        if addr == r.undefined:
            raise _Corrupt(f"element {k} has no heap address")
        if addr not in collections:
            collections[addr] = _collection(r, addr)
        if index not in collections[addr]:
            raise _Corrupt(f"global heap object {index} does not exist")
        if n * base_size != collections[addr][index]:
            raise _Corrupt(
                f"element {k} declares {n * base_size} bytes, its heap object differs"
            )


def check_vlen_attribute(obj: Any, key: str, where: str) -> None:
    """Raise ModelFormatError unless every variable-length descriptor of
    attribute ``key`` of ``obj`` names a heap object of the declared size."""
    import h5py

    try:
        r = _Reader.of_file(obj.file)
        addr = h5py.h5o.get_info(obj.id).addr
        found = dense = False
        for mtype, mflags, data in _messages(r, addr):
            if mtype == _MSG_ATTRIBUTE_INFO:
                heap_at = 2 + (2 if data[1] & 1 else 0)
                dense |= _u(data, heap_at, r.off_size) != r.undefined
            if mtype != _MSG_ATTRIBUTE or mflags & 0x02:  # 0x02: shared message
                continue
            name, flags, dt, ds, values = _attribute(data)
            if name != key:
                continue
            if flags & 0x01:
                raise _Corrupt("its datatype is shared, which is not read")
            _check_values(r, dt, ds, values)
            found = True
        if not found:
            raise _Corrupt(
                "it is kept in dense attribute storage, which is not read"
                if dense
                else "its attribute message was not found"
            )
    except _Corrupt as exc:
        raise ModelFormatError(f"{where}: corrupt attribute {key!r}: {exc}") from None
    except (OSError, ValueError, IndexError, RuntimeError) as exc:
        raise ModelFormatError(f"{where}: unreadable attribute {key!r}: {exc}") from exc
