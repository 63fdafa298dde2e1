# cython: boundscheck=True, wraparound=False, initializedcheck=True
"""The byte-level work of reading a TF checkpoint index, compiled: CRC32C,
raw snappy decompression and the prefix-compressed entries of an SSTable
block (the leveldb table format). Every length in the data is checked
against the buffer it indexes; the callers in tf1_checkpoint.py bound the
sizes (index bytes, entries, key bytes) before and while calling."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from fastlstm.errors import ModelFormatError

cdef uint32_t _CRC[8][256]


cdef void _crc_tables() noexcept:
    cdef uint32_t c
    cdef int n, k
    for n in range(256):
        c = n
        for k in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        _CRC[0][n] = c
    for n in range(256):
        c = _CRC[0][n]
        for k in range(1, 8):
            c = _CRC[0][c & 0xFF] ^ (c >> 8)
            _CRC[k][n] = c


_crc_tables()


def crc32c(const uint8_t[::1] data, uint32_t crc=0):
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``; slicing by
    8 bytes at a time (the words assembled little-endian on any host)."""
    cdef Py_ssize_t n = data.shape[0], i = 0
    cdef uint32_t c = crc ^ 0xFFFFFFFF
    cdef const uint8_t *p = &data[0] if n else NULL
    with nogil:
        while n - i >= 8:
            c ^= (<uint32_t>p[i] | (<uint32_t>p[i + 1] << 8)
                  | (<uint32_t>p[i + 2] << 16) | (<uint32_t>p[i + 3] << 24))
            c = (_CRC[7][c & 0xFF] ^ _CRC[6][(c >> 8) & 0xFF]
                 ^ _CRC[5][(c >> 16) & 0xFF] ^ _CRC[4][c >> 24]
                 ^ _CRC[3][p[i + 4]] ^ _CRC[2][p[i + 5]]
                 ^ _CRC[1][p[i + 6]] ^ _CRC[0][p[i + 7]])
            i += 8
        while i < n:
            c = _CRC[0][(c ^ p[i]) & 0xFF] ^ (c >> 8)
            i += 1
    return c ^ 0xFFFFFFFF


cdef inline Py_ssize_t _varint(const uint8_t[::1] buf, Py_ssize_t pos,
                               Py_ssize_t end, uint64_t *out) except -1:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef uint8_t b
    while True:
        if pos >= end or shift > 63:
            raise ModelFormatError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (<uint64_t>(b & 0x7F)) << shift
        if not b & 0x80:
            out[0] = result
            return pos
        shift += 7


cdef inline Py_ssize_t _le(const uint8_t[::1] buf, Py_ssize_t pos, int nbytes,
                           Py_ssize_t end) except -1:
    """An unsigned little-endian integer of ``nbytes`` (1-4) at ``pos``."""
    cdef Py_ssize_t value = 0
    cdef int k
    if pos + nbytes > end:
        raise ModelFormatError("truncated snappy tag")
    for k in range(nbytes - 1, -1, -1):
        value = (value << 8) | buf[pos + k]
    return value


def snappy_decompress(const uint8_t[::1] data, Py_ssize_t limit):
    """Raw snappy (the block format leveldb tables use); the declared
    length may not exceed ``limit``."""
    cdef uint64_t declared
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t pos = _varint(data, 0, n, &declared)
    # no snappy op writes more than 64 bytes from 3: a longer declared
    # length cannot be honest, and is refused before it is allocated
    if declared > <uint64_t>limit or declared > 22 * <uint64_t>n:
        raise ModelFormatError(
            f"snappy block of {n} bytes claims {declared} bytes"
        )
    out = bytearray(<Py_ssize_t>declared)
    cdef uint8_t[::1] o = out
    cdef Py_ssize_t size = <Py_ssize_t>declared, w = 0, length, offset, k
    cdef int kind, nbytes
    while pos < n:
        kind = data[pos] & 3
        length = data[pos] >> 2
        pos += 1
        if kind == 0:  # literal; lengths 60-63 give the length in 1-4 bytes
            if length >= 60:
                nbytes = length - 59
                length = _le(data, pos, nbytes, n)
                pos += nbytes
            length += 1
            if length > n - pos or length > size - w:
                raise ModelFormatError("snappy literal runs past its block")
            memcpy(&o[w], &data[pos], length)
            pos += length
            w += length
            continue
        if kind == 1:  # copy: 3-bit length, 11-bit offset
            offset = ((length >> 3) << 8) | _le(data, pos, 1, n)
            length = (length & 7) + 4
            pos += 1
        else:  # copy: 6-bit length, 2- or 4-byte offset
            nbytes = 2 if kind == 2 else 4
            offset = _le(data, pos, nbytes, n)
            length += 1
            pos += nbytes
        if offset == 0 or offset > w:
            raise ModelFormatError("bad snappy copy offset")
        if length > size - w:
            raise ModelFormatError("snappy block overruns its length")
        for k in range(length):  # copies may overlap their own output
            o[w + k] = o[w + k - offset]
        w += length
    if w != size:
        raise ModelFormatError(f"snappy block is {w} bytes, not {size}")
    return bytes(out)


def block_entries(const uint8_t[::1] block, Py_ssize_t key_budget,
                  Py_ssize_t max_entries=1 << 62):
    """[(key, value)] of one SSTable block: each key is the previous one's
    first ``shared`` bytes plus ``fresh`` new ones. The full keys together
    may take at most ``key_budget`` bytes (prefix compression lets a small
    block describe quadratically many), and there may be at most
    ``max_entries``. Returns the list and the key bytes used."""
    cdef Py_ssize_t n = block.shape[0]
    if n < 4:
        raise ModelFormatError("block too short")
    cdef uint32_t restarts = (block[n - 4] | (block[n - 3] << 8)
                              | (block[n - 2] << 16) | (<uint32_t>block[n - 1] << 24))
    cdef Py_ssize_t end = n - 4 - 4 * <Py_ssize_t>restarts
    if restarts < 1 or end < 0:
        raise ModelFormatError(f"bad restart count {restarts}")
    cdef Py_ssize_t pos = 0, used = 0
    cdef uint64_t shared, fresh, vlen
    out = []
    key = b""
    while pos < end:
        pos = _varint(block, pos, end, &shared)
        pos = _varint(block, pos, end, &fresh)
        pos = _varint(block, pos, end, &vlen)
        if (shared > <uint64_t>len(key) or fresh > <uint64_t>(end - pos)
                or vlen > <uint64_t>(end - pos - <Py_ssize_t>fresh)):
            raise ModelFormatError("corrupt block entry")
        if len(out) >= max_entries:
            raise ModelFormatError(f"more than {max_entries} index entries")
        used += <Py_ssize_t>(shared + fresh)
        if used > key_budget:
            raise ModelFormatError(
                "the index's keys expand beyond its size allows (prefix "
                "compression abused)"
            )
        key = key[:shared] + bytes(block[pos:pos + <Py_ssize_t>fresh])
        pos += <Py_ssize_t>fresh
        out.append((key, bytes(block[pos:pos + <Py_ssize_t>vlen])))
        pos += <Py_ssize_t>vlen
    return out, used
