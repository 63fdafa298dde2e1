"""``fastlstm bench``: the benchmark against the installed peers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastlstm.bench.cases import CASES
from fastlstm.bench.report import markdown
from fastlstm.bench.runner import PEERS, run, write

DEFAULT_OUT = "fastlstm-bench"


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    listing = "\n".join(f"  {k}  {v}" for k, v in CASES.items())
    p = sub.add_parser(
        "bench",
        help="time fastlstm against ONNX Runtime, PyTorch, NumPy and Keras",
        description="Times fastlstm and the installed peers on the same weights "
        "(pip install 'fastlstm[bench]' for all of them). Cases:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="fewer sizes, shorter timing")
    p.add_argument(
        "--cases",
        default="".join(CASES),
        metavar="LETTERS",
        help="the cases to run, e.g. 'ab' or 'a,g' (default: all)",
    )
    p.add_argument(
        "--peers",
        default="onnxruntime,pytorch,numpy,keras",
        help="comma-separated peers to time besides fastlstm (default: all)",
    )
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder for latest.md, latest.json and case_*.png (default: "
        f"./{DEFAULT_OUT})",
    )


def bench(args: argparse.Namespace) -> int:
    selected = {c for c in args.cases.replace(",", "") if not c.isspace()}
    unknown = sorted(selected - set(CASES))
    if unknown or not selected:
        print(
            f"fastlstm: --cases: unknown {unknown or args.cases!r}; the cases "
            f"are {', '.join(CASES)}",
            file=sys.stderr,
        )
        return 2
    wanted = {p.strip() for p in args.peers.split(",") if p.strip()}
    bad = sorted(wanted - set(PEERS))
    if bad:
        print(
            f"fastlstm: --peers: unknown {bad}; the peers are {', '.join(PEERS)}",
            file=sys.stderr,
        )
        return 2
    report = run(selected, args.quick, wanted, sys.stderr)
    paths = write(report, Path(args.out))
    print(markdown(report))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0
