"""Per-step cost of a Keras model stream against one bare engine step of
its recurrent layers, at batch 1, one thread:

  seed     Masking -> LSTM(16) -> Dense(2, sigmoid), 8 features
  bundled  fastlstm/examples/example_model.h5: Masking -> LSTM(64) ->
           LSTM(32) -> Dense(1), 16 features

Each round times, in turn, the model stream's step (in C), the same
stream stepping through the graph (one NumPy call per layer), and a bare
engine stream step of each recurrent layer (LSTM.stream(1).step, summed);
all with out=. The rounds alternate because the VM's speed drifts; the
table gives medians over rounds.

    python benchmarks/model_stream.py [--steps 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

import fastlstm
from fastlstm.bench.rows import bare_steps
from fastlstm.engine import model_stream
from fastlstm.model_spec import DenseSpec, MaskingSpec, RecurrentSpec, sequential
from fastlstm.spec import LSTMSpec


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def seed_model() -> fastlstm.Model:
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.1, shape).astype(np.float32)

    cell = LSTMSpec(kernel=w(8, 64), recurrent_kernel=w(16, 64), bias=w(64))
    layers = (
        MaskingSpec("masking", "Masking"),
        RecurrentSpec("lstm", "LSTM", cells=(cell,)),
        DenseSpec("dense", "Dense", kernel=w(16, 2), bias=w(2), activation="sigmoid"),
    )
    spec = sequential(layers, name="seed", input_shape=(None, None, 8))
    return fastlstm.Model(spec, threads=1)


def per_step_us(fn, arg, steps: int) -> float:
    for _ in range(200):
        fn(arg)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn(arg)
    return (time.perf_counter() - t0) / steps * 1e6


def measure(model: fastlstm.Model, steps: int, rounds: int) -> dict:
    F = model.spec.input_shapes[0][-1]
    x = np.random.default_rng(1).normal(size=(1, F)).astype(np.float32)
    compiled = model.stream(1)
    original = model_stream.chain_plan
    model_stream.chain_plan = lambda graph: None
    try:
        graph = model.stream(1)
    finally:
        model_stream.chain_plan = original
    out = np.empty((1, compiled.step(x).shape[1]), np.float32)
    bare = bare_steps(model)
    got: dict = {"model stream": [], "graph path": [], "bare engine": []}
    for _ in range(rounds):
        got["model stream"].append(
            per_step_us(lambda a: compiled.step(a, out=out), x, steps)
        )
        got["graph path"].append(
            per_step_us(lambda a: graph.step(a, out=out), x, steps // 20)
        )
        got["bare engine"].append(sum(per_step_us(f, a, steps) for f, a in bare))
    return {k: float(np.median(v)) for k, v in got.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    bundled = Path(fastlstm.__file__).parent / "examples" / "example_model.h5"
    models = {
        "seed": seed_model(),
        "bundled": fastlstm.load(bundled, threads=1),
    }
    print(f"{cpu_name()}, numpy {np.__version__}")
    print()
    print(
        "| model | model stream µs | graph path µs | bare engine µs | "
        "stream / bare | graph / stream |"
    )
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        r = measure(model, args.steps, args.rounds)
        s, g, b = r["model stream"], r["graph path"], r["bare engine"]
        print(f"| {name} | {s:.2f} | {g:.1f} | {b:.2f} | {s / b:.2f} | {g / s:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
