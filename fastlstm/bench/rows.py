"""One row of the report each: a configuration every engine runs, checked
against fastlstm's output, then timed."""

from __future__ import annotations

from typing import Any

import numpy as np

import fastlstm
from fastlstm.bench.timing import Timings, median_time, median_times
from fastlstm.bench.workloads import (
    flops_per_step,
    gates_of,
    sequence_input,
    weights,
)


def step_row(
    engines: list,
    label: str,
    H: int,
    I: int,
    threads: int,
    quick: bool,
    w: dict | None = None,
) -> dict:
    """A streaming step from Python at batch 1; accuracy over 50 steps."""
    w = weights(I, H) if w is None else w
    x = np.random.default_rng(1).normal(size=(1, I)).astype(np.float32)
    xs = np.random.default_rng(2).normal(size=(50, 1, I)).astype(np.float32)
    row = _row(label, H, I, 1, 1, threads)
    ref = None
    diffs, timings = {}, Timings(threads, quick)
    for eng in engines:
        fn, final = eng.step(w, 1)
        for x_t in xs:
            fn(x_t)
        h = np.asarray(final(), np.float32)
        ref = h if ref is None else ref
        diffs[eng.name] = float(np.abs(h - ref).max())
        timings.add(eng.step(w, 1)[0], x)
    for eng, sec in zip(engines, timings.result()):
        row["results"][eng.name] = {
            "seconds": sec,
            "us": sec * 1e6,
            "gflops": flops_per_step(I, H, 1, gates_of(w)) / sec / 1e9,
            "max_abs_diff": diffs[eng.name],
        }
    return row


def seq_row(
    engines: list,
    label: str,
    shape: tuple,
    threads: int,
    quick: bool,
    keras: dict | None = None,
    w: dict | None = None,
    x: np.ndarray | None = None,
) -> dict:
    """A whole sequence of shape (B, T, I, H); ``keras``: Keras' time and
    outputs for it, from its own process."""
    B, T, I, H = shape
    w = weights(I, H) if w is None else w
    x = sequence_input(B, T, I) if x is None else x
    row = _row(label, H, I, B, T, threads)
    ref = None
    timed, diffs, timings = [], {}, Timings(threads, quick)
    for eng in engines:
        if quick and eng.name == "numpy" and B * T * H > 64 * 100 * 256:
            continue
        fn = eng.seq(w)
        y = np.asarray(fn(x), np.float32)
        ref = y if ref is None else ref
        diffs[eng.name] = float(np.abs(y - ref).max())
        timed.append(eng)
        timings.add(fn, x)
    flops = flops_per_step(I, H, B, gates_of(w)) * T
    for eng, sec in zip(timed, timings.result()):
        row["results"][eng.name] = {
            "seconds": sec,
            "us_per_step": sec / T * 1e6,
            "gflops": flops / sec / 1e9,
            "max_abs_diff": diffs[eng.name],
        }
    if keras is not None:
        kr = dict(keras)
        kr["max_abs_diff"] = float(np.abs(kr.pop("y") - ref).max())
        kr["us_per_step"] = kr["seconds"] / T * 1e6
        kr["gflops"] = flops / kr["seconds"] / 1e9
        row["results"]["keras"] = kr
    return row


def model_row(
    label: str, model: Any, x: np.ndarray, quick: bool, keras: dict | None = None
) -> dict:
    """A whole model's predict; ``keras``: Keras' time and outputs."""
    y = model.predict(x)
    sec = median_time(model.predict, x, quick)
    row = {"case": label, "results": {"fastlstm": _timed(sec, 0.0)}}
    if keras is not None:
        diff = float(np.abs(keras["y"] - y).max())
        row["results"]["keras"] = _timed(keras["seconds"], diff)
    return row


def model_stream_row(label: str, model: Any, quick: bool) -> dict:
    """A model stream's step (batch 1, out=) against its recurrent layers'
    bare engine steps, summed: what the layers after them cost."""
    F = model.spec.input_shapes[0][-1]
    x = np.random.default_rng(1).normal(size=(1, F)).astype(np.float32)
    stream = model.stream(1)
    out = np.empty((1, stream.step(x).shape[1]), np.float32)
    calls = [(lambda a: stream.step(a, out=out), x), *bare_steps(model)]
    seconds = median_times(calls, quick)
    bare = sum(seconds[1:])
    row = {"case": label, "results": {"fastlstm": _timed(seconds[0], 0.0)}}
    row["results"]["bare engine steps"] = _timed(bare, None)
    return row


def bare_steps(model: Any) -> list:
    """(fn, arg) per recurrent cell of a model, in order: one batch-1 step
    of that cell's own engine stream, into a preallocated output."""
    calls, width = [], model.spec.input_shapes[0][-1]
    for spec in model.spec.layers:
        direction = getattr(model._graph.layers[spec.name], "direction", None)
        for cell in direction.cells if direction is not None else ():
            s, o = cell.stream(1), np.empty((1, cell.output_size), np.float32)
            calls.append(
                (lambda a, s=s, o=o: s.step(a, out=o), np.zeros((1, width), np.float32))
            )
            width = cell.output_size
    return calls


def memory_note(B: int, T: int, I: int, H: int) -> str:
    """Peak memory of one stateless call (tracemalloc: NumPy arrays and the
    kernel's workspace) plus the packed weights, against the call's own
    weights + inputs + outputs."""
    import tracemalloc

    w = weights(I, H)
    layer = fastlstm.LSTM(*w.values(), return_sequences=True, threads=1)
    x = np.random.default_rng(4).normal(size=(B, T, I)).astype(np.float32)
    layer(x)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    y = layer(x)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    packed = 4 * 4 * H * (I + H)
    data = packed + x.nbytes + y.nbytes
    return (
        f"memory, B={B} T={T} I={I} H={H}: peak {(peak + packed) / 1e6:.1f} MB "
        f"for {data / 1e6:.1f} MB of weights + inputs + outputs "
        f"({(peak + packed) / data:.2f}x)"
    )


def _row(label: str, H: int, I: int, B: int, T: int, threads: int) -> dict:
    return {
        "case": label,
        "H": H,
        "I": I,
        "B": B,
        "T": T,
        "threads": threads,
        "results": {},
    }


def _timed(seconds: float, diff: float | None) -> dict:
    return {
        "seconds": seconds,
        "us": seconds * 1e6,
        "gflops": float("nan"),
        "max_abs_diff": diff,
    }
