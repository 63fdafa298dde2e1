"""How many threads a recurrent layer's calls and streams use: the
``threads=`` option, its check, and the automatic choice (a rule per layer
kind for whole calls; a timed probe for large batch-1 streams)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fastlstm import thread_budget
from fastlstm._core import StreamCore
from fastlstm.thread_budget import MAX_THREADS

__all__ = ["MAX_THREADS", "ThreadChoice", "check_threads"]

# Streams at batch 1 may step on 2 threads once the step's weights ([Wx; Wh],
# float32) pass this size; below it a step is too short for waking a
# sleeping worker to pay. Above it, whether 2 threads win depends on the
# host (cache sizes, how long an idle core takes to wake; figures in
# benchmarks/results/design_notes.md), so the automatic choice times a few
# steps both ways, once per layer, and keeps 2 threads only when they are
# clearly faster. The outputs are the same either way, bit for bit.
STREAM_THREADS_MIN_BYTES = 2 << 20
STREAM_PROBE_STEPS = 16
STREAM_PROBE_MARGIN = 0.9


def check_threads(threads: Any) -> int | None:
    """The ``threads=`` option: None (automatic) or 1 .. MAX_THREADS."""
    if threads is None:
        return None
    return thread_budget.check_count(
        threads, "threads", "None (automatic) or an integer"
    )


class ThreadChoice:
    """The thread counts of a layer's calls and streams. A layer sets
    ``_threads`` (the option) and ``_packed``, and defines
    ``_weight_bytes()``, ``_auto_call_threads(batch, steps)`` (its rule for
    whole calls) and ``_splits_stream(batch)`` (whether its kernel can
    split a stream step of that batch between threads)."""

    _threads: int | None
    _packed: Any
    _probed_stream_threads: int | None = None

    def _threads_for(self, batch: int, steps: int) -> int:
        """Threads for one call: the option, or the layer's rule, within
        the process's limit (fastlstm.get_num_threads)."""
        if self._threads is not None:
            return thread_budget.capped(self._threads)
        if not self._auto_call_threads(batch, steps):
            return 1
        return min(2, thread_budget.get_num_threads())

    def _stream_threads(self, batch: int) -> int:
        """Threads for a stream's steps, run on a pool of workers that sleep
        between steps. Automatic: at batch 1, once the weights pass
        STREAM_THREADS_MIN_BYTES, 2 if a timed probe finds them faster on
        this host (see STREAM_THREADS_MIN_BYTES), else 1."""
        if not self._splits_stream(batch):
            return 1
        if self._threads is not None:
            return thread_budget.capped(self._threads)
        if batch != 1 or self._weight_bytes() <= STREAM_THREADS_MIN_BYTES:
            return 1
        if thread_budget.get_num_threads() < 2:
            return 1
        if self._probed_stream_threads is None:
            self._probed_stream_threads = _faster_stream_threads(self._packed)
        return self._probed_stream_threads

    def _weight_bytes(self) -> int:
        raise NotImplementedError

    def _auto_call_threads(self, batch: int, steps: int) -> bool:
        raise NotImplementedError

    def _splits_stream(self, batch: int) -> bool:
        raise NotImplementedError


def _step_seconds(packed: Any, threads: int) -> float:
    """Median seconds of one batch-1 stream step on `threads` threads (a
    scratch stream on zero inputs; the caller's streams are not touched)."""
    core = StreamCore()
    core._init_core(packed, 1, False, False, threads)
    x = np.zeros((1, packed.input_size), np.float32)
    out = np.empty((1, packed.output_size), np.float32)
    for _ in range(4):  # warm-up: caches, the workers' weight copies
        core.step(x, out=out)
    times = []
    for _ in range(STREAM_PROBE_STEPS):
        t0 = time.perf_counter()
        core.step(x, out=out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _faster_stream_threads(packed: Any) -> int:
    """2 if a batch-1 stream step is clearly faster on 2 threads here, else 1.
    Each is timed twice, alternating, and keeps its better time: a single
    probe could land on a moment when the host was busy."""
    one, two = _step_seconds(packed, 1), _step_seconds(packed, 2)
    one = min(one, _step_seconds(packed, 1))
    two = min(two, _step_seconds(packed, 2))
    return 2 if two < STREAM_PROBE_MARGIN * one else 1
