"""What every subcommand that loads a model shares: the load options and
the description of a loaded model (for inspect, as text or JSON)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

import fastlstm
from fastlstm.model_spec import ConstantSpec, InputSpec

__all__ = ["add_load_options", "load_options", "describe"]


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="C",
        help="the architecture (JSON file) of a Keras weights-only file",
    )
    parser.add_argument(
        "--prefix",
        metavar="P",
        help="which recurrent module of a PyTorch file holding several",
    )
    parser.add_argument(
        "--batch-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="how a PyTorch nn.LSTM/GRU/RNN takes its input (the file does "
        "not record it)",
    )
    parser.add_argument(
        "--nonlinearity",
        choices=("tanh", "relu"),
        help="a PyTorch nn.RNN's nonlinearity (the file does not record it)",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="threads per call (1-8)"
    )


def load_options(args: argparse.Namespace) -> dict:
    """fastlstm.load's keyword arguments from the parsed options given."""
    names = ("config", "prefix", "batch_first", "nonlinearity", "threads")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def describe(model: Any, path: str) -> dict:
    """Format, producer, inputs, outputs and layers of a loaded model."""
    spec = model.spec
    conv = dict(spec.conventions)
    producer = conv.get("producer") or (
        f"Keras {spec.keras_version}" if spec.keras_version else ""
    )
    in_names = conv.get("input_names") or [r.layer for r in spec.inputs]
    out_names = conv.get("output_names") or [
        r.layer if r.tensor == 0 else f"{r.layer}[{r.tensor}]" for r in spec.outputs
    ]
    out_shapes = model.outputs if isinstance(model, fastlstm.Model) else None
    layers = [
        {"name": ls.name, "class": ls.class_name, "parameters": ls.param_count()}
        for ls in spec.layers
        if not isinstance(ls, (InputSpec, ConstantSpec))
    ]
    constants = sum(
        int(np.asarray(ls.value).size)
        for ls in spec.layers
        if isinstance(ls, ConstantSpec)
    )
    return {
        "file": path,
        "format": spec.source_format,
        "producer": producer,
        "model": type(model).__name__,
        "repr": repr(model),
        "inputs": [
            {"name": n, "shape": None if s is None else list(s)}
            for n, s in zip(in_names, spec.input_shapes)
        ],
        "outputs": [
            {"name": n, "shape": None if not out_shapes else _list(out_shapes[k])}
            for k, n in enumerate(out_names)
        ],
        "layers": layers,
        # an ONNX graph keeps its weights as initializers: they count
        "parameters": sum(x["parameters"] for x in layers) + constants,
    }


def _list(shape: Any) -> list | None:
    return None if shape is None else list(shape)
