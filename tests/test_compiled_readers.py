"""The readers' compiled helpers: fastlstm/loaders/_sstable.pyx (CRC32C
against a bit-by-bit oracle, snappy against streams whose output is known
by construction, SSTable blocks against the key budget) and _jsonscan.pyx
(JSON nesting depth against the depth of what json.loads builds), and
random bytes that must end in a result or a ModelFormatError, never a
crash."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tf_bundle import block, crc32c, varint

import fastlstm
from fastlstm.loaders import _sstable
from fastlstm.loaders._jsonscan import json_structure


def test_crc32c_check_value_and_oracle():
    assert _sstable.crc32c(b"123456789") == 0xE3069283  # RFC 3720's check value
    rng = np.random.default_rng(0)
    for n in list(range(20)) + [63, 64, 65, 1000, 4097]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _sstable.crc32c(data) == crc32c(data), n
        assert _sstable.crc32c(data[n // 2 :], _sstable.crc32c(data[: n // 2])) == (
            crc32c(data)
        )


def snappy_stream(rng: np.random.Generator, ops: int) -> tuple[bytes, bytes]:
    """A valid raw snappy stream of random literals and copies (all three
    tag kinds, long literal lengths, overlapping copies) and its output."""
    out = bytearray()
    body = bytearray()
    for _ in range(ops):
        kind = int(rng.integers(0, 4)) if out else 0
        if kind == 0:
            n = int(rng.choice([1, 5, 60, 61, 300, 70000]))
            lit = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            if n <= 60:
                body.append((n - 1) << 2)
            else:
                size = (n - 1).to_bytes(4, "little").rstrip(b"\0") or b"\0"
                body.append((59 + len(size)) << 2)
                body += size
            body += lit
            out += lit
            continue
        offset = int(rng.integers(1, min(len(out), 2047 if kind == 1 else 70000) + 1))
        if kind == 1:
            n = int(rng.integers(4, 12))
            body.append(1 | ((n - 4) << 2) | ((offset >> 8) << 5))
            body.append(offset & 0xFF)
        else:
            n = int(rng.integers(1, 65))
            if kind == 2 and offset > 0xFFFF:
                kind = 3
            body.append(kind | ((n - 1) << 2))
            body += offset.to_bytes(2 if kind == 2 else 4, "little")
        for _ in range(n):
            out.append(out[-offset])
    return varint(len(out)) + bytes(body), bytes(out)


@pytest.mark.parametrize("seed", range(20))
def test_snappy_streams(seed):
    rng = np.random.default_rng(seed)
    stream, want = snappy_stream(rng, 1 + seed * 5)
    assert _sstable.snappy_decompress(stream, 1 << 30) == want


def test_snappy_declared_length_is_checked_before_allocating():
    with pytest.raises(fastlstm.ModelFormatError, match="claims 1073741824 bytes"):
        _sstable.snappy_decompress(varint(1 << 30) + b"\x00a", 1 << 31)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data):
    for call in (
        lambda: _sstable.snappy_decompress(data, 1 << 20),
        lambda: _sstable.block_entries(data, 1 << 20),
        lambda: _sstable.crc32c(data),
    ):
        try:
            call()
        except fastlstm.ModelFormatError:
            pass


def test_block_entries_and_key_budget():
    entries = [(f"name/{k:04d}".encode(), bytes([k])) for k in range(40)]
    raw = block(entries)
    out, used = _sstable.block_entries(raw, 1 << 20)
    assert out == entries
    assert used == sum(len(k) for k, _ in entries)
    with pytest.raises(fastlstm.ModelFormatError, match="keys expand"):
        _sstable.block_entries(raw, 100)


def _containers(value) -> int:
    if isinstance(value, dict):
        return 1 + sum(map(_containers, value.values()))
    if isinstance(value, list):
        return 1 + sum(map(_containers, value))
    return 0


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{}",
        '[[1, {"a": "[[[["}]]',
        r'"\\"',  # a string holding one backslash
        r'["\\", [1]]',
        r'["a\\\"]]]", [[[]]]]',
        '{"k": [{"x": "}}}"}, [[["\\u005b"]]]]}',
        "7",
    ],
)
def test_json_structure_matches_the_parsed_value(text):
    import json

    value = json.loads(text)
    assert json_structure(text.encode()) == (_depth(value), _containers(value))


@settings(max_examples=500, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.text(alphabet='[]{}"\\ab'),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=3)
        ),
        max_leaves=30,
    )
)
def test_json_structure_of_random_values(value):
    import json

    want = (_depth(value), _containers(value))
    assert json_structure(json.dumps(value).encode()) == want
