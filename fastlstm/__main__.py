"""Command line: ``fastlstm demo`` (or ``python -m fastlstm demo``).

Runs the bundled example model (a two-layer LSTM stack) on a masked batch,
checks the result against the float64 reference, streams the same input
step by step, and reports the speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources

import numpy as np

import fastlstm
from fastlstm import _reference

EXAMPLE = "example_stack.npz"


def load_example() -> tuple[fastlstm.Stack, dict]:
    with resources.files("fastlstm.examples").joinpath(EXAMPLE).open("rb") as f:
        weights = dict(np.load(f))
    layers = [
        fastlstm.LSTM(
            weights["layer0/kernel"],
            weights["layer0/recurrent_kernel"],
            weights["layer0/bias"],
            return_sequences=True,
        ),
        fastlstm.LSTM(
            weights["layer1/kernel"],
            weights["layer1/recurrent_kernel"],
            weights["layer1/bias"],
        ),
    ]
    return fastlstm.Stack(layers), weights


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def demo() -> int:
    model, w = load_example()
    rng = np.random.default_rng(0)
    B, T = 8, 200
    x = rng.normal(size=(B, T, model.input_size)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, B)
    mask = np.arange(T)[None, :] < lengths[:, None]  # right-padded batch

    print(f"fastlstm {fastlstm.__version__}: {model}")
    y = model(x, mask=mask)
    print(
        f"input {x.shape} (padded, mask from lengths {lengths.tolist()}) "
        f"-> output {y.shape}"
    )

    seq, *_ = _reference.lstm(
        x, w["layer0/kernel"], w["layer0/recurrent_kernel"], w["layer0/bias"], mask=mask
    )
    _, want, _, _ = _reference.lstm(
        seq,
        w["layer1/kernel"],
        w["layer1/recurrent_kernel"],
        w["layer1/bias"],
        mask=mask,
    )
    err = float(np.abs(y - want).max())
    print(f"max |fastlstm - float64 reference| = {err:.2e}")

    stream = model.stream(B)
    last = None
    for t in range(T):
        last = stream.step(x[:, t], mask=mask[:, t])
    serr = float(np.abs(last - y).max())
    print(f"streaming step by step gives the same output: max diff {serr:.2e}")

    sec = median_seconds(lambda: model(x, mask=mask), 20)
    one = model.stream(1)
    x1 = x[:1, 0]
    step = median_seconds(lambda: [one.step(x1) for _ in range(100)], 10) / 100
    print(
        f"speed: batch {B} x {T} steps in {sec * 1e3:.2f} ms "
        f"({sec / T * 1e6:.1f} us per step); one streaming step (batch 1) "
        f"{step * 1e6:.1f} us"
    )
    ok = err < 1e-5 and serr < 1e-5
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastlstm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the bundled example model and check it")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
