"""Runs a ModelSpec graph: builds its runtime layers once, then evaluates
its nodes in order, passing arrays and masks from layer to layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastlstm.engine.build import build_layer
from fastlstm.engine.layers import InputLayer, Layer, RunContext
from fastlstm.engine.ops import op_budget
from fastlstm.engine.recurrent import Carry
from fastlstm.errors import DTypeError, FastLSTMError, ShapeError
from fastlstm.model_spec import ConstantSpec, ModelSpec, OpSpec, RecurrentSpec
from fastlstm.spec import check_elements

__all__ = ["Graph", "RunContext"]


class Graph:
    """The runtime of a ModelSpec. Stateless once built; per-call state
    (stateful layers, streams) lives in the RunContext a caller passes."""

    def __init__(self, spec: ModelSpec, nan_policy: str = "raise") -> None:
        spec.validate()
        self.spec = spec
        self.layers: dict[str, Layer] = {
            ls.name: build_layer(ls, nan_policy) for ls in spec.layers
        }
        used = {n.layer for n in spec.nodes}
        self.stateful_names = [
            name for n in sorted(used) for name in self.layers[n].carry_names()
        ]
        self.time_major = any(
            isinstance(ls, RecurrentSpec) and ls.time_major and ls.name in used
            for ls in spec.layers
        )
        self._folded: dict[tuple, tuple] = {}
        self._folded_nodes: set[tuple] = set()
        self._fold_constants()

    def _fold_constants(self) -> None:
        """Evaluates once the nodes that depend on constants only (array
        ops over initializers); their allocations are charged to a budget
        of the constants' bytes."""
        constants = [
            ls.value for ls in self.spec.layers if isinstance(ls, ConstantSpec)
        ]
        if not constants:
            return
        ctx = self.context([])
        ctx.budget = op_budget(self.spec.source or self.spec.name, constants)
        for node in self.spec.nodes:
            layer = self.layers[node.layer]
            refs = [r for r in node.inputs if r is not None]
            if not isinstance(layer.spec, (ConstantSpec, OpSpec)) or (
                isinstance(layer.spec, OpSpec) and layer.spec.op == "Shape"
            ):
                continue
            if not all((r.layer, r.node) in self._folded_nodes for r in refs):
                continue
            ins = [
                None if r is None else self._folded[(r.layer, r.node, r.tensor)][0]
                for r in node.inputs
            ]
            outs, _ = layer.call(ins, [None] * len(ins), node, ctx)
            for i, o in enumerate(outs):
                self._folded[(node.layer, node.index, i)] = (o, None)
            self._folded_nodes.add((node.layer, node.index))

    @property
    def input_names(self) -> list[str]:
        return [r.layer for r in self.spec.inputs]

    def context(self, names: list[str] | None = None) -> RunContext:
        """A fresh context keeping state for ``names`` (default: the
        stateful layers)."""
        names = self.stateful_names if names is None else names
        return RunContext(
            {name: Carry() for name in names},
            input_names={n: f"input {n!r}" for n in self.input_names},
        )

    def recurrent_names(self) -> list[str]:
        """Every state-keeping name of every recurrent layer (for streams)."""
        out = []
        for layer in self.layers.values():
            spec = layer.spec
            if isinstance(spec, RecurrentSpec):
                out.append(spec.name)
        return out

    def streaming_problem(self) -> str | None:
        """Why this graph cannot run piece by piece, or None."""
        for node in self.spec.nodes:
            layer = self.layers[node.layer]
            if not layer.streams:
                return (
                    f"layer {layer.name!r} ({layer.class_name}) cannot stream: it "
                    "needs the whole sequence before its first output"
                )
        if self.time_major:
            return "time-major models cannot stream"
        return None

    def input_arrays(self, x: Any, streaming: bool = False) -> list[np.ndarray]:
        """Checked input arrays from one array, a list, or a dict by name. A
        stream feeds pieces of the sequence, so there the declared time
        length (axis 1 of 3-D inputs) is not enforced."""
        names = self.input_names
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise ShapeError(
                    f"inputs by name: missing {missing}, unknown {extra}; "
                    f"the model's inputs are {names}"
                )
            items = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(names) > 1:
            items = list(x)
        else:
            items = [x]
        if len(items) != len(names):
            raise ShapeError(
                f"the model takes {len(names)} inputs {names}, got {len(items)}"
            )
        arrays = [
            _input_array(name, item, shape, streaming)
            for name, item, shape in zip(names, items, self.spec.input_shapes)
        ]
        batches = {a.shape[0] for a in arrays} if not self.time_major else set()
        if len(batches) > 1:
            raise ShapeError(f"inputs have different batch sizes: {sorted(batches)}")
        return arrays

    def run(
        self, arrays: list[np.ndarray], ctx: RunContext, record: dict | None = None
    ) -> list[np.ndarray]:
        """Evaluates the graph; ``record`` (if given) collects each node's
        output shapes."""
        values: dict[tuple, tuple] = dict(self._folded)
        for ref, arr in zip(self.spec.inputs, arrays):
            values[(ref.layer, ref.node, ref.tensor)] = (arr, None)
        for node in self.spec.nodes:
            if (node.layer, node.index) in self._folded_nodes:
                continue
            layer = self.layers[node.layer]
            if isinstance(layer, InputLayer):
                if (node.layer, 0, 0) not in values:
                    raise ShapeError(f"input layer {node.layer!r} got no value")
                continue
            xs, ms = self._node_inputs(node, values)
            try:
                outs, masks = layer.call(xs, ms, node, ctx)
            except FastLSTMError as exc:
                if f"{node.layer!r}" in str(exc):
                    raise
                raise type(exc)(
                    f"layer {node.layer!r} ({layer.class_name}): {exc}"
                ) from None
            for i, (o, m) in enumerate(zip(outs, masks)):
                values[(node.layer, node.index, i)] = (o, m)
            if record is not None:
                record[(node.layer, node.index)] = [np.shape(o) for o in outs]
        if record is not None:
            for ref, a in zip(self.spec.inputs, arrays):
                record[(ref.layer, 0)] = [a.shape]
        return [values[(r.layer, r.node, r.tensor)][0] for r in self.spec.outputs]

    def _node_inputs(self, node: Any, values: dict) -> tuple[list, list]:
        """(arrays, masks) a node passes to its layer: positional inputs,
        then initial states; the explicit mask, else (implicit masks) each
        input's own."""
        got = [
            (None, None) if r is None else values[(r.layer, r.node, r.tensor)]
            for r in node.inputs
        ]
        xs = [v[0] for v in got]
        ms = [v[1] for v in got] if self.spec.implicit_masks else [None] * len(got)
        if node.mask is not None:
            mask = values[(node.mask.layer, node.mask.node, node.mask.tensor)][0]
            ms = [np.asarray(mask, bool)] + ms[1:]
        xs += [values[(r.layer, r.node, r.tensor)][0] for r in node.initial_state]
        return xs, ms

    def structured(self, outs: list) -> Any:
        """Outputs nested as the framework returns them; one unwrapped."""
        structure = self.spec.output_structure

        def nest(st: Any) -> Any:
            return outs[st] if isinstance(st, int) else [nest(s) for s in st]

        result = outs if structure is None else nest(structure)
        if isinstance(result, list) and len(result) == 1:
            return result[0]
        return result


def _input_array(name: str, item: Any, shape: Any, streaming: bool) -> np.ndarray:
    try:
        arr = np.asarray(item)
    except Exception as exc:  # ragged lists and other oddities
        raise DTypeError(f"input {name!r} cannot be read as an array: {exc}") from exc
    check_elements(arr.shape, f"input {name!r}")
    if arr.dtype.kind not in "fiub":
        raise ShapeError(f"input {name!r} has dtype {arr.dtype}; numbers expected")
    if shape is not None:
        free = {0, 1} if streaming and len(shape) == 3 else {0}
        if arr.ndim != len(shape) or any(
            d is not None and k not in free and d != s
            for k, (d, s) in enumerate(zip(shape, arr.shape))
        ):
            raise ShapeError(
                f"input {name!r} has shape {arr.shape} but the model "
                f"expects {tuple(shape)} (None = any size)"
            )
    if arr.size == 0:
        raise ShapeError(f"input {name!r} is empty: shape {arr.shape}")
    return arr
