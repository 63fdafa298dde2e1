"""Packaging behaviour that users hit: a readable error when the extension
is missing, and the demo command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import fastlstm

PKG = Path(fastlstm.__file__).parent


def test_unbuilt_extension_gives_a_readable_error(tmp_path):
    src = tmp_path / "fastlstm"
    shutil.copytree(
        PKG, src, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__")
    )
    # an editable install adds a finder that would locate the checkout's built
    # extension; drop it so the copy behaves like an unbuilt checkout
    code = (
        "import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in "
        "getattr(f, '__module__', '') + repr(f)]; sys.path_hooks[:] = [h for h in "
        "sys.path_hooks if 'editable' not in repr(h)]; "
        "sys.path_importer_cache.clear(); import fastlstm"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastlstm's compiled extension")
    assert "pip install" in last


def test_demo_runs_and_checks_itself():
    proc = subprocess.run(
        [sys.executable, "-m", "fastlstm", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK: fastlstm reproduces Keras")
    err = float(proc.stdout.split("max |fastlstm - Keras| = ")[1].split()[0])
    assert err < 1e-5


def test_inspect_command(tmp_path):
    from importlib import resources

    path = resources.files("fastlstm.examples").joinpath("example_model.h5")
    proc = subprocess.run(
        [sys.executable, "-m", "fastlstm", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Keras .h5 (full model)" in out and "written by Keras 2.21.0" in out
    assert "lstm (LSTM)" in out and "20736" in out and "Total params: 33,185" in out
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"nonsense")
    proc = subprocess.run(
        [sys.executable, "-m", "fastlstm", "inspect", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "not a model file" in proc.stderr
