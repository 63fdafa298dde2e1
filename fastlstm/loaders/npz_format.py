""".npz archives of variables (``np.savez``), read with their sizes checked.

NumPy's own reader allocates the shape a member's ``.npy`` header declares
before it reads the data, and inflates compressed members without limit.
Here each header is parsed first (with NumPy's header parser) and refused
unless the member really holds the declared bytes, compressed members may
not inflate beyond MAX_RATIO times their size, object arrays are refused,
and all members together are charged to the load's byte budget.
"""

from __future__ import annotations

import zipfile

import numpy as np
from numpy.lib import format as npy_format

from fastlstm._budget import MAX_ALLOCATION_BYTES, ByteBudget
from fastlstm.errors import ModelFormatError
from fastlstm.loaders._files import open_model_file
from fastlstm.loaders._zip import MAX_RATIO, ZIP_ERRORS, check_member

__all__ = ["read_npz"]

MAX_MEMBERS = 100_000


def read_npz(path: str) -> dict[str, np.ndarray]:
    """{name: array} of an .npz file (names without ``.npy``)."""
    try:
        with open_model_file(path) as fh, zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ModelFormatError(f"{path}: {len(infos)} members; refused")
            stored = sum(info.compress_size for info in infos)
            budget = ByteBudget(path, stored, MAX_RATIO)
            return {
                info.filename[: -len(".npy")]: _member(zf, info, path, budget)
                for info in infos
            }
    except ModelFormatError:
        raise
    except ZIP_ERRORS as exc:
        raise ModelFormatError(f"{path}: unreadable .npz archive: {exc}") from exc


def _member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, budget: ByteBudget
) -> np.ndarray:
    name = info.filename
    where = f"{path}: member {name!r}"
    if not name.endswith(".npy"):
        raise ModelFormatError(f"{where} is not an .npy array")
    check_member(info, MAX_ALLOCATION_BYTES, path)
    budget.spend(info.file_size, name)
    with zf.open(info) as member:
        try:
            version = npy_format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(member)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(member)
        except (ValueError, TypeError, SyntaxError) as exc:
            raise ModelFormatError(f"{where}: bad .npy header: {exc}") from exc
        header = member.tell()
        if dtype.hasobject:
            raise ModelFormatError(f"{where} holds Python objects; refused")
        count = 1
        for n in shape:
            count *= n
        nbytes = count * dtype.itemsize
        if nbytes > info.file_size - header:
            raise ModelFormatError(
                f"{where} declares shape {shape} ({nbytes} bytes) but holds "
                f"{info.file_size - header}"
            )
        data = member.read(nbytes)
    if len(data) != nbytes:
        raise ModelFormatError(f"{where} is truncated")
    arr = np.frombuffer(data, dtype)
    return arr.reshape(shape, order="F" if fortran else "C")
