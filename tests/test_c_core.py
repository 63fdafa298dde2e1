"""Builds and runs the C core's own test program (src_c/tests/test_core.c):
plain, under AddressSanitizer + UndefinedBehaviorSanitizer, and under
valgrind memcheck when it is installed. The program checks the core against
a naive double-precision LSTM and counts allocations during forward passes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src_c"
CC = os.environ.get("CC", "cc")
WRAP = (
    "-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc,"
    "--wrap=pthread_create"
)

pytestmark = pytest.mark.skipif(shutil.which(CC) is None, reason="no C compiler")


def build(out: Path, *extra: str) -> Path:
    sources = sorted(map(str, SRC.glob("fl_*.c"))) + sorted(
        map(str, (SRC / "tests").glob("*.c"))
    )
    cmd = [
        CC,
        "-std=c11",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-fno-trapping-math",
        "-ffp-contract=fast",
        "-pthread",
        f"-I{SRC}",
        *extra,
        *sources,
        "-o",
        str(out),
        "-lm",
    ]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return out


def run_and_check(cmd: list[str], env: dict | None = None) -> str:
    # an LD_PRELOADed sanitizer runtime (the ASan run of the Python suite)
    # must not leak into these programs
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, **(env or {})},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    m = re.search(r"(\d+) passed, (\d+) failed", out)
    assert m and int(m.group(1)) > 500 and m.group(2) == "0", out[-4000:]
    return out


def test_c_core_optimized(tmp_path):
    exe = build(tmp_path / "test_core", "-O3", "-DFL_COUNT_MALLOC", WRAP)
    run_and_check([str(exe)])


# The paths a CPU may lack, forced on this one: FL_MAX_ISA=3 keeps the core
# to AVX2 + FMA, 1 to baseline x86-64 (no batch tiles, no woven projection,
# no AMX: the plan must choose the other paths, and they must match the
# reference). -march=native is the FASTLSTM_NATIVE=1 build.
@pytest.mark.parametrize(
    "variant",
    [
        ("avx2_only", "-DFL_MAX_ISA=3"),
        ("baseline", "-DFL_MAX_ISA=1"),
        ("native", "-march=native"),
    ],
    ids=lambda v: v[0],
)
def test_c_core_narrower_and_native_builds(tmp_path, variant):
    name, flag = variant
    exe = build(tmp_path / f"test_core_{name}", "-O2", flag)
    out = run_and_check([str(exe)])
    if name != "native":
        assert "batch tiles are not planned" in out
        assert "the woven projection is not planned" in out


@pytest.mark.slow
def test_c_core_under_asan_ubsan(tmp_path):
    try:
        exe = build(
            tmp_path / "test_core_san",
            "-O1",
            "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-DFL_COUNT_MALLOC",
            WRAP,
        )
    except subprocess.CalledProcessError as exc:
        if "sanitize" in exc.stderr or "asan" in exc.stderr:
            pytest.skip("compiler has no sanitizer runtime")
        raise
    out = run_and_check(
        [str(exe)],
        {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"},
    )
    assert "runtime error" not in out and "AddressSanitizer" not in out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_c_core_under_valgrind(tmp_path):
    exe = build(tmp_path / "test_core_vg", "-O1")
    out = run_and_check(
        [
            "valgrind",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "-q",
            str(exe),
        ]
    )
    assert "Invalid" not in out and "definitely lost" not in out


@pytest.mark.slow
def test_c_core_under_thread_sanitizer(tmp_path):
    """The threaded paths (fl_parallel.c, fl_layer_forward.c) have no data
    races. TSan
    cannot run ifunc-dispatched code, hence FL_NO_CLONES."""
    try:
        exe = build(
            tmp_path / "test_core_tsan", "-O1", "-fsanitize=thread", "-DFL_NO_CLONES"
        )
    except subprocess.CalledProcessError as exc:
        if "sanitize" in exc.stderr or "tsan" in exc.stderr:
            pytest.skip("compiler has no thread sanitizer runtime")
        raise
    out = run_and_check([str(exe)])
    assert "ThreadSanitizer" not in out
