"""Times fastlstm's one-thread benchmark rows in two builds, interleaved.

    python benchmarks/compare_builds.py BEFORE_TREE AFTER_TREE [--rounds 5]

Each tree is a source checkout built in place (``python setup.py
build_ext --inplace``) that has fastlstm/bench/ (the timing code). Each
round runs one child process per tree, the first tree first in odd rounds
and second in even ones, so a slow spell of the host (or the order) falls
on both;
the table gives each row's median over the rounds and the ratio
after / before. Used to check that a change keeps speed (within 3%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def cases() -> list[tuple]:
    """(name, kind, B, T, I, H) of run.py's one-thread rows."""
    out = [(f"a step H={H}", "step", 1, 1, 64, H) for H in (32, 64, 128, 256, 512)]
    out += [
        (f"b seq B=1 T=1000 H={H}", "seq", 1, 1000, H, H) for H in (32, 128, 256, 512)
    ]
    out += [
        ("c batch B=64 T=100 H=256", "seq", 64, 100, 128, 256),
        ("c batch B=64 T=1000 H=512", "seq", 64, 1000, 128, 512),
        ("f decaying state H=128", "decay", 1, 1000, 128, 128),
    ]
    return out


def child(tree: str) -> None:
    """Prints {row: microseconds per step or call} for the build in tree."""
    sys.path.insert(0, tree)
    from threadpoolctl import threadpool_limits

    import fastlstm
    from fastlstm.bench.timing import median_time
    from fastlstm.bench.workloads import decaying_weights, weights

    assert fastlstm.__file__.startswith(tree), fastlstm.__file__
    result = {}
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        for name, kind, B, T, I, H in cases():
            w = decaying_weights(I, H) if kind == "decay" else weights(I, H)
            layer = fastlstm.LSTM(*w.values(), return_sequences=True, threads=1)
            if kind == "step":
                stream = layer.stream(B)
                out = np.empty((B, H), np.float32)
                x = rng.normal(size=(B, I)).astype(np.float32)
                step = stream.step
                sec = median_time(
                    lambda v, step=step, out=out: step(v, out=out), x, False
                )
            else:
                x = rng.normal(size=(B, T, I)).astype(np.float32)
                sec = median_time(layer, x, False) / T
            result[name] = sec * 1e6
        examples = Path(fastlstm.__file__).parent / "examples"
        model = fastlstm.load(examples / "example_model.h5")
        xs = np.load(examples / "example_io.npz")["x"]
        for key, x in (("batch1", xs[:1]), ("batch32", np.repeat(xs, 4, axis=0))):
            sec = median_time(model.predict, x, False)
            result[f"d Keras model predict, {key}"] = sec * 1e6
    print(json.dumps(result))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the Markdown table here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    trees = {
        "before": os.path.abspath(args.before),
        "after": os.path.abspath(args.after),
    }
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(args.rounds):
        # alternate which build goes first: the second of a pair may run
        # on a warmer (or throttled) core
        order = list(trees.items())
        for label, tree in order if r % 2 == 0 else order[::-1]:
            proc = subprocess.run(
                [sys.executable, __file__, "x", "y", "--child", tree],
                capture_output=True,
                text=True,
                check=True,
                cwd=tempfile.gettempdir(),
            )
            runs[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {label} done", file=sys.stderr)
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; {args.rounds} interleaved rounds; "
        "medians in us (per step for sequences, per call for the model)",
        "",
        "| row | before | after | after / before |",
        "|---|---|---|---|",
    ]
    for name in runs["before"][0]:
        b = float(np.median([r[name] for r in runs["before"]]))
        a = float(np.median([r[name] for r in runs["after"]]))
        lines.append(f"| {name} | {b:.3f} | {a:.3f} | {a / b:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
