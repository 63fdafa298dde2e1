"""``python -m fastlstm`` and the ``fastlstm`` command (see fastlstm.cli)."""

from __future__ import annotations

import sys

from fastlstm.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
