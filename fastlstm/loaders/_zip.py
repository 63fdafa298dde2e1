"""Zip archive members (PyTorch, Keras 3 and .npz files), read with their
declared sizes checked before anything inflates."""

from __future__ import annotations

import zipfile
import zlib

from fastlstm.errors import ModelFormatError

__all__ = ["MAX_RATIO", "ZIP_ERRORS", "check_member", "read_member"]

# A compressed member above 1 MiB may inflate to at most this many times its
# compressed size (zip bombs inflate thousands of times).
MAX_RATIO = 200
# What zipfile (and zlib under it) raise on corrupt archives: bad headers,
# undecodable names, unknown compression methods, encryption, bad streams.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    zlib.error,
)


def check_member(info: zipfile.ZipInfo, limit: int, where: str) -> None:
    """Refuses a member declaring more than ``limit`` bytes, or inflating
    beyond MAX_RATIO times its compressed size."""
    name = info.filename
    if info.file_size > limit:
        raise ModelFormatError(
            f"{where}: archive member {name!r} declares {info.file_size} bytes, "
            f"above the {limit}-byte limit"
        )
    if (
        info.compress_type != zipfile.ZIP_STORED
        and info.file_size > (1 << 20)
        and info.file_size > MAX_RATIO * max(info.compress_size, 1)
    ):
        raise ModelFormatError(
            f"{where}: archive member {name!r} would inflate {info.compress_size} "
            f"bytes to {info.file_size}; refused"
        )


def read_member(
    zf: zipfile.ZipFile, name: str, limit: int, where: str, need: int | None = None
) -> bytes:
    """The member's bytes (only the first ``need`` when given), after
    check_member and checking that it holds ``need`` bytes."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ModelFormatError(f"{where}: archive member {name!r} is missing") from None
    check_member(info, limit, where)
    if need is not None and info.file_size < need:
        raise ModelFormatError(
            f"{where}: archive member {name!r} holds {info.file_size} bytes, "
            f"{need} needed"
        )
    size = info.file_size if need is None else need
    try:
        with zf.open(info) as fh:
            data = fh.read(size)
    except ZIP_ERRORS as exc:
        raise ModelFormatError(f"{where}: cannot read {name!r}: {exc}") from exc
    if len(data) != size:
        raise ModelFormatError(f"{where}: archive member {name!r} is truncated")
    return data
