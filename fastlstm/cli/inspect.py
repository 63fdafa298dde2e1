"""``fastlstm demo`` and ``fastlstm inspect``: the bundled model run and
checked against Keras' own output; a model file described."""

from __future__ import annotations

import json
import sys
import time
from importlib import resources
from typing import Any

import numpy as np

import fastlstm
from fastlstm.cli.options import describe

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


def inspect(path: str, options: dict, as_json: bool = False) -> int:
    """Describes a model file; 1 if it cannot be loaded."""
    note = None
    try:
        try:
            model = fastlstm.load(path, **options)
        except fastlstm.ConfigError as exc:
            if "batch_first" in options or "does not record" not in str(exc):
                raise
            # describing the weights does not need what the file lacks;
            # running them does
            lacks_act = "nonlinearity" in str(exc) and "nonlinearity" not in options
            extra = {"nonlinearity": "tanh"} if lacks_act else {}
            model = fastlstm.load(path, **options, batch_first=False, **extra)
            note = "not recorded in the file: pass --batch-first or --no-batch-first"
            if lacks_act:
                note += "; nor is the nonlinearity (shown as tanh)"
    except fastlstm.FastLSTMError as exc:
        print(f"fastlstm: {exc}", file=sys.stderr)
        return 1
    info = describe(model, path)
    if note:
        info["notes"] = [f"batch_first: {note}"]
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    _print_description(info)
    if isinstance(model, fastlstm.Model):
        model.summary()
    return 0


def _print_description(info: dict) -> None:
    def shape(s: Any) -> str:
        return "?" if s is None else "(" + ", ".join(str(d) for d in s) + ")"

    print(f"file:       {info['file']}")
    print(
        f"format:     {info['format']}"
        + (f" (written by {info['producer']})" if info["producer"] else "")
    )
    print(f"model:      {info['repr']}")
    print(
        "inputs:     "
        + ", ".join(f"{x['name']} {shape(x['shape'])}" for x in info["inputs"])
    )
    print(
        "outputs:    "
        + ", ".join(
            x["name"] + ("" if x["shape"] is None else f" {shape(x['shape'])}")
            for x in info["outputs"]
        )
    )
    print(f"parameters: {info['parameters']}")
    for note in info.get("notes", []):
        print(f"note:       {note}")
    if info["model"] != "Model":  # a Keras model prints its own summary
        print("layers:")
        for layer in info["layers"]:
            print(
                f"  {layer['name']:<28} {layer['class']:<22} {layer['parameters']:>10}"
            )
