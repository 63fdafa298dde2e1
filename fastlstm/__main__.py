"""Command line.

fastlstm demo          load the bundled Keras model, run it, compare it with
                       the output Keras gave, time it
fastlstm inspect FILE  format, Keras version, layers, shapes, parameters
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources

import numpy as np

import fastlstm

EXAMPLE_MODEL = "example_model.h5"
EXAMPLE_IO = "example_io.npz"


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def demo() -> int:
    files = resources.files("fastlstm.examples")
    with resources.as_file(files.joinpath(EXAMPLE_MODEL)) as path:
        model = fastlstm.load(path)
    with files.joinpath(EXAMPLE_IO).open("rb") as fh:
        io = dict(np.load(fh))
    x, want, lengths = io["x"], io["y"], io["lengths"]
    print(
        f"fastlstm {fastlstm.__version__}: loaded the bundled {EXAMPLE_MODEL} "
        f"({model.spec.source_format}, written by Keras {model.spec.keras_version})"
    )
    model.summary()
    y = model.predict(x)
    err = float(np.abs(y - want).max())
    print(
        f"\ninput: {x.shape[0]} sequences of {x.shape[1]} steps x {x.shape[2]} "
        f"features, zero-padded after {lengths.tolist()} steps (Masking)"
    )
    print("fastlstm:", np.array2string(y[:, 0], precision=6))
    print("Keras:   ", np.array2string(want[:, 0], precision=6))
    print(f"max |fastlstm - Keras| = {err:.2e}")

    stream = model.stream(x.shape[0])
    for t in range(x.shape[1]):
        out = stream.step(x[:, t])
    serr = float(np.abs(out - y).max())
    print(f"streamed step by step: same output (max diff {serr:.2e})")

    batch = median_seconds(lambda: model.predict(x), 30)
    one = median_seconds(lambda: model.predict(x[:1]), 30)
    print(
        f"time per prediction: batch of {x.shape[0]}: {batch * 1e3:.2f} ms; "
        f"one sequence: {one * 1e3:.2f} ms"
    )
    ok = err < 1e-5 and serr < 1e-5
    print("OK: fastlstm reproduces Keras" if ok else "MISMATCH")
    return 0 if ok else 1


def inspect(path: str, batch_first: bool | None = None) -> int:
    note = None
    try:
        try:
            kw = {} if batch_first is None else {"batch_first": batch_first}
            model = fastlstm.load(path, **kw)
        except fastlstm.ConfigError as exc:
            if batch_first is not None or "does not record" not in str(exc):
                raise
            # describing the weights does not need what the file lacks;
            # running them does
            lacks_act = "nonlinearity" in str(exc)
            kw = {"nonlinearity": "tanh"} if lacks_act else {}
            model = fastlstm.load(path, batch_first=False, **kw)
            note = "not recorded in the file: pass --batch-first or --no-batch-first"
            if lacks_act:
                note += "; nor is the nonlinearity (shown as tanh)"
    except fastlstm.FastLSTMError as exc:
        print(f"fastlstm: {exc}", file=sys.stderr)
        return 1
    if not isinstance(model, fastlstm.Model):  # PyTorch, TF1 or ONNX model
        print(f"file:          {path}")
        print(f"model:         {model!r}")
        if note:
            print(f"batch_first:   {note}")
        return 0
    spec = model.spec
    print(f"file:          {path}")
    print(f"format:        {spec.source_format}")
    print(f"Keras version: {spec.keras_version}")
    names = ", ".join(f"{n} {s}" for n, s in zip(model.input_names, model.inputs))
    print(f"inputs:        {names}")
    print(f"outputs:       {model.outputs}")
    model.summary()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastlstm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the bundled Keras model and check it")
    ins = sub.add_parser("inspect", help="describe a model file")
    ins.add_argument("file")
    ins.add_argument(
        "--batch-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="how a PyTorch nn.LSTM takes its input (the file does not record it)",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    return inspect(args.file, args.batch_first)


if __name__ == "__main__":
    sys.exit(main())
