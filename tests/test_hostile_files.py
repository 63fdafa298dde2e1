"""Hostile files (tests/hostile_files.py) are harmless: each is loaded in a
child process, which must end with a fastlstm error naming the file and the
expected reason, within a generous time (a hang detector, not a speed
test), under 1 GB of peak memory, with no byte of another file in any
message or result."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import UNDER_SANITIZER
from hostile_files import CASES, SECRET, write_secret

CHILD = Path(__file__).parent / "hostile_child.py"
TIMEOUT_S = 10
MAX_RSS_BYTES = 1 << 30


def run_child(path, kwargs=None, predict=None, source="path") -> tuple[dict, int]:
    """The child's report and its peak RSS in bytes."""
    arg = json.dumps(
        {
            "path": str(path),
            "kwargs": kwargs or {},
            "predict": predict,
            "secret": SECRET.hex(),
            "source": source,
        }
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            pytest.fail(f"loading {path} hung for more than {TIMEOUT_S} s")
        time.sleep(0.02)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, f"child died ({proc.returncode}): {err[-2000:]}"
    report = json.loads(out.strip().splitlines()[-1])
    return report, report.get("peak_rss") or usage.ru_maxrss * 1024


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_is_refused(tmp_path, name):
    write_secret(tmp_path)
    case = CASES[name](tmp_path)
    report, rss = run_child(case.path, case.kwargs, case.predict)
    assert not report["leak"]
    if not UNDER_SANITIZER:
        assert rss < MAX_RSS_BYTES, f"{name}: peak RSS {rss >> 20} MiB"
    if case.match is None:  # legitimate, if unusual: loads (and runs)
        assert report.get("loaded") and report.get("predicted", True), report
        return
    assert "error" in report, f"{name} loaded: {report}"
    assert report["fastlstm_error"], report
    assert str(case.path) in report["message"] or case.path.name in report["message"]
    assert re.search(case.match, report["message"]), report["message"]


# What a model given as bytes or a file object is called in messages, and
# the refusal of formats that need files beside the model.
MEMORY_NAMES = {"bytes": "<bytes>", "fileobj": "<file object"}
NEEDS_A_PATH = r"load it by path|load the checkpoint by path|has no folder"


@pytest.mark.parametrize("source", sorted(MEMORY_NAMES))
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_from_memory_is_refused(tmp_path, name, source):
    """The same files given as bytes or as an open file object: the same
    refusal (or, for a format that needs companion files, a ConfigError
    saying to load by path), naming the source, never a leak."""
    write_secret(tmp_path)
    case = CASES[name](tmp_path)
    path = Path(case.path)
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 << 20:
        pytest.skip("not a regular file of a size a caller would hold in memory")
    report, rss = run_child(path, case.kwargs, case.predict, source)
    assert not report["leak"]
    if not UNDER_SANITIZER:
        assert rss < MAX_RSS_BYTES, f"{name}: peak RSS {rss >> 20} MiB"
    if case.match is None:
        assert report.get("loaded") or re.search(
            NEEDS_A_PATH, report.get("message", "")
        ), report
        return
    assert "error" in report, f"{name} loaded from {source}: {report}"
    assert report["fastlstm_error"], report
    assert MEMORY_NAMES[source] in report["message"], report["message"]
    assert re.search(f"{case.match}|{NEEDS_A_PATH}", report["message"]), report[
        "message"
    ]
