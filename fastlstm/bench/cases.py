"""The lettered cases of the benchmark, each a list of jobs that make one
report row (or notes) each. Float32; one thread unless the case says 2;
medians over repeated timed calls after a warm-up, loading excluded."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import fastlstm
from fastlstm.bench import rows
from fastlstm.bench.workloads import decaying_weights, gru_weights

CASES = {
    "a": "streaming step from Python, batch 1, 64 features",
    "b": "whole sequence, batch 1, T=1000, features = H",
    "c": "batches: B=64, I=128",
    "d": "the bundled Keras model: predict, fastlstm vs Keras",
    "e": "2 threads: a step and a sequence at H=512",
    "f": "a state decaying through denormals, H=128",
    "g": "GRU layers: steps, sequences and a batch",
    "h": "the bundled Keras model streamed step by step vs bare engine steps",
    "m": "peak memory of one call against its weights, inputs and outputs",
}


@dataclasses.dataclass
class Job:
    """One row (or notes) of case ``case``. ``keras``: the key of what the
    Keras process runs for it ("seq" or "model", name, shape or inputs)."""

    case: str
    label: str
    run: Callable[[Any], dict | None]
    threads: int = 1
    keras: tuple | None = None


def example_model() -> Path:
    return Path(__file__).resolve().parent.parent / "examples" / "example_model.h5"


def model_inputs() -> dict:
    x = np.load(example_model().with_name("example_io.npz"))["x"]
    return {"batch1": x[:1], "batch32": np.repeat(x, 4, axis=0)}


def jobs(selected: set, quick: bool) -> list:
    """Every job of the selected cases, one-thread cases first (engines on
    two threads change the peers' global thread settings)."""
    steps = [32, 128, 512] if quick else [32, 64, 128, 256, 512]
    seqs = [32, 128, 512] if quick else [32, 128, 256, 512]
    batches = [(64, 100, 128, 256)] + ([] if quick else [(64, 1000, 128, 512)])
    grus = steps if quick else [32, 128, 512]
    out: list = []
    for H in steps:
        out.append(Job("a", f"a step H={H}", _step(f"a step H={H}", H)))
    for H in seqs:
        label = f"b seq B=1 T=1000 H={H}"
        out.append(_seq_job("b", label, (1, 1000, H, H)))
    for B, T, I, H in batches:
        out.append(_seq_job("c", f"c batch B={B} T={T} H={H}", (B, T, I, H)))
    for key in ("batch1", "batch32"):
        label = f"d Keras model predict, {key}"
        out.append(Job("d", label, _model(label, key), keras=("model", key)))
    for H in grus:
        label = f"g GRU step H={H}"
        out.append(Job("g", label, _step(label, H, gru_weights(64, H))))
    for H in grus:
        label = f"g GRU seq B=1 T=1000 H={H}"
        out.append(Job("g", label, _seq(label, (1, 1000, H, H), gru_weights(H, H))))
    label = "g GRU batch B=64 T=100 H=256"
    out.append(Job("g", label, _seq(label, (64, 100, 128, 256), gru_weights(128, 256))))
    out.append(Job("f", "f decaying state (denormals) H=128", _denormals))
    out.append(Job("h", "h Keras model stream step", _model_stream))
    memory = [(1, 1000, 512, 512)] + batches
    out.append(Job("m", "memory notes", lambda ctx: _memory(ctx, memory)))
    out.append(
        Job(
            "e",
            "e step H=512 2 threads",
            _step("e step H=512 2 threads", 512, threads=2),
            threads=2,
        )
    )
    label = "e seq B=1 T=1000 H=512 2 threads"
    out.append(Job("e", label, _seq(label, (1, 1000, 512, 512), threads=2), threads=2))
    return [j for j in out if j.case in selected]


def _step(label: str, H: int, w: dict | None = None, threads: int = 1) -> Callable:
    def run(ctx: Any) -> dict:
        return rows.step_row(ctx.engines(threads), label, H, 64, threads, ctx.quick, w)

    return run


def _seq(
    label: str,
    shape: tuple,
    w: dict | None = None,
    threads: int = 1,
    keras_key: str | None = None,
) -> Callable:
    def run(ctx: Any) -> dict:
        keras = ctx.keras_output("seq", keras_key) if keras_key else None
        return rows.seq_row(
            ctx.engines(threads), label, shape, threads, ctx.quick, keras, w
        )

    return run


def _seq_job(case: str, label: str, shape: tuple) -> Job:
    key = "x".join(map(str, shape))
    return Job(
        case, label, _seq(label, shape, keras_key=key), keras=("seq", key, shape)
    )


def _model(label: str, key: str) -> Callable:
    def run(ctx: Any) -> dict:
        model = fastlstm.load(example_model(), threads=1)
        keras = ctx.keras_output("model", key)
        return rows.model_row(label, model, model_inputs()[key], ctx.quick, keras)

    return run


def _denormals(ctx: Any) -> dict:
    H = 128
    x = np.zeros((1, 1000, H), np.float32)
    x[:, 0] = 1.0
    w = decaying_weights(H, H)
    w["kernel"][:, 2 * H : 3 * H] = 0.5  # the first step writes a state
    return rows.seq_row(
        ctx.engines(1),
        "f decaying state (denormals) H=128",
        (1, 1000, H, H),
        1,
        ctx.quick,
        w=w,
        x=x,
    )


def _model_stream(ctx: Any) -> dict:
    model = fastlstm.load(example_model(), threads=1)
    return rows.model_stream_row("h Keras model stream step", model, ctx.quick)


def _memory(ctx: Any, shapes: list) -> None:
    for B, T, I, H in shapes:
        ctx.notes.append(rows.memory_note(B, T, I, H))
