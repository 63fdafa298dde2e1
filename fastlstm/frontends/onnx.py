"""ONNX graphs run like ONNX Runtime.

``Y, Y_h, Y_c = model(X, sequence_lens=None, initial_h=None, initial_c=None)``
for a single-node graph; in general ``model(*inputs, **named_inputs)``
returns the list of graph outputs, in the graph's order (as
``InferenceSession.run(None, feeds)`` does). The reader
(``loaders/onnx_reader``) makes the canonical graph; this class feeds it by
input name and returns outputs by name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from fastlstm.engine.graph import Graph
from fastlstm.engine.layers import RunContext
from fastlstm.engine.ops import op_budget
from fastlstm.errors import ConfigError, ShapeError
from fastlstm.loaders.onnx_graph import Graph as OnnxGraph
from fastlstm.loaders.onnx_reader import graph_spec, read_onnx_model
from fastlstm.model_spec import ConstantSpec, ModelSpec, RecurrentOpSpec
from fastlstm.spec import CELL_SPECS

__all__ = ["OnnxModel", "from_onnx"]


class NodeArg(NamedTuple):
    """A graph input or output as ONNX Runtime's ``get_inputs()`` gives it:
    its declared shape (None for a named or unknown dimension, or for no
    declared shape) and element type ("tensor(float)"; None if undeclared)."""

    name: str
    shape: list | None
    type: str | None


class OnnxModel:
    """An ONNX graph of LSTM nodes and glue, run like ONNX Runtime."""

    def __init__(
        self,
        graph: OnnxGraph | ModelSpec | str | os.PathLike | bytes,
        *,
        numpy_fallback: bool = True,
        threads: int | None = None,
    ) -> None:
        if isinstance(graph, OnnxGraph):
            graph = graph_spec(graph, numpy_fallback=numpy_fallback)
        elif not isinstance(graph, ModelSpec):  # a path, bytes or ModelProto
            graph = read_onnx_model(graph, numpy_fallback=numpy_fallback)
        self.spec = graph
        self._numpy_fallback = bool(numpy_fallback)
        self._graph = Graph(graph, nan_policy="propagate", threads=threads)
        conv = graph.conventions
        self.input_names = list(conv["input_names"])
        self.output_names = list(conv["output_names"])
        self._input_set = set(self.input_names)
        self._declared = dict(zip(self.input_names, graph.input_shapes))
        self._output_index = {n: k for k, n in enumerate(self.output_names)}
        self.opset = conv["opset"]
        self._optional = self._optional_inputs()
        self._constant_bytes = sum(
            int(np.asarray(ls.value).nbytes)
            for ls in graph.layers
            if isinstance(ls, ConstantSpec)
        )
        self._run_where = f"{graph.source}: run"

    def _optional_inputs(self) -> dict[str, str | None]:
        """Per graph input: None if every reader of it is a recurrent op's
        optional input (lengths, h0, c0), else the first node that needs it."""
        layers = {ls.name: ls for ls in self.spec.layers}
        by_ref = dict(zip((r.layer for r in self.spec.inputs), self.input_names))
        needed: dict[str, str | None] = {name: None for name in self.input_names}
        for node in self.spec.nodes:
            for pos, r in enumerate(node.inputs):
                name = by_ref.get(r.layer) if r is not None else None
                if name is None or needed[name] is not None:
                    continue
                optional = isinstance(layers[node.layer], RecurrentOpSpec) and pos
                if not optional:
                    needed[name] = (
                        f"node {node.layer!r} ({layers[node.layer].class_name})"
                    )
        return needed

    def __reduce__(self) -> tuple:
        """Pickles the canonical graph (NumPy arrays), never C pointers;
        unpickling rebuilds the model from it."""
        return (_rebuild, (self.spec, self._numpy_fallback, self.threads))

    threads = property(
        lambda self: self._graph.threads,
        doc="The threads= option (None: automatic, see fastlstm.get_num_threads).",
    )

    @property
    def recurrent_nodes(self) -> list[dict]:
        """Per LSTM, GRU or RNN node: name, op, direction, and whether each
        direction runs on the engine or (and why) on the NumPy fallback."""
        out = []
        for ls in self.spec.layers:
            if not isinstance(ls, RecurrentOpSpec):
                continue
            dirs = ls.directions
            if len(dirs) == 2:
                direction = "bidirectional"
            else:
                direction = "reverse" if dirs[0].go_backwards else "forward"
            out.append(
                {
                    "name": ls.name,
                    "op": ls.class_name,
                    "direction": direction,
                    "engine": [isinstance(d, CELL_SPECS) for d in dirs],
                    "fallback_reason": [getattr(d, "reason", "") for d in dirs],
                }
            )
        return out

    def __repr__(self) -> str:
        return (
            f"OnnxModel(inputs={self.input_names}, outputs={self.output_names}, "
            f"recurrent_nodes={len(self.recurrent_nodes)}, opset={self.opset})"
        )

    def get_inputs(self) -> list[NodeArg]:
        """The graph's inputs, as ``InferenceSession.get_inputs()``."""
        return [self._node_arg(n) for n in self.input_names]

    def get_outputs(self) -> list[NodeArg]:
        """The graph's outputs, as ``InferenceSession.get_outputs()``."""
        return [self._node_arg(n) for n in self.output_names]

    def _node_arg(self, name: str) -> NodeArg:
        shape, kind = self.spec.conventions.get("declared", {}).get(name, (None, None))
        return NodeArg(name, None if shape is None else list(shape), kind)

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """Graph outputs for inputs given by position (graph order) or name;
        optional inputs (sequence_lens, initial_h, ...) may be left out."""
        if len(args) > len(self.input_names):
            raise ConfigError(
                f"{len(args)} positional inputs, the graph has "
                f"{len(self.input_names)}: {self.input_names}"
            )
        feeds = dict(zip(self.input_names, args))
        for name, value in kwargs.items():
            if name in feeds:
                raise ConfigError(f"input {name!r} given twice")
            feeds[name] = value
        return self.run(None, feeds)

    def run(
        self, output_names: Sequence[str] | None, feeds: dict[str, Any]
    ) -> list[np.ndarray]:
        """ONNX Runtime's ``InferenceSession.run(output_names, feeds)``."""
        if not feeds.keys() <= self._input_set:
            unknown = sorted(set(feeds) - self._input_set)
            raise ConfigError(
                f"unknown input(s) {unknown}; the graph's inputs are {self.input_names}"
            )
        arrays = [self._feed(name, feeds.get(name)) for name in self.input_names]
        budget = op_budget(self._run_where, arrays, self._constant_bytes)
        outs = self._graph.run(arrays, RunContext({}, budget=budget))
        if output_names is None:
            return outs
        missing = [n for n in output_names if n not in self._output_index]
        if missing:
            raise ConfigError(
                f"output(s) {missing} not computed; outputs: {self.output_names}"
            )
        return [outs[self._output_index[n]] for n in output_names]

    def _feed(self, name: str, value: Any) -> np.ndarray | None:
        if value is None:
            needer = self._optional[name]
            if needer is not None:
                raise ConfigError(
                    f"input {name!r} is required by {needer} but was not given"
                )
            return None
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        shape = self._declared.get(name)
        if shape is not None and (
            arr.ndim != len(shape)
            or any(d is not None and d != s for d, s in zip(shape, arr.shape))
        ):
            raise ShapeError(
                f"input {name!r} has shape {arr.shape}, but the model declares "
                f"{shape} (None = any size)"
            )
        return arr


def _rebuild(
    spec: ModelSpec, numpy_fallback: bool, threads: int | None = None
) -> OnnxModel:
    """Unpickles an OnnxModel (see OnnxModel.__reduce__)."""
    return OnnxModel(spec, numpy_fallback=numpy_fallback, threads=threads)


def from_onnx(
    model: Any, *, numpy_fallback: bool = True, threads: int | None = None
) -> OnnxModel:
    """An OnnxModel from an .onnx path, its bytes, or an onnx.ModelProto."""
    return OnnxModel(
        read_onnx_model(model, numpy_fallback=numpy_fallback),
        numpy_fallback=numpy_fallback,
        threads=threads,
    )
