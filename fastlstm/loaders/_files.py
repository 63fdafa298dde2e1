"""Opening the files a load reads, and nothing else.

The file the caller names may be a symbolic link (model caches link to
blobs) but must end at a regular file: a device such as ``/dev/zero``
would never end and a FIFO would block. Companions a format defines (TF1
data shards, the TF ``checkpoint`` state file, ONNX external data) must be
plain names in the named file's own folder and regular files there, never
links. Files are opened non-blocking and checked with ``fstat`` on the open
descriptor, so a FIFO is refused without waiting for a writer and the
check applies to the very file that is read.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from fastlstm.errors import ModelFormatError

__all__ = ["check_regular", "companion_path", "open_companion", "open_model_file"]


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
    (or what its links lead to) is a regular file."""
    return _open(path, path, follow=True)


def check_regular(path: str) -> None:
    """Refuses ``path`` unless it is a regular file (for readers that open
    by name themselves, such as h5py)."""
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
    file, not a link."""
    return _open(companion_path(folder, name, where), where, follow=False)
