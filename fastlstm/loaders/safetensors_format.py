"""``.safetensors`` files (huggingface/safetensors): an 8-byte
little-endian header length N, N bytes of UTF-8 JSON ``{name: {"dtype":
"F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__":
{...}}``, then the byte buffer (offsets relative to its start, C order,
little-endian). Every offset, size and overlap is checked before a byte is
interpreted; float tensors come back as float32 NumPy arrays.
"""

from __future__ import annotations

import os
import reprlib
from typing import Any

import numpy as np

from fastlstm.errors import ModelFormatError
from fastlstm.loaders._files import open_model_file
from fastlstm.loaders._json import parse_json

__all__ = ["load_safetensors", "looks_like_safetensors", "parse_safetensors"]

MAX_HEADER_BYTES = 100 << 20  # the reference implementation's own limit
MAX_NDIM = 32
DTYPES = {
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # bit patterns, widened to float32
    "F64": "<f8",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """8-byte header length that fits the file, followed by '{'."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= min(size - 8, MAX_HEADER_BYTES) and head[8:9] == b"{"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxstring = 3, 8, 60


def _short(value: Any) -> str:
    """A bounded repr: header values may nest deeply or be huge."""
    return _REPR.repr(value)


def parse_safetensors(data: bytes | memoryview, where: str) -> dict[str, np.ndarray]:
    """{name: array} from the bytes of a whole .safetensors file."""
    data = memoryview(data)
    if len(data) < 8:
        raise ModelFormatError(f"{where}: too short for a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise ModelFormatError(
            f"{where}: safetensors header length {n} is absurd (limit "
            f"{MAX_HEADER_BYTES})"
        )
    if 8 + n > len(data):
        raise ModelFormatError(
            f"{where}: header of {n} bytes but the file has only {len(data) - 8} "
            "after the length field (truncated)"
        )
    header = parse_json(bytes(data[8 : 8 + n]), where, "the safetensors header")
    if not isinstance(header, dict):
        raise ModelFormatError(f"{where}: the header is not a JSON object")
    buffer = data[8 + n :]
    spans = []
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        out[name] = _tensor(buffer, name, info, where, spans)
    spans.sort()
    for (_, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ModelFormatError(
                f"{where}: tensors {n0!r} and {n1!r} overlap in the buffer"
            )
    return out


def _tensor(
    buffer: memoryview, name: str, info: Any, where: str, spans: list
) -> np.ndarray:
    if not isinstance(info, dict):
        raise ModelFormatError(f"{where}: header entry {name!r} is not an object")
    dtype, shape, offsets = (info.get(k) for k in ("dtype", "shape", "data_offsets"))
    if dtype not in DTYPES:
        raise ModelFormatError(
            f"{where}: tensor {name!r} has dtype {dtype!r}; supported: "
            + ", ".join(DTYPES)
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or any(d < 0 for d in shape)
    ):
        raise ModelFormatError(f"{where}: tensor {name!r} has shape {_short(shape)}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise ModelFormatError(
            f"{where}: tensor {name!r} has data_offsets {_short(offsets)}"
        )
    begin, end = offsets
    np_dtype = np.dtype(DTYPES[dtype])
    count = 1
    for d in shape:
        count *= d
    if not 0 <= begin <= end <= len(buffer):
        raise ModelFormatError(
            f"{where}: tensor {name!r} spans bytes [{begin}, {end}) of a "
            f"{len(buffer)}-byte buffer"
        )
    if end - begin != count * np_dtype.itemsize:
        raise ModelFormatError(
            f"{where}: tensor {name!r} of shape {tuple(shape)} and dtype {dtype} "
            f"needs {count * np_dtype.itemsize} bytes, data_offsets give "
            f"{end - begin}"
        )
    if end > begin:
        spans.append((begin, end, name))
    arr = np.frombuffer(buffer[begin:end], np_dtype).reshape(shape)
    if dtype == "BF16":  # exactly: NumPy has no bfloat16
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np_dtype.newbyteorder("="))


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = os.fspath(path)
    try:
        with open_model_file(path) as fh:
            data = fh.read()
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read the file: {exc}") from exc
    return parse_safetensors(data, path)
