"""Opening the files a load reads, and nothing else.

The file the caller names may be a symbolic link (model caches link to
blobs) but must end at a regular file: a device such as ``/dev/zero``
would never end and a FIFO would block. Companions a format defines (TF1
data shards, the TF ``checkpoint`` state file, ONNX external data) must be
plain names in the named file's own folder and regular files there, never
links. Files are opened non-blocking and checked with ``fstat`` on the open
descriptor, so a FIFO is refused without waiting for a writer and the
check applies to the very file that is read.

A model given as bytes or as a file object is read from memory under a
name in angle brackets ("<bytes>"), registered for the load in progress
(memory_source); such a model has no folder, so a format that needs
companion files refuses it with a ConfigError saying to pass a path.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, BinaryIO

from fastlstm._budget import MAX_ALLOCATION_BYTES
from fastlstm.errors import ConfigError, ModelFormatError

__all__ = [
    "check_regular",
    "companion_path",
    "in_memory",
    "memory_bytes",
    "memory_source",
    "open_companion",
    "open_model_file",
    "read_file_object",
]

# The in-memory models of the loads in progress in this context, by name.
_MEMORY: ContextVar[dict | None] = ContextVar("fastlstm_memory_sources", default=None)
READ_CHUNK = 64 << 20


@contextlib.contextmanager
def memory_source(data: bytes, name: str) -> Iterator[str]:
    """Makes ``name`` read as ``data`` by this module's functions while the
    block runs (in this thread or task only)."""
    token = _MEMORY.set({**(_MEMORY.get() or {}), name: data})
    try:
        yield name
    finally:
        _MEMORY.reset(token)


def in_memory(path: str) -> bool:
    return path in (_MEMORY.get() or {})


def memory_bytes(path: str) -> bytes | None:
    """The bytes of an in-memory model, or None for a file."""
    return (_MEMORY.get() or {}).get(path)


def read_file_object(fobj: Any, name: str) -> bytes:
    """All of a binary file object, at most MAX_ALLOCATION_BYTES (what one
    file may hold)."""
    parts, total = [], 0
    while True:
        try:
            chunk = fobj.read(READ_CHUNK)
        except OSError as exc:
            raise ModelFormatError(f"{name}: cannot read: {exc}") from None
        if not chunk:
            break
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise ConfigError(
                f"{name}: the file object gives {type(chunk).__name__}, not bytes; "
                "open the file in binary mode ('rb')"
            )
        total += len(chunk)
        if total > MAX_ALLOCATION_BYTES:
            raise ModelFormatError(
                f"{name}: more than {MAX_ALLOCATION_BYTES} bytes; refused"
            )
        parts.append(bytes(chunk))
    return b"".join(parts)


def _open(path: str, where: str, follow: bool) -> BinaryIO:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not follow and os.path.islink(path):
            raise ModelFormatError(
                f"{where}: {path} is a symbolic link; the files a model refers to "
                "are read only as regular files in its folder"
            ) from None
        what = "the file" if where == path else path
        raise ModelFormatError(f"{where}: cannot read {what}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "" if where == path else f" {path}"
            raise ModelFormatError(
                f"{where}:{what} not a regular file ({_kind(mode)}); refused"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_model_file(path: str) -> BinaryIO:
    """The file the caller named, opened for reading; refused unless it
    (or what its links lead to) is a regular file. An in-memory model reads
    from its bytes."""
    data = (_MEMORY.get() or {}).get(path)
    if data is not None:
        return io.BytesIO(data)
    return _open(path, path, follow=True)


def check_regular(path: str) -> None:
    """Refuses ``path`` unless it is a regular file (for readers that open
    by name themselves, such as h5py) or an in-memory model."""
    open_model_file(path).close()


def companion_path(folder: str, name: str, where: str) -> str:
    """``folder/name`` after checking that ``name`` is a plain file name:
    no folder separators, not ``.`` or ``..``, not absolute."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or (os.sep != "/" and os.sep in name)
        or (os.altsep is not None and os.altsep in name)
        or "\0" in name
    ):
        raise ModelFormatError(
            f"{where}: refers to {name!r}, which is not a file name in the "
            "model's own folder; refused"
        )
    return os.path.join(folder, name)


def open_companion(folder: str, name: str, where: str) -> BinaryIO:
    """A companion file of the model: a plain name in ``folder``, a regular
    file, not a link. A model read from memory has none (whatever name a
    reader's message gives it, any companion asked for during such a load
    is refused)."""
    if _MEMORY.get():
        raise ConfigError(
            f"{where}: the model refers to the file {name!r} beside it, and a "
            "model given as bytes or a file object has no folder; load it by "
            "path"
        )
    return _open(companion_path(folder, name, where), where, follow=False)
