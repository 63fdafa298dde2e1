"""Careful HDF5 access for loaders: names decoded whether stored as bytes or
str, split attributes (``layer_names0``, ``layer_names1``, ...) joined, links
refused unless they are plain hard links inside the file, and dataset sizes
bounded before anything is read."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from fastlstm.errors import ModelFormatError
from fastlstm.loaders._h5_vlen import check_vlen_attribute

# Largest dataset a loader reads (elements): far above any LSTM's weights,
# far below what would exhaust memory.
MAX_ELEMENTS = 1 << 28
# A dataset above 1 MiB may not declare more bytes than the file holds
# (times MAX_RATIO when it is compressed): a corrupt shape must not make
# h5py allocate gigabytes before finding the data is not there.
MAX_RATIO = 200


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return text(value[()])
    return str(value)


MAX_ATTR_BYTES = 64 << 20  # model_config JSON, layer and weight name lists


def attr(obj: Any, key: str, where: str, default: Any = None) -> Any:
    """obj.attrs[key] (``default`` if absent) after checking its declared
    size: a corrupt dataspace must not make h5py allocate gigabytes."""
    attrs = obj.attrs
    if key not in attrs:
        return default
    try:
        aid = attrs.get_id(key)
        n = int(np.prod(aid.shape, dtype=np.float64)) if aid.shape else 1
        nbytes = n * max(aid.dtype.itemsize, 1)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelFormatError(f"{where}: unreadable attribute {key!r}: {exc}") from exc
    if aid.dtype.fields is not None or aid.dtype.subdtype is not None:
        raise ModelFormatError(
            f"{where}: attribute {key!r} has the compound type {aid.dtype}; "
            "a string, a list of strings or numbers expected"
        )
    if aid.dtype.kind == "O":  # variable length: descriptors checked first
        check_vlen_attribute(obj, key, where)
    if nbytes > MAX_ATTR_BYTES:
        raise ModelFormatError(
            f"{where}: attribute {key!r} declares {nbytes} bytes (shape "
            f"{aid.shape}), above the {MAX_ATTR_BYTES}-byte limit"
        )
    return attrs[key]


def name_list(obj: h5py.Group | h5py.File, key: str, where: str) -> list[str]:
    """An attribute holding a list of names, possibly split as key0, key1, ..."""
    attrs = obj.attrs
    if key in attrs:
        raw = attr(obj, key, where)
    elif f"{key}0" in attrs:
        raw, k = [], 0
        while f"{key}{k}" in attrs:
            raw.extend(attr(obj, f"{key}{k}", where))
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
    _check_storage(ds, size, path, where)
    dtype_attr = attr(ds, "dtype", where, "")
    if ds.dtype.kind not in "fiu" and dtype_attr != "bfloat16":
        raise ModelFormatError(
            f"{where}: {path!r} has dtype {ds.dtype}; numbers expected"
        )
    try:
        data = ds[()]
    except (OSError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{where}: cannot read {path!r}: {exc}") from exc
    if text(dtype_attr) == "bfloat16":  # stored as uint16 bit patterns
        data = (np.asarray(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(data)


def _check_storage(ds: h5py.Dataset, size: int, path: str, where: str) -> None:
    nbytes = size * ds.dtype.itemsize
    if nbytes <= (1 << 20):
        return
    try:
        file_bytes = ds.file.id.get_filesize()
        filtered = ds.id.get_create_plist().get_nfilters() > 0
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{where}: cannot inspect {path!r}: {exc}") from exc
    if nbytes > file_bytes * (MAX_RATIO if filtered else 1):
        raise ModelFormatError(
            f"{where}: {path!r} declares shape {ds.shape} ({nbytes} bytes), more "
            f"than the {file_bytes}-byte file can hold"
        )
