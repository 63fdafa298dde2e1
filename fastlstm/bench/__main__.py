"""``python -m fastlstm.bench``: the same as ``fastlstm bench``."""

import sys

from fastlstm.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
