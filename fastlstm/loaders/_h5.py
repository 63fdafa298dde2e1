"""Careful HDF5 access for loaders: names decoded whether stored as bytes or
str, split attributes (``layer_names0``, ``layer_names1``, ...) joined, links
refused unless they are plain hard links inside the file, and datasets
checked (storage, filters, types, sizes against a byte budget) before
anything is read."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5z

from fastlstm._budget import ByteBudget
from fastlstm.errors import ModelFormatError
from fastlstm.loaders._h5_vlen import check_vlen_attribute

# Largest dataset a loader reads (elements): far above any LSTM's weights,
# far below what would exhaust memory.
MAX_ELEMENTS = 1 << 28
# A dataset may not declare more bytes than are stored for it (times
# MAX_RATIO when it is compressed), give or take MAX_SMALL_BYTES: a corrupt
# shape must not make h5py allocate gigabytes before finding the data is
# not there. Chunks may not be larger than that either.
MAX_RATIO = 200
MAX_SMALL_BYTES = 1 << 20
# Filters h5py writes by itself; any other (or a plugin) is refused.
ALLOWED_FILTERS = {
    h5z.FILTER_DEFLATE: "gzip",
    h5z.FILTER_SHUFFLE: "shuffle",
    h5z.FILTER_FLETCHER32: "fletcher32",
    32000: "lzf",
}


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


def read_array(
    group: h5py.Group, path: str, where: str, budget: ByteBudget
) -> np.ndarray:
    """The dataset at ``path`` as an array, after every check that can be
    made without reading it (see ``check_dataset``)."""
    ds = get(group, path, where)
    if not isinstance(ds, h5py.Dataset):
        raise ModelFormatError(f"{where}: {path!r} is not a dataset")
    bfloat16 = text(attr(ds, "dtype", where, "")) == "bfloat16"
    check_dataset(ds, path, where, budget, bfloat16)
    try:
        data = ds[()]
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelFormatError(f"{where}: cannot read {path!r}: {exc}") from exc
    if bfloat16:  # stored as uint16 bit patterns
        data = (np.asarray(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(data)


def budget_for(f: h5py.File, where: str) -> ByteBudget:
    """The budget of stored bytes one HDF5 file's datasets may claim."""
    try:
        return ByteBudget(where, f.id.get_filesize())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{where}: cannot inspect the HDF5 file: {exc}") from exc


def check_dataset(
    ds: h5py.Dataset, path: str, where: str, budget: ByteBudget, bfloat16: bool
) -> None:
    """Refuses, before any of its data is read, a dataset that is not plain
    numbers stored in this file: external raw-data files, virtual datasets
    (sources in other files), filters outside ALLOWED_FILTERS, non-numeric
    types, chunks larger than the dataset needs, and declared sizes the
    stored bytes cannot back. Its stored bytes are charged to ``budget``,
    so datasets that overlap in the file cannot claim it twice."""
    dtype = ds.dtype
    if bfloat16 and dtype != np.uint16:
        raise ModelFormatError(
            f"{where}: {path!r} claims bfloat16 but stores {dtype}; uint16 expected"
        )
    if dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise ModelFormatError(f"{where}: {path!r} has dtype {dtype}; numbers expected")
    shape = ds.shape or ()
    size = int(np.prod(shape, dtype=object)) if shape else 1
    if size > MAX_ELEMENTS:
        raise ModelFormatError(
            f"{where}: {path!r} declares shape {shape}, larger than "
            f"the {MAX_ELEMENTS}-element limit"
        )
    nbytes = size * dtype.itemsize
    try:
        # h5py keeps the creation property list it read when it opened the
        # dataset; reading it again costs more than the other checks together
        dcpl = getattr(ds, "_dcpl", None) or ds.id.get_create_plist()
        layout = dcpl.get_layout()
        externals = dcpl.get_external_count()
        filters = [dcpl.get_filter(k)[0] for k in range(dcpl.get_nfilters())]
        chunk = dcpl.get_chunk() if layout == h5d.CHUNKED else None
        stored = ds.id.get_storage_size()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelFormatError(f"{where}: cannot inspect {path!r}: {exc}") from exc
    if externals or layout not in (h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED):
        raise ModelFormatError(
            f"{where}: {path!r} keeps its data outside the file ("
            + ("external raw-data files" if externals else "a virtual dataset")
            + "); only data stored in the file itself is read"
        )
    unknown = [code for code in filters if code not in ALLOWED_FILTERS]
    if unknown:
        raise ModelFormatError(
            f"{where}: {path!r} uses HDF5 filter(s) {unknown}; allowed: "
            + ", ".join(sorted(ALLOWED_FILTERS.values()))
        )
    if chunk is not None:
        chunk_bytes = int(np.prod(chunk, dtype=object)) * dtype.itemsize
        if chunk_bytes > max(nbytes, MAX_SMALL_BYTES):
            raise ModelFormatError(
                f"{where}: {path!r} is stored in chunks of {chunk_bytes} bytes for "
                f"{nbytes} bytes of data; refused"
            )
    ratio = MAX_RATIO if filters else 1
    if nbytes > stored * ratio + MAX_SMALL_BYTES:
        raise ModelFormatError(
            f"{where}: {path!r} declares shape {shape} ({nbytes} bytes), more "
            f"than the {stored} bytes stored for it can hold"
        )
    budget.spend(stored, f"{path!r} ({stored} stored bytes)")
