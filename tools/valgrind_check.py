"""Runs tools/valgrind_loop.py under valgrind memcheck and sorts every
reported error and definite leak by whether a fastlstm frame (the extension
or the C core) is in its stack. Exits 1 if any is; the others come from
CPython itself (built without valgrind support) and are counted, not failed.

    python tools/valgrind_check.py [--keep vg.txt]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = re.compile(r"_core\.cpython|fastlstm[/.]|\bfl_\w+ \(|src_c/")


def records(text: str) -> list[list[str]]:
    """valgrind's report split into its blank-line separated records."""
    out, cur = [], []
    for line in text.splitlines():
        m = re.match(r"==\d+== ?(.*)", line)
        if not m:
            continue
        if m.group(1):
            cur.append(m.group(1))
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def is_problem(head: str) -> bool:
    return "definitely lost" in head or head.startswith(
        (
            "Invalid",
            "Use of uninitialised",
            "Conditional jump",
            "Syscall param",
            "Mismatched free",
            "Source and destination overlap",
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="also write valgrind's report here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "vg.txt"
        cmd = [
            "valgrind",
            "--leak-check=full",
            "--show-leak-kinds=definite",
            "--num-callers=40",
            f"--log-file={log}",
            os.path.realpath(sys.executable),
            str(ROOT / "tools" / "valgrind_loop.py"),
        ]
        env = dict(os.environ, PYTHONMALLOC="malloc", PYTHONPATH=str(ROOT))
        subprocess.run(cmd, env=env, check=True)
        text = log.read_text()
    if args.keep:
        Path(args.keep).write_text(text)
    counts: collections.Counter = collections.Counter()
    ours = []
    for rec in records(text):
        if not is_problem(rec[0]):
            continue
        leak = "definitely lost" in rec[0]
        kind = "definite leak" if leak else rec[0].split(" at ")[0]
        mine = any(OURS.search(line) for line in rec[1:])
        counts[(kind, "fastlstm" if mine else "elsewhere")] += 1
        if mine:
            ours.append(rec)
    for (kind, where), n in sorted(counts.items()):
        print(f"{n:6d}  {kind}  [{where}]")
    for rec in ours:
        print("\n".join(rec), "\n")
    print(f"records with a fastlstm frame: {len(ours)}")
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
