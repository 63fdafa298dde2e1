"""The fastlstm command.

fastlstm demo                    run the bundled Keras model, check it
                                 against Keras' own output, time it
fastlstm inspect FILE [--json]   format, producer, inputs, outputs, layers
fastlstm check FILE              0: runs; 1: unsupported layers (listed);
                                 2: corrupt, not a model, or needs an option
fastlstm run FILE INPUT OUTPUT   the model over a .npy/.npz of inputs
fastlstm bench [--quick] [--cases LETTERS] [--out DIR]
                                 time fastlstm against the installed peers

Subcommands that load a model take --config, --prefix, --batch-first /
--no-batch-first, --nonlinearity and --threads (as fastlstm.load does).
"""

from __future__ import annotations

import argparse

import fastlstm
from fastlstm.cli.bench import add_bench_parser, bench
from fastlstm.cli.inspect import demo, inspect
from fastlstm.cli.options import add_load_options, load_options
from fastlstm.cli.run import check, run

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastlstm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"fastlstm {fastlstm.__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the bundled Keras model and check it")
    ins = sub.add_parser("inspect", help="describe a model file")
    ins.add_argument("file")
    ins.add_argument("--json", action="store_true", help="as a JSON object")
    chk = sub.add_parser("check", help="does the model load and run?")
    chk.add_argument("file")
    rn = sub.add_parser("run", help="run a model over a .npy/.npz of inputs")
    rn.add_argument("file")
    rn.add_argument("input", help=".npy (one input) or .npz (by input name)")
    rn.add_argument("output", help=".npy (one output) or .npz (by output name)")
    rn.add_argument(
        "--batch-size", type=int, default=1024, metavar="N", help="rows per call"
    )
    for p in (ins, chk, rn):
        add_load_options(p)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return demo()
    if args.command == "bench":
        return bench(args)
    options = load_options(args)
    if args.command == "inspect":
        return inspect(args.file, options, args.json)
    if args.command == "check":
        return check(args.file, options)
    if args.batch_size < 1:
        print("fastlstm: --batch-size must be at least 1")
        return 1
    return run(args.file, args.input, args.output, options, args.batch_size)
