"""One model shared by 8 threads gives results identical to serial use, and
the kernel runs without the GIL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from conftest import random_weights

import fastlstm


def test_eight_threads_bit_identical(rng):
    w = random_weights(rng, 16, 32, P=0, peepholes=True)
    layer = fastlstm.LSTM(**w, return_sequences=True, return_state=True)
    inputs = [
        rng.normal(size=(int(rng.integers(1, 6)), 40, 16)).astype(np.float32)
        for _ in range(64)
    ]
    masks = [rng.random(x.shape[:2]) < 0.8 for x in inputs]
    serial = [layer(x, mask=m) for x, m in zip(inputs, masks)]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            parallel = list(
                pool.map(lambda a: layer(a[0], mask=a[1]), zip(inputs, masks))
            )
            for s, p in zip(serial, parallel):
                for a, b in zip(s, p):
                    np.testing.assert_array_equal(a, b)


def test_streams_per_thread_are_independent(rng):
    w = random_weights(rng, 8, 16)
    layer = fastlstm.LSTM(**w, return_sequences=True)
    xs = [rng.normal(size=(2, 30, 8)).astype(np.float32) for _ in range(8)]
    want = [layer(x) for x in xs]

    def run(x):
        s = layer.stream(2)
        return np.concatenate([s.feed(x[:, a : a + 4]) for a in range(0, 30, 4)], 1)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(run, xs))
    for g, w_ in zip(got, want):
        assert np.abs(g - w_).max() < 1e-6


def test_shared_stream_misuse_is_detected(rng):
    """Two threads on one stream: one of them gets StreamError, the state is
    never corrupted silently."""
    w = random_weights(rng, 64, 256)
    layer = fastlstm.LSTM(**w, return_sequences=True)
    stream = layer.stream(8)
    x = rng.normal(size=(8, 400, 64)).astype(np.float32)
    errors = []

    def use():
        try:
            for _ in range(3):
                stream.feed(x)
        except fastlstm.StreamError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors, "concurrent use of one stream went undetected"
    assert "one stream per thread" in str(errors[0])


def test_gil_is_released_during_the_kernel(rng):
    """A Python thread keeps running while the kernel works. With the GIL
    held for a whole call of about a second it could run only in the
    interpreter's 5 ms switch slices (under 1% of the call); the bound below
    asks for 20% of its free-running rate, a wide margin for a loaded
    machine."""
    w = random_weights(rng, 64, 512)
    layer = fastlstm.LSTM(**w)
    x = rng.normal(size=(1, 500, 64)).astype(np.float32)
    t0 = time.perf_counter()
    layer(x)
    per_step = (time.perf_counter() - t0) / 500
    steps = int(min(max(0.8 / per_step, 500), 200_000))
    x = rng.normal(size=(1, steps, 64)).astype(np.float32)
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)
    a, t1 = ticks, time.perf_counter()
    time.sleep(0.3)
    free_rate = (ticks - a) / (time.perf_counter() - t1)
    b, t2 = ticks, time.perf_counter()
    layer(x)
    elapsed = time.perf_counter() - t2
    during = ticks - b
    done.set()
    counter.join()
    assert during > 0.2 * free_rate * elapsed, (during, free_rate, elapsed)
