"""Scale-out as docs/scaling.md describes it: a model pickles as its
weights (about 1x their bytes) and gives the same bits in multiprocessing,
joblib, Dask (a LocalCluster of 2 worker processes) and Ray workers as in
the calling process, chunk for chunk (a batch of another size may take
another kernel, which rounds differently in the last bit)."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
from _helpers import spec_arrays

import fastlstm

EXAMPLE = Path(fastlstm.__file__).parent / "examples" / "example_model.h5"
TORCH = (
    Path(__file__).parent / "fixtures" / "torch" / "lstm_long_t1000_h256" / "model.pt"
)


@pytest.fixture(scope="module")
def model():
    return fastlstm.load(EXAMPLE)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(40, 12, 16)).astype(np.float32)


def weight_bytes(spec) -> int:
    return sum(a.nbytes for a in spec_arrays(spec))


def local(model, x, rows):
    """What the calling process gives for the same chunks."""
    return np.concatenate(
        [model.predict(x[k : k + rows]) for k in range(0, len(x), rows)]
    )


def test_a_pickled_model_costs_about_its_weights(model):
    for m in (model, fastlstm.load(TORCH, batch_first=False)):
        size, weights = len(pickle.dumps(m)), weight_bytes(m.spec)
        assert size <= 2 * weights + 64 * 1024, (size, weights)


def _predict(args):
    blob, chunk = args
    m = pickle.loads(blob)
    return m.predict(chunk), fastlstm.get_num_threads()


def test_multiprocessing_workers_give_the_same_bits(model, x):
    want = local(model, x, 20)
    blob = pickle.dumps(model)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        got = pool.map(_predict, [(blob, x[:20]), (blob, x[20:])])
    np.testing.assert_array_equal(np.concatenate([g for g, _ in got]), want)
    assert all(threads == 1 for _, threads in got)  # one thread per worker


def test_joblib_workers_give_the_same_bits(model, x):
    joblib = pytest.importorskip("joblib")
    parts = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(model.predict)(x[k : k + 10]) for k in range(0, 40, 10)
    )
    np.testing.assert_array_equal(np.concatenate(parts), local(model, x, 10))


def test_dask_cluster_gives_the_same_bits(model, x):
    """The recipes of docs/scaling.md: the model scattered to the workers
    once, then Dask arrays (and DataFrames, with pandas) by chunk."""
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        model_future = client.scatter(model, broadcast=True)
        arr = da.from_array(x, chunks=(10, None, None))
        y = arr.map_blocks(
            lambda b, m: m.predict(b),
            model_future,
            drop_axis=2,
            chunks=(10, 1),
            dtype="float32",
        )
        np.testing.assert_array_equal(y.compute(), local(model, x, 10))
        try:
            import dask.dataframe as dd
            import pandas as pd
        except ImportError:
            return
        flat = pd.DataFrame(x.reshape(len(x), -1))
        ddf = dd.from_pandas(flat, npartitions=4)
        meta = pd.DataFrame({0: pd.Series(dtype="float32")})
        got = ddf.map_partitions(
            _predict_partition, model_future, 12, 16, meta=meta
        ).compute()
        np.testing.assert_array_equal(got.to_numpy(), local(model, x, 10))


def _predict_partition(df, model, T, F):
    import pandas as pd

    out = model.predict(df.to_numpy(np.float32).reshape(len(df), T, F))
    return pd.DataFrame(out, index=df.index)


def test_ray_workers_give_the_same_bits(model, x):
    """Ray tasks on a shipped model, and the Ray Data recipe of
    docs/scaling.md (a class that loads the model once per worker)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        remote = ray.remote(lambda m, a: m.predict(a))
        ref = ray.put(model)
        got = ray.get([remote.remote(ref, x[k : k + 20]) for k in (0, 20)])
        np.testing.assert_array_equal(np.concatenate(got), local(model, x, 20))
        data = pytest.importorskip("ray.data")
        path = str(EXAMPLE)

        class Predict:  # local: Ray ships it by value to its workers
            def __init__(self):
                self.model = fastlstm.load(path)

            def __call__(self, batch):
                return {"y": self.model.predict(np.stack(batch["x"]))}

        data.DataContext.get_current().execution_options.preserve_order = True
        ds = data.from_items([{"x": row} for row in x])
        rows = ds.map_batches(Predict, batch_size=10, concurrency=2).take_all()
        got = np.stack([r["y"] for r in rows])
        np.testing.assert_array_equal(got, local(model, x, 10))
    finally:
        ray.shutdown()
