"""Concurrency and endurance: 8 threads sharing one model give bit-identical
results to serial runs, and long runs (a million streaming steps, many calls,
layers built and freed) keep resident memory flat.

The thread counts here keep the suite fast; FASTLSTM_ENDURANCE_CALLS scales
the calls per thread up (the issue's figure: 10,000 per thread,
``FASTLSTM_ENDURANCE_CALLS=10000 python -m pytest tests/test_endurance.py``).
"""

from __future__ import annotations

import gc
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
import pytest
from _helpers import random_weights
from test_load_keras import load_case

import fastlstm

THREADS = 8
CALLS = int(os.environ.get("FASTLSTM_ENDURANCE_CALLS", "300"))
RSS_SLACK = 1 << 20  # the bound: within 1 MB after warm-up


def rss_bytes() -> int:
    if "san" in os.environ.get("LD_PRELOAD", ""):
        # a preloaded AddressSanitizer keeps freed memory in quarantine:
        # resident memory grows without any leak
        pytest.skip("resident memory is not meaningful under a sanitizer")
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        pytest.skip("/proc/self/statm is not available")
    return pages * os.sysconf("SC_PAGE_SIZE")


def assert_same(a, b) -> None:
    if isinstance(a, (list, tuple)):
        for x, y in zip(a, b):
            assert_same(x, y)
        return
    assert a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "kind", ["small", "projection_peepholes", "two_kernel_threads"]
)
def test_eight_threads_share_one_layer_bit_identically(rng, kind):
    """Each thread runs its own list of inputs CALLS times, interleaved with
    the others; every result equals the serial one bit for bit."""
    if kind == "small":
        layer = fastlstm.LSTM(**random_weights(rng, 6, 16), return_sequences=True)
        shapes = [(int(rng.integers(1, 5)), int(rng.integers(1, 12)), 6)]
    elif kind == "projection_peepholes":
        w = random_weights(rng, 6, 24, P=8, peepholes=True)
        layer = fastlstm.LSTM(**w, return_sequences=True, return_state=True)
        shapes = [(3, 9, 6)]
    else:  # the kernel itself splits batch-1 calls over 2 threads
        w = random_weights(rng, 6, 256)
        layer = fastlstm.LSTM(**w, threads=2)
        shapes = [(1, 20, 6)]
    per_thread = []
    for _ in range(THREADS):
        xs = [rng.normal(size=shapes[0]).astype(np.float32) for _ in range(4)]
        masks = [rng.random(x.shape[:2]) < 0.8 for x in xs]
        per_thread.append(list(zip(xs, masks)))
    serial = [[layer(x, mask=m) for x, m in items] for items in per_thread]
    calls = CALLS if kind == "small" else max(CALLS // 4, 10)
    start = threading.Barrier(THREADS)

    def run(t: int) -> int:
        items, want = per_thread[t], serial[t]
        start.wait()
        for k in range(calls):
            x, m = items[k % len(items)]
            assert_same(layer(x, mask=m), want[k % len(items)])
        return calls

    with ThreadPoolExecutor(THREADS) as pool:
        done = sum(pool.map(run, range(THREADS)))
    assert done == THREADS * calls


def test_eight_threads_each_with_its_own_stream_on_one_layer(rng):
    """Streams over one shared layer, one per thread, stepped in lockstep
    races: each equals the same stream run alone."""
    layer = fastlstm.LSTM(**random_weights(rng, 4, 16))
    xs = [rng.normal(size=(CALLS, 2, 4)).astype(np.float32) for _ in range(THREADS)]

    def run(x: np.ndarray) -> np.ndarray:
        s = layer.stream(2)
        return np.stack([s.step(x_t) for x_t in x])

    serial = [run(x) for x in xs]
    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(run, xs))
    for g, s in zip(got, serial):
        assert_same(g, s)


def test_a_keras_model_shared_by_eight_threads(rng):
    model = load_case("k2_stacked_embedding")
    xs = [rng.integers(0, 10, size=(2, 9)) for _ in range(THREADS)]
    serial = [model.predict(x) for x in xs]

    def run(t: int) -> None:
        for _ in range(max(CALLS // 10, 5)):
            assert_same(model.predict(xs[t]), serial[t])

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, range(THREADS)))


def test_a_million_streaming_steps_keep_rss_flat(rng):
    """1,000,000 steps of one stream at H=32 (about 1 s): resident memory
    after warm-up moves by less than 1 MB, with and without ``out=``."""
    layer = fastlstm.LSTM(**random_weights(rng, 8, 32))
    stream = layer.stream(1)
    x = rng.normal(size=(1, 8)).astype(np.float32)
    out = np.empty((1, 32), np.float32)
    for _ in range(20_000):  # warm-up: allocator pools, caches
        stream.step(x, out=out)
        stream.step(x)
    gc.collect()
    before = rss_bytes()
    for k in range(1_000_000):
        if k % 4:
            stream.step(x, out=out)
        else:
            stream.step(x)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < RSS_SLACK, f"RSS grew by {grown} bytes over 1e6 steps"
    assert np.isfinite(stream.state[0]).all()


def test_many_calls_feeds_and_rebuilt_layers_keep_rss_flat(rng):
    """Stateless calls, chunked feeds, state round-trips and layers built,
    pickled and freed over and over: no growth beyond 1 MB after warm-up
    (a leaked packed layer or workspace would show within the loop)."""
    import pickle

    w = random_weights(rng, 8, 32, P=16, peepholes=True)
    x = rng.normal(size=(2, 10, 8)).astype(np.float32)

    def cycle() -> None:
        layer = fastlstm.LSTM(**w, return_sequences=True)
        layer(x)
        copy = pickle.loads(pickle.dumps(layer))
        s = copy.stream(2)
        s.feed(x)
        s.state = s.state
        s.feed(x[:, :3])
        s.reset()
        try:
            layer(np.full_like(x, np.nan))
        except fastlstm.NonFiniteError:
            pass

    for _ in range(500):
        cycle()
    gc.collect()
    before = rss_bytes()
    for _ in range(5_000):
        cycle()
    gc.collect()
    grown = rss_bytes() - before
    assert grown < RSS_SLACK, f"RSS grew by {grown} bytes over 5000 cycles"


def test_a_keras_model_stream_keeps_rss_flat(rng):
    with resources.as_file(
        resources.files("fastlstm.examples").joinpath("example_model.h5")
    ) as path:
        model = fastlstm.load(path)
    stream = model.stream(2)
    x = rng.normal(size=(2,) + model.inputs[0][2:]).astype(np.float32)
    for _ in range(2_000):
        stream.step(x)
    gc.collect()
    before = rss_bytes()
    for _ in range(20_000):
        stream.step(x)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < RSS_SLACK, f"RSS grew by {grown} bytes over 20000 model steps"
