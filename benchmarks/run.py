"""The benchmark, writing its results to the tracked benchmarks/results/:

    python benchmarks/run.py [--quick] [--cases LETTERS] [--peers ...]

The same as ``fastlstm bench --out benchmarks/results`` (the code is in
fastlstm/bench/; ``fastlstm bench --help`` lists the cases).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastlstm.cli import main

if __name__ == "__main__":
    results = str(Path(__file__).resolve().parent / "results")
    args = sys.argv[1:]
    given = any(a == "--out" or a.startswith("--out=") for a in args)
    raise SystemExit(main(["bench", *args] + ([] if given else ["--out", results])))
