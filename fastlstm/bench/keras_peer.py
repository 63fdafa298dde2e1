"""Keras, timed in its own process (TensorFlow and PyTorch do not share a
process well): ``run_keras`` writes what to run to a JSON file and starts
``python -m fastlstm.bench.keras_peer SPEC``, which writes back times and
outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import numpy as np

from fastlstm.bench import peers
from fastlstm.bench.timing import median_time
from fastlstm.bench.workloads import sequence_input, weights


def worker(spec_path: str) -> None:
    """Runs in the Keras process: every sequence case, then the model."""
    spec = json.loads(Path(spec_path).read_text())
    eng = peers.Keras(spec["threads"])
    out: dict = {"version": eng.version(), "seq": {}, "model": {}}
    arrays = {}
    for key, (B, T, I, H) in spec["seq"].items():
        x = sequence_input(B, T, I)
        fn = eng.seq(weights(I, H))
        arrays[f"seq_{key}"] = np.asarray(fn(x), np.float32)
        out["seq"][key] = {"seconds": median_time(fn, x, spec["quick"])}
        _progress(f"sequence B, T, I, H = {key}")
    if spec.get("model"):
        try:  # the bundled model is a tf.keras file: tf_keras reads it natively
            import tf_keras as model_keras

            out["model_keras"] = f"tf_keras {model_keras.__version__}"
        except ImportError:
            model_keras = eng.keras
        model = model_keras.models.load_model(spec["model"], compile=False)
        for key, x in np.load(spec["model_inputs"]).items():
            fn = lambda a: model.predict(a, verbose=0)  # noqa: E731
            arrays[f"model_{key}"] = np.asarray(fn(x), np.float32)
            out["model"][key] = {"seconds": median_time(fn, x, spec["quick"])}
            _progress(f"the bundled model, {key}")
    np.savez(spec["arrays"], **arrays)
    Path(spec["result"]).write_text(json.dumps(out))


PROGRESS = "keras done: "  # how the worker's progress lines start


def _progress(what: str) -> None:
    print(PROGRESS + what, file=sys.stderr, flush=True)


def run_keras(
    seq_cases: dict,
    model: Path | None,
    model_inputs: dict,
    quick: bool,
    notes: list,
    progress: TextIO | None = None,
) -> tuple | None:
    """(result, arrays) from the Keras process, or None (with a note); the
    worker's progress lines go to ``progress``."""
    tmp = Path(tempfile.mkdtemp(prefix="fastlstm-bench-"))
    np.savez(tmp / "inputs.npz", **model_inputs)
    spec = {
        "seq": seq_cases,
        "threads": 1,
        "quick": quick,
        "model": str(model) if model else None,
        "model_inputs": str(tmp / "inputs.npz"),
        "arrays": str(tmp / "arrays.npz"),
        "result": str(tmp / "result.json"),
    }
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastlstm.bench.keras_peer", str(tmp / "spec.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    last = "?"
    for line in proc.stderr:  # type: ignore[union-attr]
        line = line.rstrip()
        if line.startswith(PROGRESS) and progress is not None:
            print(f"\n      {line}", end="", file=progress, flush=True)
        elif line:
            last = line
    try:
        if proc.wait() != 0:
            notes.append(f"keras skipped: {last}")
            return None
        result = json.loads((tmp / "result.json").read_text())
        with np.load(tmp / "arrays.npz") as saved:
            return result, {k: saved[k] for k in saved.files}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    worker(sys.argv[1])
