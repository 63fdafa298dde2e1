"""The same cases as run.py for pytest-benchmark (fastlstm only; run.py
compares the peers):

    pip install ".[bench]" && python -m pytest benchmarks/test_bench.py

Not part of the test suite (tests/ holds no timed asserts)."""

from __future__ import annotations

import numpy as np
import pytest

import fastlstm
from fastlstm.bench.workloads import weights

pytest.importorskip("pytest_benchmark")


@pytest.mark.parametrize("H", [32, 64, 128, 256, 512])
def test_stream_step(benchmark, H):
    w = weights(64, H)
    stream = fastlstm.LSTM(*w.values(), threads=1).stream(1)
    x = np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)
    out = np.empty((1, H), np.float32)
    benchmark(stream.step, x, out=out)


@pytest.mark.parametrize("H", [32, 128, 256, 512])
@pytest.mark.parametrize("threads", [1, 2])
def test_sequence_batch1(benchmark, H, threads):
    layer = fastlstm.LSTM(
        *weights(H, H).values(), return_sequences=True, threads=threads
    )
    x = np.random.default_rng(3).normal(size=(1, 1000, H)).astype(np.float32)
    benchmark(layer, x)


@pytest.mark.parametrize("B,T,I,H", [(64, 100, 128, 256), (64, 1000, 128, 512)])
def test_batches(benchmark, B, T, I, H):
    layer = fastlstm.LSTM(*weights(I, H).values(), return_sequences=True, threads=1)
    x = np.random.default_rng(3).normal(size=(B, T, I)).astype(np.float32)
    benchmark.pedantic(layer, args=(x,), rounds=3, iterations=1)


@pytest.mark.parametrize("batch", [1, 32])
def test_keras_model_predict(benchmark, batch):
    from importlib import resources

    files = resources.files("fastlstm.examples")
    with resources.as_file(files.joinpath("example_model.h5")) as path:
        model = fastlstm.load(path)
    x = dict(np.load(files.joinpath("example_io.npz").open("rb")))["x"]
    x = np.resize(x, (batch, *x.shape[1:]))
    benchmark(model.predict, x)
