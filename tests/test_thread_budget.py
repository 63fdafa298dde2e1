"""The threads users control: fastlstm.set_num_threads / get_num_threads,
FASTLSTM_NUM_THREADS, threads= on load() and every model class, a
threadpoolctl controller; and an automatic choice that never
oversubscribes (CPU affinity, cgroup quotas, worker processes)."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
from _helpers import gru_rnn_weights

import fastlstm
from fastlstm import thread_budget

EXAMPLE = Path(fastlstm.__file__).parent / "examples" / "example_model.h5"
ONNX = Path(__file__).parent / "fixtures" / "onnx" / "single_lstm_node_bidirectional"


@pytest.fixture(autouse=True)
def fresh_budget(monkeypatch):
    """Each test starts with no limit, no environment variable and the
    automatic budget worked out again."""
    monkeypatch.delenv(thread_budget.ENV_VAR, raising=False)
    monkeypatch.setattr(thread_budget, "_budget", None)
    fastlstm.set_num_threads(None)
    yield
    fastlstm.set_num_threads(None)


def wide_gru(**kw):
    """A GRU whose calls take 2 threads automatically (768 KB of Wh)."""
    return fastlstm.GRU(*gru_rnn_weights(np.random.default_rng(0), 8, 256, 3), **kw)


def test_set_and_get_num_threads(monkeypatch):
    monkeypatch.setattr(thread_budget, "_usable_cpus", lambda: 4)
    assert fastlstm.get_num_threads() == 4  # automatic: the usable CPUs
    fastlstm.set_num_threads(1)
    assert fastlstm.get_num_threads() == 1
    assert wide_gru()._threads_for(1, 100) == 1  # the automatic choice
    assert wide_gru(threads=3)._threads_for(1, 100) == 1  # and threads=
    fastlstm.set_num_threads(3)
    assert wide_gru(threads=8)._threads_for(1, 100) == 3
    assert wide_gru()._threads_for(1, 100) == 2
    fastlstm.set_num_threads(None)
    assert fastlstm.get_num_threads() == 4


@pytest.mark.parametrize("bad", [0, 9, -1, 2.0, True, "2"])
def test_set_num_threads_is_validated(bad):
    with pytest.raises(fastlstm.ConfigError, match=r"set_num_threads\(n\): n must"):
        fastlstm.set_num_threads(bad)


def test_environment_variable(monkeypatch):
    monkeypatch.setenv(thread_budget.ENV_VAR, "1")
    assert fastlstm.get_num_threads() == 1
    assert wide_gru()._threads_for(1, 100) == 1
    fastlstm.set_num_threads(2)  # the call wins over the environment
    assert fastlstm.get_num_threads() == 2
    fastlstm.set_num_threads(None)
    monkeypatch.setenv(thread_budget.ENV_VAR, "many")
    with pytest.raises(fastlstm.ConfigError, match="FASTLSTM_NUM_THREADS"):
        fastlstm.get_num_threads()


@pytest.mark.parametrize(
    "files, quota",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000"}, 0.5),
        ({}, None),
    ],
)
def test_cgroup_quota(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert thread_budget.cgroup_cpu_quota(tmp_path) == quota


def test_automatic_budget_respects_quota_and_affinity(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # one CPU's worth
    monkeypatch.setattr(thread_budget, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(thread_budget.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert fastlstm.get_num_threads() == 1
    assert wide_gru()._threads_for(1, 100) == 1
    assert wide_gru(threads=2)._threads_for(1, 100) == 2  # asked: honoured
    (tmp_path / "cpu.max").write_text("max 100000\n")
    monkeypatch.setattr(thread_budget, "_budget", None)
    assert fastlstm.get_num_threads() == 3  # the affinity mask


def _child_view(_=None):
    limit = fastlstm.get_num_threads()
    fastlstm.set_num_threads(2)  # asked explicitly: honoured
    return thread_budget.worker_process(), limit, fastlstm.get_num_threads()


def _thread_view(_=None):
    return thread_budget.worker_process(), fastlstm.get_num_threads()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_one_thread_in_worker_processes(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} here")
    with multiprocessing.get_context(method).Pool(1) as pool:
        (kind, limit, asked) = pool.map(_child_view, [0])[0]
    assert kind == "a multiprocessing child" and limit == 1 and asked == 2


def test_one_thread_in_loky_workers():
    joblib = pytest.importorskip("joblib")
    got = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_child_view)() for _ in range(2)
    )
    assert all(kind is not None and limit == 1 for kind, limit, _ in got)


@pytest.mark.slow
def test_one_thread_in_dask_workers():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        got = client.gather(client.map(_thread_view, [0, 1]))
    assert got == [("a Dask worker", 1)] * 2


def test_threadpoolctl_lists_and_limits_fastlstm():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    ours = [
        i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "fastlstm"
    ]
    assert len(ours) == 1 and ours[0]["version"] == fastlstm.__version__
    assert ours[0]["num_threads"] == fastlstm.get_num_threads()
    with threadpoolctl.threadpool_limits(1):
        assert fastlstm.get_num_threads() == 1
        assert wide_gru(threads=2)._threads_for(1, 100) == 1
    assert thread_budget.explicit_limit() is None  # automatic again
    fastlstm.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1, user_api="fastlstm"):
        assert fastlstm.get_num_threads() == 1
    assert thread_budget.explicit_limit() == 2


def _recurrent_threads(model):
    """The threads= option of every recurrent cell a model built."""
    from fastlstm.engine.threads import ThreadChoice

    found = set()

    def walk(obj, depth=0):
        if isinstance(obj, ThreadChoice):
            found.add(obj._threads)
        elif depth < 4 and hasattr(obj, "__dict__"):
            for value in vars(obj).values():
                for item in value if isinstance(value, (list, tuple)) else [value]:
                    walk(item, depth + 1)

    for layer in model._graph.layers.values():
        walk(layer)
    assert found
    return found


def test_threads_option_on_load_and_model_classes():
    keras = fastlstm.load(EXAMPLE, threads=2)
    assert keras.threads == 2 and _recurrent_threads(keras) == {2}
    assert pickle.loads(pickle.dumps(keras)).threads == 2
    assert _recurrent_threads(fastlstm.load(EXAMPLE)) == {None}
    onnx_model = (
        fastlstm.load(ONNX / "model.onnx", threads=3)
        if (ONNX / "model.onnx").exists()
        else None
    )
    if onnx_model is not None:
        assert onnx_model.threads == 3 and _recurrent_threads(onnx_model) == {3}
        assert pickle.loads(pickle.dumps(onnx_model)).threads == 3
    rng = np.random.default_rng(1)
    cell = fastlstm.LSTMSpec.create(
        rng.normal(size=(3, 16)).astype(np.float32),
        rng.normal(size=(4, 16)).astype(np.float32),
    )
    torch_model = fastlstm.TorchLSTM([(cell, None)], threads=2)
    assert torch_model.threads == 2 and _recurrent_threads(torch_model) == {2}
    assert pickle.loads(pickle.dumps(torch_model)).threads == 2
    tf1 = fastlstm.TF1LSTM([cell], threads=4)
    assert tf1.threads == 4 and _recurrent_threads(tf1) == {4}
    with pytest.raises(fastlstm.ConfigError, match="threads must be"):
        fastlstm.load(EXAMPLE, threads=0)
    pytest.importorskip("onnx")
    onnx_model = fastlstm.load(ONNX / "model.onnx", threads=3)
    assert onnx_model.threads == 3 and _recurrent_threads(onnx_model) == {3}
    assert pickle.loads(pickle.dumps(onnx_model)).threads == 3


def test_c_core_version_matches_the_package():
    import ctypes

    from fastlstm import _core

    fn = ctypes.CDLL(_core.__file__).fl_version
    fn.restype = ctypes.c_char_p
    assert fn().decode() == fastlstm.__version__
