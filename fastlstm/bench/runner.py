"""Runs the selected cases: the Keras process first (on the same weights
and inputs), then every job under its thread limit, printing progress;
writes latest.md, latest.json and a PNG per case to the output folder."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, TextIO

import fastlstm
from fastlstm.bench import peers
from fastlstm.bench.cases import Job, example_model, jobs, model_inputs
from fastlstm.bench.keras_peer import run_keras
from fastlstm.bench.report import machine, markdown, plot_cases

PEERS = {
    "onnxruntime": peers.OnnxRuntime,
    "pytorch": peers.Torch,
    "numpy": peers.NumPy,
    "keras": None,  # its own process (keras_peer)
}


class Context:
    """What jobs share: options, notes, versions, engines by thread count
    (built once each) and Keras' results."""

    def __init__(self, quick: bool, wanted: set) -> None:
        self.quick, self.wanted = quick, wanted
        self.notes: list = []
        self.versions = {"fastlstm": fastlstm.__version__}
        self.keras: tuple | None = None
        self._engines: dict = {}

    def engines(self, threads: int) -> list:
        if threads not in self._engines:
            built = [peers.FastLSTM(threads)]
            for name, cls in PEERS.items():
                if cls is None or name not in self.wanted:
                    continue
                try:
                    built.append(cls() if cls is peers.NumPy else cls(threads))
                except ImportError as exc:
                    self.notes.append(f"{name} skipped: not installed ({exc.name})")
            for eng in built:
                self.versions.setdefault(eng.name, eng.version())
            self._engines[threads] = built
        return self._engines[threads]

    def keras_output(self, kind: str, key: str) -> dict | None:
        """Keras' seconds and outputs for a sequence case or a model input."""
        if self.keras is None:
            return None
        result, arrays = self.keras
        return {**result[kind][key], "y": arrays[f"{kind}_{key}"]}


def thread_limit(threads: int, notes: list) -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if not any("threadpoolctl" in n for n in notes):
            notes.append("BLAS threads not pinned: threadpoolctl not installed")
        return contextlib.nullcontext()
    return threadpool_limits(threads)


def run(selected: set, quick: bool, wanted: set, progress: TextIO | None) -> dict:
    """The report of the selected cases, peers limited to ``wanted``."""
    ctx = Context(quick, wanted)
    todo: list = jobs(selected, quick)
    keras_jobs = [j for j in todo if j.keras is not None]
    if "keras" in wanted and keras_jobs:
        todo.insert(
            0,
            Job(
                "keras",
                "keras, in its own process",
                lambda c: _keras(c, keras_jobs, progress),
            ),
        )
    rows = []
    started, width = time.perf_counter(), len(str(len(todo)))
    for k, job in enumerate(todo, 1):
        if progress is not None:
            print(
                f"[{k:>{width}}/{len(todo)}] {job.label} ...",
                end="",
                file=progress,
                flush=True,
            )
        t0 = time.perf_counter()
        with thread_limit(job.threads, ctx.notes):
            row = job.run(ctx)
        if row is not None:
            rows.append(row)
        if progress is not None:
            print(f" {time.perf_counter() - t0:.1f} s", file=progress, flush=True)
    if progress is not None:
        print(f"done in {time.perf_counter() - started:.0f} s", file=progress)
    return {
        "machine": machine(),
        "versions": ctx.versions,
        "rows": rows,
        "notes": ctx.notes,
    }


def _keras(ctx: Context, keras_jobs: list, progress: TextIO | None) -> None:
    seq = {j.keras[1]: j.keras[2] for j in keras_jobs if j.keras[0] == "seq"}
    model = any(j.keras[0] == "model" for j in keras_jobs)
    got = run_keras(
        seq,
        example_model() if model else None,
        model_inputs() if model else {},
        ctx.quick,
        ctx.notes,
        progress,
    )
    if got is not None:
        ctx.keras = got
        ctx.versions["keras"] = got[0]["version"]
    return None


def write(report: dict, out: Path) -> list:
    """latest.md, latest.json and the plots into ``out``; the paths."""
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_cases(report, out)
    (out / "latest.md").write_text(markdown(report))
    (out / "latest.json").write_text(json.dumps(report, indent=1, default=float))
    return [out / "latest.md", out / "latest.json", *plots]
