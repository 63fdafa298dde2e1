"""The byte budget of one load.

Every size a file controls is checked here before anything of that size is
allocated, in Python integers (which cannot overflow): no single allocation
may exceed ``MAX_ALLOCATION_BYTES``, and all of a load's file-declared
allocations together may not exceed what the file really stores times the
format's legitimate expansion, plus a small constant (``SLACK_BYTES``) so
that tiny files still load.
"""

from __future__ import annotations

from fastlstm.errors import ModelFormatError

__all__ = ["MAX_ALLOCATION_BYTES", "SLACK_BYTES", "ByteBudget", "check_allocation"]

# The largest array a load may make: 2^32 float32 values, the largest array
# the engine accepts (spec.MAX_ELEMENTS). Files must also really store what
# they declare (ByteBudget), so this cap is the last line, not the first.
MAX_ALLOCATION_BYTES = 1 << 34
SLACK_BYTES = 64 << 20


def check_allocation(nbytes: int, where: str, what: str) -> int:
    """``nbytes`` after checking it against the absolute cap."""
    if nbytes < 0 or nbytes > MAX_ALLOCATION_BYTES:
        raise ModelFormatError(
            f"{where}: {what} needs {nbytes} bytes, above the "
            f"{MAX_ALLOCATION_BYTES}-byte limit of one allocation"
        )
    return nbytes


class ByteBudget:
    """What one load may still allocate from sizes its file declares.

    ``stored`` is what the file really holds (bytes on disk, or inflated
    bytes already checked against the compression cap) and ``expansion``
    how many times that a legitimate file of the format can need.
    """

    def __init__(self, where: str, stored: int, expansion: int = 1) -> None:
        self.where = where
        self.limit = stored * expansion + SLACK_BYTES
        self.left = self.limit

    def add_stored(self, nbytes: int) -> None:
        """More bytes the load really holds (a companion file opened)."""
        self.limit += nbytes
        self.left += nbytes

    def fits(self, nbytes: int) -> bool:
        """Takes ``nbytes`` if spend() would, and says whether it did: the
        hot path of ops charged once per call, whose error message (built
        by spend) costs more than the check."""
        if 0 <= nbytes <= self.left and nbytes <= MAX_ALLOCATION_BYTES:
            self.left -= nbytes
            return True
        return False

    def spend(self, nbytes: int, what: str) -> None:
        check_allocation(nbytes, self.where, what)
        if nbytes > self.left:
            raise ModelFormatError(
                f"{self.where}: {what} needs {nbytes} bytes; the file holds too "
                f"little data for that (this load may allocate {self.limit} "
                "bytes from what the file declares)"
            )
        self.left -= nbytes
