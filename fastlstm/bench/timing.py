"""Median times of engines' calls, taken so that a slow spell of a shared
host falls on every engine of a row alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def median_time(fn: Callable, arg: Any, quick: bool) -> float:
    """Median seconds per call: each sample runs enough calls for >= 20 ms
    (5 ms in quick mode)."""
    return median_times([(fn, arg)], quick)[0]


def median_times(calls: list, quick: bool) -> list:
    """median_time of each (fn, arg) in calls, their samples taken in turn
    (one sample of each, then the next round): a slow spell of a shared
    host then falls on every engine of a row alike. Only for engines on one
    thread (see Timings)."""
    target = 0.005 if quick else 0.02
    inner = []
    for fn, arg in calls:
        fn(arg)
        t0 = time.perf_counter()
        fn(arg)
        one = max(time.perf_counter() - t0, 1e-7)
        inner.append(max(1, int(target / one)))
    samples: list = [[] for _ in calls]
    for _ in range(5 if quick else 11):
        for (fn, arg), n, out in zip(calls, inner, samples):
            t0 = time.perf_counter()
            for _ in range(n):
                fn(arg)
            out.append((time.perf_counter() - t0) / n)
    return [float(np.median(s)) for s in samples]


class Timings:
    """Median seconds of each engine's call. On one thread the calls are
    timed together at the end, interleaved (see median_times). On several,
    each engine is timed alone, after a pause: the workers of a
    multi-threaded engine spin for a while after its calls (OpenBLAS,
    ONNX Runtime), and interleaved samples would time each engine against
    the others' spinning workers."""

    # long enough for OpenBLAS's and ONNX Runtime's workers to stop spinning
    SETTLE_SECONDS = 0.5

    def __init__(self, threads: int, quick: bool) -> None:
        self.threads, self.quick = threads, quick
        self.calls: list = []
        self.seconds: list = []

    def add(self, fn: Callable, arg: Any) -> None:
        if self.threads == 1:
            self.calls.append((fn, arg))
            return
        time.sleep(self.SETTLE_SECONDS)
        self.seconds.append(median_time(fn, arg, self.quick))

    def result(self) -> list:
        if self.threads == 1:
            return median_times(self.calls, self.quick)
        return self.seconds
