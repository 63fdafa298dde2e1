"""How many threads fastlstm may use in this process.

A limit the user sets (``set_num_threads``, the ``FASTLSTM_NUM_THREADS``
environment variable, or threadpoolctl's ``threadpool_limits``) caps every
call, ``threads=`` options included. Without one, the automatic choice may
use up to the CPUs this process can really run on: those of its CPU
affinity, within its cgroup's CPU quota; and only one inside a worker
process (multiprocessing, concurrent.futures, joblib/loky, Dask), whose
siblings already fill the machine. A ``threads=`` option is honoured there.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from pathlib import Path

from fastlstm._inputs import is_count
from fastlstm.errors import ConfigError

__all__ = [
    "ENV_VAR",
    "MAX_THREADS",
    "automatic_budget",
    "cgroup_cpu_quota",
    "get_num_threads",
    "set_num_threads",
    "worker_process",
]

ENV_VAR = "FASTLSTM_NUM_THREADS"
MAX_THREADS = 8  # FL_MAX_THREADS in src_c/fl_pool.h
# Where this process's cgroup files are (tests point it elsewhere).
CGROUP_ROOT = Path("/sys/fs/cgroup")

_limit: int | None = None  # set_num_threads; None: automatic
_env_limit: tuple[str | None, int | None] = (None, None)  # (raw value, parsed)
_budget: tuple[int, int] | None = None  # (pid, automatic budget)


def check_count(n: object, name: str, allowed: str = "an integer") -> int:
    """``n`` as a thread count: an integer (a NumPy one too, never a bool)
    in [1, MAX_THREADS]; ``allowed`` says what the message offers."""
    if not is_count(n, MAX_THREADS):
        raise ConfigError(f"{name} must be {allowed} in [1, {MAX_THREADS}], got {n!r}")
    return int(n)


def set_num_threads(n: int | None) -> None:
    """Caps the threads of every fastlstm call in this process at ``n``
    (1 to 8); ``None`` returns to the automatic choice (or the
    FASTLSTM_NUM_THREADS environment variable, when set)."""
    global _limit
    _limit = None if n is None else check_count(n, "set_num_threads(n): n")


def get_num_threads() -> int:
    """The most threads one fastlstm call may use here: the limit set by
    set_num_threads, FASTLSTM_NUM_THREADS or threadpoolctl, else the
    automatic budget (see automatic_budget)."""
    limit = user_limit()
    return automatic_budget() if limit is None else limit


def explicit_limit() -> int | None:
    """What set_num_threads set (None: nothing, or reset)."""
    return _limit


def user_limit() -> int | None:
    """The limit the user set (set_num_threads first, then the
    environment variable), or None."""
    global _env_limit
    if _limit is not None:
        return _limit
    raw = os.environ.get(ENV_VAR)
    if raw != _env_limit[0]:  # parsed once per value
        parsed = None
        if raw not in (None, ""):
            try:
                parsed = check_count(int(raw), ENV_VAR)
            except ValueError:
                raise ConfigError(
                    f"{ENV_VAR} must be an integer in [1, {MAX_THREADS}], got {raw!r}"
                ) from None
        _env_limit = (raw, parsed)
    return _env_limit[1]


def capped(threads: int) -> int:
    """A call's ``threads=`` option within the user's limit."""
    limit = user_limit()
    return threads if limit is None else min(threads, limit)


def automatic_budget() -> int:
    """The CPUs this process can run on (affinity, within the cgroup CPU
    quota, at most MAX_THREADS); 1 in a worker process or a Dask worker
    thread. The process's part is worked out once per process."""
    global _budget
    pid = os.getpid()
    if _budget is None or _budget[0] != pid:
        n = 1 if _worker_child() else min(_usable_cpus(), MAX_THREADS)
        _budget = (pid, n)
    if _budget[1] > 1 and _dask_worker_thread():
        return 1
    return _budget[1]


def _usable_cpus() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(n, 1)


def cgroup_cpu_quota(root: Path | None = None) -> float | None:
    """CPUs' worth of time the cgroup allows per period (cgroup v2
    ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), or
    None when there is no quota or no cgroup files."""
    root = CGROUP_ROOT if root is None else Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def worker_process() -> str | None:
    """What kind of worker this code runs in, or None: a child process
    started by multiprocessing, which concurrent.futures, joblib's loky and
    Dask's nannies all use (it has a parent process, or its process name is
    not "MainProcess"); or a Dask worker thread (distributed's get_worker
    finds one: a LocalCluster(processes=False))."""
    return _worker_child() or ("a Dask worker" if _dask_worker_thread() else None)


def _worker_child() -> str | None:
    if multiprocessing.parent_process() is not None:
        return "a multiprocessing child"
    name = multiprocessing.current_process().name
    return None if name == "MainProcess" else f"a worker process ({name})"


def _dask_worker_thread() -> bool:
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except (ValueError, AttributeError):
        return False
    return True
