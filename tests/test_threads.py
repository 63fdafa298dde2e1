"""One model shared by 8 threads gives results identical to serial use, and
the kernel runs without the GIL."""

from __future__ import annotations

import os
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _helpers import UNDER_SANITIZER, gru_rnn_weights, random_weights

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


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("extra", ["none", "mask", "lengths", "peepholes"])
def test_threaded_batch1_matches_one_thread(rng, go_backwards, extra):
    """threads=2/3 split the units of a batch-1 run across threads: same
    numbers as one thread (to float rounding: the input projection is
    computed by another kernel), and 2 and 3 threads agree exactly."""
    w = random_weights(rng, 24, 256, peepholes=extra == "peepholes")
    x = rng.normal(size=(1, 300, 24)).astype(np.float32)
    kw = {}
    if extra == "mask":
        kw["mask"] = rng.random((1, 300)) < 0.7
    if extra == "lengths":
        kw["lengths"] = np.array([211])
    outs = [
        fastlstm.LSTM(
            **w,
            return_sequences=True,
            return_state=True,
            go_backwards=go_backwards,
            threads=t,
        )(x, **kw)
        for t in (1, 2, 3)
    ]
    for a, b in zip(outs[0], outs[1]):
        assert np.abs(a - b).max() < 1e-6
    for a, b in zip(outs[1], outs[2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [0, 9, -1, 2.0, True, "2"])
def test_threads_option_is_validated(rng, bad):
    w = random_weights(rng, 3, 4)
    with pytest.raises(fastlstm.ConfigError, match=r"threads must be None .* \[1, 8\]"):
        fastlstm.LSTM(**w, threads=bad)


def test_automatic_thread_choice(rng):
    big = fastlstm.LSTM(**random_weights(rng, 8, 256))
    small = fastlstm.LSTM(**random_weights(rng, 8, 64))
    assert big._threads_for(1, 100) == min(2, fastlstm.get_num_threads())
    assert big._threads_for(4, 100) == 1  # batches use the GEMM path
    assert big._threads_for(1, 4) == 1  # too short to pay for a thread
    assert small._threads_for(1, 100) == 1  # small layers never slower


@pytest.mark.parametrize("extra", ["none", "mask", "peepholes"])
def test_threaded_stream_matches_one_thread(rng, extra):
    """A threads=2 stream steps on a pool of sleeping workers (each keeps its
    units' weights in its own cache): same outputs and state as a
    one-thread stream, step by step and through feed."""
    w = random_weights(rng, 24, 256, peepholes=extra == "peepholes")
    x = rng.normal(size=(1, 60, 24)).astype(np.float32)
    mask = rng.random((1, 60)) < 0.7 if extra == "mask" else np.ones((1, 60), bool)
    one = fastlstm.LSTM(**w, threads=1).stream(1)
    two = fastlstm.LSTM(**w, threads=2).stream(1)
    assert (one.threads, two.threads) == (1, 2)
    out = np.empty((1, 256), np.float32)
    for t in range(40):
        a = one.step(x[:, t], mask=mask[:, t])
        two.step(x[:, t], mask=mask[:, t], out=out)
        assert np.abs(a - out).max() < 1e-6, t
    rest, rest_mask = x[:, 40:], mask[:, 40:]
    a, b = one.feed(rest, mask=rest_mask), two.feed(rest, mask=rest_mask)
    assert np.abs(a - b).max() < 1e-6
    for sa, sb in zip(one.state, two.state):
        assert np.abs(sa - sb).max() < 1e-6


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_stream_pools_do_not_leak_threads(rng):
    """Each threads=2 stream owns one sleeping worker, joined when the
    stream is freed: creating and dropping streams leaves no threads."""
    layer = fastlstm.LSTM(**random_weights(rng, 8, 256), threads=2)
    x = rng.normal(size=(1, 8)).astype(np.float32)
    before = _os_threads()
    streams = [layer.stream(1) for _ in range(5)]
    assert _os_threads() == before + 5
    for s in streams:
        s.step(x)
    del streams, s
    assert _os_threads() == before
    for _ in range(50):
        layer.stream(1).step(x)
    assert _os_threads() == before


def test_automatic_stream_threads(rng, monkeypatch):
    """Once [Wx; Wh] outgrow STREAM_THREADS_MIN_BYTES, a batch-1 stream takes
    2 threads if a timed probe finds them clearly faster on this host (once
    per layer), else 1; never for batches, projections or small layers."""
    from fastlstm.engine import threads as threads_module

    probes = []

    def fake_step_seconds(packed, threads):
        probes.append(threads)
        return speed[threads]

    monkeypatch.setattr(threads_module, "_step_seconds", fake_step_seconds)
    monkeypatch.setattr(threads_module.thread_budget, "get_num_threads", lambda: 2)
    speed = {1: 60e-6, 2: 30e-6}  # 2 threads twice as fast
    big = fastlstm.LSTM(**random_weights(rng, 64, 384))  # 2.8 MB of weights
    assert big.stream(1).threads == 2
    n_probes = len(probes)
    assert n_probes >= 2 and set(probes) == {1, 2}
    assert big.stream(1).threads == 2 and len(probes) == n_probes  # cached
    speed = {1: 60e-6, 2: 57e-6}  # not clearly faster: keep 1
    wide = fastlstm.LSTM(**random_weights(rng, 1024, 128))  # 2.6 MB
    assert wide.stream(1).threads == 1
    probes.clear()
    medium = fastlstm.LSTM(**random_weights(rng, 64, 256))  # 1.3 MB
    projected = fastlstm.LSTM(**random_weights(rng, 8, 512, P=64), threads=2)
    assert big.stream(3).threads == 1  # batches use the GEMM path
    assert medium.stream(1).threads == 1
    forced = fastlstm.LSTM(**random_weights(rng, 64, 256), threads=2)
    assert forced.stream(1).threads == 2
    assert projected.stream(1).threads == 1  # the split needs h = m
    assert not probes  # none of these needed a probe
    speed = {1: 60e-6, 2: 30e-6}
    gru = fastlstm.GRU(*gru_rnn_weights(rng, 64, 512, 3))  # 3.5 MB
    assert gru.stream(1).threads == 2 and set(probes) == {1, 2}
    assert gru.stream(3).threads == 1  # automatic: batch 1 only


def test_stream_probe_on_this_host(rng):
    """The real probe picks 1 or 2 threads, and the stream's outputs are the
    same bit for bit as on a fixed thread count."""
    w = random_weights(rng, 64, 384)
    auto = fastlstm.LSTM(**w).stream(1)
    assert auto.threads in (1, 2)
    fixed = fastlstm.LSTM(**w, threads=3 - auto.threads).stream(1)
    xs = rng.normal(size=(20, 1, 64)).astype(np.float32)
    for x in xs:
        if UNDER_SANITIZER:  # that build has no per-ISA clones: other kernels
            np.testing.assert_allclose(auto.step(x), fixed.step(x), atol=1e-6)
        else:
            np.testing.assert_array_equal(auto.step(x), fixed.step(x))


# ---- GRU and simple RNN layers: threads split each step's units ----------

HIDDEN_STATE_KINDS = {
    "gru": (fastlstm.GRU, 3, {}),
    "gru_reset_before": (fastlstm.GRU, 3, {"reset_after": False}),
    "simple": (fastlstm.SimpleRNN, 1, {}),
}


def _hidden_state_layer(rng, kind, I, H, **kw):
    cls, G, options = HIDDEN_STATE_KINDS[kind]
    w = gru_rnn_weights(rng, I, H, G, scale=0.1)
    return lambda **more: cls(*w, **options, **kw, **more)


@pytest.mark.parametrize("kind", sorted(HIDDEN_STATE_KINDS))
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("extra", ["none", "mask", "lengths", "backwards", "tm"])
def test_threaded_gru_rnn_matches_one_thread(rng, kind, batch, extra):
    """threads=2/3 give each thread a range of units (its columns of every
    product and its gate loops): the same numbers as one thread, for any
    batch, with masks, lengths, go_backwards and either layout."""
    T, I, H = 120, 12, 160
    kw = {"return_sequences": True, "return_state": True}
    if extra == "backwards":
        kw["go_backwards"] = True
    if extra == "tm":
        kw["time_major"] = True
    make = _hidden_state_layer(rng, kind, I, H, **kw)
    shape = (T, batch, I) if extra == "tm" else (batch, T, I)
    x = rng.normal(size=shape).astype(np.float32)
    call = {}
    if extra == "mask":
        call["mask"] = rng.random((batch, T)) < 0.7
    if extra == "lengths":
        call["lengths"] = rng.integers(0, T + 1, size=batch)
    h0 = rng.normal(size=(batch, H)).astype(np.float32) * 0.5
    outs = [make(threads=t)(x, initial_state=h0, **call) for t in (1, 2, 3)]
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert np.abs(a - b).max() < 1e-6


@pytest.mark.parametrize("kind", sorted(HIDDEN_STATE_KINDS))
def test_threaded_gru_rnn_stream_matches_one_thread(rng, kind):
    """A threads=2 GRU/SimpleRNN stream steps on a pool of sleeping workers,
    at batch 1 and batches alike: same outputs and state as one thread."""
    make = _hidden_state_layer(rng, kind, 8, 128)
    for batch in (1, 3):
        one, two = make(threads=1).stream(batch), make(threads=2).stream(batch)
        assert (one.threads, two.threads) == (1, 2)
        x = rng.normal(size=(batch, 30, 8)).astype(np.float32)
        mask = rng.random((batch, 30)) < 0.8
        for t in range(20):
            a = one.step(x[:, t], mask=mask[:, t])
            b = two.step(x[:, t], mask=mask[:, t])
            assert np.abs(a - b).max() < 1e-6, t
        a = one.feed(x[:, 20:], mask=mask[:, 20:])
        b = two.feed(x[:, 20:], mask=mask[:, 20:])
        assert np.abs(a - b).max() < 1e-6
        assert np.abs(one.state - two.state).max() < 1e-6


def test_gru_rnn_threads_option(rng):
    """Validated like the LSTM's; kept through pickling; the automatic
    choice takes 2 threads only for wide layers on long enough calls."""
    make = _hidden_state_layer(rng, "gru", 4, 64)
    with pytest.raises(fastlstm.ConfigError, match=r"threads must be None"):
        make(threads=0)
    assert pickle.loads(pickle.dumps(make(threads=3)))._threads == 3
    two = min(2, fastlstm.get_num_threads())
    wide = _hidden_state_layer(rng, "gru", 4, 256)()
    assert wide._threads_for(1, 100) == two
    assert wide._threads_for(8, 100) == two
    assert wide._threads_for(1, 4) == 1  # too short to pay for a thread
    assert make()._threads_for(8, 100) == 1  # narrow layers never slower
    # from 512 KB of recurrent weights on: a GRU of 210 units, an RNN of 363
    assert (
        _hidden_state_layer(rng, "gru_reset_before", 4, 224)()._threads_for(1, 100)
        == two
    )
    assert _hidden_state_layer(rng, "simple", 4, 256)()._threads_for(1, 100) == 1
    assert _hidden_state_layer(rng, "simple", 4, 384)()._threads_for(1, 100) == two
