"""``fastlstm check FILE`` (does the model load and run?) and ``fastlstm
run FILE INPUT OUTPUT`` (a model over a .npy/.npz of inputs)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import fastlstm

__all__ = ["check", "run"]

# exit codes of check
RUNS, UNSUPPORTED, NOT_A_MODEL = 0, 1, 2


def check(path: str, options: dict) -> int:
    """0: the model loads and runs on zeros of its declared input shapes;
    1: it uses unsupported layers (all listed); 2: the file is corrupt, not
    a model, or needs an option (the message says which)."""
    try:
        model = fastlstm.load(path, **options)
        _call(model, _zeros(model))
    except fastlstm.UnsupportedLayerError as exc:
        print(f"fastlstm: {exc}", file=sys.stderr)
        return UNSUPPORTED
    except fastlstm.FastLSTMError as exc:
        print(f"fastlstm: {exc}", file=sys.stderr)
        return NOT_A_MODEL
    print(f"{path}: runs (fastlstm.{type(model).__name__})")
    return RUNS


def _zeros(model: Any) -> list:
    """A batch of one for each input: its declared shape, 2 for a size the
    file leaves open (the batch and time axes of most models)."""
    spec = model.spec
    shapes = [s if s is not None else (None, None, 1) for s in spec.input_shapes]
    if spec.conventions.get("calls") in ("torch_module", "torch_cell", "tf1"):
        shapes = shapes[:1]  # the states are optional
    return [np.zeros([1 if d is None else d for d in s], np.float32) for s in shapes]


def _call(model: Any, arrays: list) -> dict[str, np.ndarray]:
    """The model's outputs by name for these inputs (in the model's order)."""
    if isinstance(model, fastlstm.Model):
        outs = model.predict(arrays[0] if len(arrays) == 1 else arrays)
    elif isinstance(model, fastlstm.OnnxModel):
        feeds = dict(zip(model.input_names, arrays))
        return dict(zip(model.output_names, model.run(None, feeds)))
    else:  # PyTorch- and TF1-shaped models: model(x) -> nested outputs
        outs = model(arrays[0])
    flat: list = []
    _flatten(outs, flat)
    return {f"output_{k}": np.asarray(a) for k, a in enumerate(flat)}


def _flatten(obj: Any, out: list) -> None:
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _flatten(item, out)
    else:
        out.append(obj)


def run(path: str, source: str, dest: str, options: dict, batch_size: int) -> int:
    """Runs the model over the inputs in ``source`` (.npy: the one input;
    .npz: by input name, or in order) into ``dest`` (.npy for one output,
    else .npz by output name), ``batch_size`` rows at a time for Keras
    models, with a progress bar on stderr when there are several batches."""
    try:
        model = fastlstm.load(path, **options)
        arrays = _read_inputs(source, model)
        outs = _run_batches(model, arrays, batch_size)
    except (fastlstm.FastLSTMError, OSError, ValueError) as exc:
        print(f"fastlstm: {exc}", file=sys.stderr)
        return 1
    if dest.endswith(".npy"):
        if len(outs) != 1:
            print(
                f"fastlstm: the model has {len(outs)} outputs; write them to an "
                ".npz file",
                file=sys.stderr,
            )
            return 1
        np.save(dest, next(iter(outs.values())))
    else:
        np.savez(dest, **outs)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in outs.items())
    print(f"wrote {dest}: {shapes}")
    return 0


def _read_inputs(source: str, model: Any) -> list:
    data = np.load(source, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return [data]
    with data:
        names = _input_names(model)
        if all(n in data.files for n in names):
            return [data[n] for n in names]
        return [data[k] for k in data.files]


def _input_names(model: Any) -> list[str]:
    if isinstance(model, (fastlstm.Model, fastlstm.OnnxModel)):
        return list(model.input_names)
    return [r.layer for r in model.spec.inputs][:1]


def _run_batches(model: Any, arrays: list, batch_size: int) -> dict:
    n = len(arrays[0])
    if not isinstance(model, fastlstm.Model) or n <= batch_size:
        return _call(model, arrays)
    parts = []
    for start in range(0, n, batch_size):
        parts.append(_call(model, [a[start : start + batch_size] for a in arrays]))
        _progress(min(start + batch_size, n), n)
    print(file=sys.stderr)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _progress(done: int, total: int, width: int = 40) -> None:
    filled = width * done // total
    bar = "#" * filled + "-" * (width - filled)
    print(f"\r[{bar}] {done}/{total} rows", end="", file=sys.stderr, flush=True)
