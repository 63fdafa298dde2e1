"""Careful HDF5 access for loaders: names decoded whether stored as bytes or
str, split attributes (``layer_names0``, ``layer_names1``, ...) joined, links
refused unless they are plain hard links inside the file, and dataset sizes
bounded before anything is read."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from fastlstm.errors import ModelFormatError

# Largest dataset a loader reads (elements): far above any LSTM's weights,
# far below what would exhaust memory.
MAX_ELEMENTS = 1 << 28


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return text(value[()])
    return str(value)


def name_list(obj: h5py.Group | h5py.File, key: str, where: str) -> list[str]:
    """An attribute holding a list of names, possibly split as key0, key1, ..."""
    attrs = obj.attrs
    if key in attrs:
        raw = attrs[key]
    elif f"{key}0" in attrs:
        raw, k = [], 0
        while f"{key}{k}" in attrs:
            raw.extend(attrs[f"{key}{k}"])
            k += 1
    else:
        raise ModelFormatError(f"{where}: attribute {key!r} is missing")
    arr = np.asarray(raw)
    if arr.size == 0:
        return []  # weightless layers store an empty float64 array
    if arr.dtype.kind not in "SUO":
        raise ModelFormatError(f"{where}: attribute {key!r} is not a list of names")
    return [text(x) for x in arr.reshape(-1)]


def get(group: h5py.Group, path: str, where: str) -> Any:
    """group[path], following only hard links (no external or soft links)."""
    node = group
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, h5py.Group) or part not in node:
            raise ModelFormatError(f"{where}: {path!r} is missing")
        link = node.get(part, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise ModelFormatError(
                f"{where}: {path!r} is a {type(link).__name__}; only data stored in "
                "the file itself is read"
            )
        node = node[part]
    return node


def read_array(group: h5py.Group, path: str, where: str) -> np.ndarray:
    ds = get(group, path, where)
    if not isinstance(ds, h5py.Dataset):
        raise ModelFormatError(f"{where}: {path!r} is not a dataset")
    shape = ds.shape or ()
    size = int(np.prod(shape, dtype=np.float64)) if shape else 1
    if size > MAX_ELEMENTS:
        raise ModelFormatError(
            f"{where}: {path!r} declares shape {shape}, larger than "
            f"the {MAX_ELEMENTS}-element limit"
        )
    if ds.dtype.kind not in "fiu" and ds.attrs.get("dtype") != "bfloat16":
        raise ModelFormatError(
            f"{where}: {path!r} has dtype {ds.dtype}; numbers expected"
        )
    try:
        data = ds[()]
    except (OSError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{where}: cannot read {path!r}: {exc}") from exc
    if text(ds.attrs.get("dtype", "")) == "bfloat16":  # stored as uint16 bit patterns
        data = (np.asarray(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(data)
