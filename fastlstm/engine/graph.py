"""Runs a ModelSpec graph: builds its runtime layers once, then evaluates
its nodes in order, passing arrays and masks from layer to layer."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from fastlstm.engine.build import build_layer
from fastlstm.engine.layers import InputLayer, Layer, RunContext
from fastlstm.engine.ops import op_budget
from fastlstm.engine.plan import Step, fuse
from fastlstm.engine.recurrent import Carry
from fastlstm.engine.threads import check_threads
from fastlstm.errors import DTypeError, FastLSTMError, ShapeError
from fastlstm.model_spec import ConstantSpec, ModelSpec, OpSpec, RecurrentSpec
from fastlstm.spec import check_elements

__all__ = ["Graph", "RunContext"]

# Values that depend only on the inputs' shapes (exporters' Shape -> Gather
# -> Concat -> Expand chains) are computed once per input shape and kept
# for this many distinct shapes, and at most this many bytes in all.
SHAPE_CACHE_ENTRIES = 16
SHAPE_CACHE_BYTES = 64 << 20
# The inputs (by position) from whose values these ops take their result's
# shape; every other input of every op only passes its shape on.
SHAPE_INPUTS = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Split": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceSum": (1,),
}


class Graph:
    """The runtime of a ModelSpec. Stateless once built; per-call state
    (stateful layers, streams) lives in the RunContext a caller passes."""

    def __init__(
        self, spec: ModelSpec, nan_policy: str = "raise", threads: int | None = None
    ) -> None:
        spec.validate()
        self.spec = spec
        self.threads = check_threads(threads)
        self.layers: dict[str, Layer] = {
            ls.name: build_layer(ls, nan_policy, self.threads) for ls in spec.layers
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
        self._shape_nodes = self._shape_determined()
        self._shape_cache: OrderedDict = OrderedDict()
        self._shape_lock = threading.Lock()
        self._shape_keys = {(n.layer, n.index) for n in self._shape_nodes}
        # every node not folded; and without the shape-determined ones, for
        # calls whose input shapes the cache knows
        self._plan_whole = [
            Step(node, self.layers[node.layer])
            for node in spec.nodes
            if (node.layer, node.index) not in self._folded_nodes
        ]
        outputs = {(r.layer, r.node, r.tensor) for r in spec.outputs}
        self._plan = fuse(self._plan_whole, self._folded, outputs)
        self._plan_cached = fuse(
            [s for s in self._plan_whole if s.key not in self._shape_keys],
            self._folded,
            outputs,
        )

    def _shape_determined(self) -> list:
        """The op nodes (in order) whose values depend only on the graph
        inputs' shapes. A value's shape is so determined when its node's
        inputs' shapes are, and the inputs an op reads a shape from (a
        Reshape's target, an Expand's shape, ...) are so determined values;
        Shape of such a value is one."""
        fixed_shape = {(r.layer, r.node) for r in self.spec.inputs}
        fixed_value = set(self._folded_nodes)
        out = []
        for node in self.spec.nodes:
            key = (node.layer, node.index)
            if key in fixed_value:
                continue
            spec = self.layers[node.layer].spec
            refs = [None if r is None else (r.layer, r.node) for r in node.inputs]
            given = [r for r in refs if r is not None]
            shapes = all(r in fixed_shape or r in fixed_value for r in given)
            if isinstance(spec, OpSpec) and spec.op == "Shape":
                if given and shapes:
                    fixed_value.add(key)
                    out.append(node)
                continue
            reads = SHAPE_INPUTS.get(spec.op, ()) if isinstance(spec, OpSpec) else ()
            if shapes and all(
                refs[k] is None or refs[k] in fixed_value
                for k in reads
                if k < len(refs)
            ):
                fixed_shape.add(key)
            if (
                isinstance(spec, OpSpec)
                and given
                and all(r in fixed_value for r in given)
            ):
                fixed_value.add(key)
                out.append(node)
        return out

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
        calls: dict[str, int] = {}
        for node in self.spec.nodes:
            calls[node.layer] = calls.get(node.layer, 0) + 1
        for name in self.recurrent_names():
            if calls.get(name, 0) > 1:
                return (
                    f"layer {name!r} is called {calls[name]} times: a stream keeps "
                    "one state per recurrent layer"
                )
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

    def input_arrays(
        self, x: Any, streaming: bool = False, empty_batch: bool = False
    ) -> list[np.ndarray]:
        """Checked input arrays from one array, a list, or a dict by name. A
        stream feeds pieces of the sequence, so there the declared time
        length (axis 1 of 3-D inputs) is not enforced. ``empty_batch``:
        batch-major inputs may have zero rows (nothing else empty)."""
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
        rows_may_be_empty = empty_batch and not self.time_major
        arrays = [
            _input_array(name, item, shape, streaming, rows_may_be_empty)
            for name, item, shape in zip(names, items, self.spec.input_shapes)
        ]
        batches = {a.shape[0] for a in arrays} if not self.time_major else set()
        if len(batches) > 1:
            raise ShapeError(f"inputs have different batch sizes: {sorted(batches)}")
        return arrays

    def run(
        self,
        arrays: list[np.ndarray],
        ctx: RunContext,
        record: dict | None = None,
        masks: list | None = None,
    ) -> list[np.ndarray]:
        """Evaluates the graph; ``masks`` (one per input, or None) are the
        inputs' own masks, as Keras' ``model(x, mask=...)`` gives them to
        the first layers; ``record`` (if given) collects each node's output
        shapes (running every node: no fused steps)."""
        values: dict[tuple, tuple] = dict(self._folded)
        masks = masks or [None] * len(arrays)
        for ref, arr, m in zip(self.spec.inputs, arrays, masks):
            values[(ref.layer, ref.node, ref.tensor)] = (arr, m)
        shape_key = tuple(None if a is None else (a.shape, a.dtype.str) for a in arrays)
        hit = self._cached_shapes(shape_key) if self._shape_nodes else None
        if hit is not None:
            values.update(hit)
        with np.errstate(all="ignore"):  # array ops: inf and NaN, no warnings
            if record is not None:
                plan = self._plan_whole
            else:
                plan = self._plan if hit is None else self._plan_cached
            self._run_plan(plan, values, ctx, record)
        if hit is None and self._shape_nodes:
            self._keep(shape_key, values)
        if record is not None:
            for ref, a in zip(self.spec.inputs, arrays):
                record[(ref.layer, 0)] = [a.shape]
        keys = [(r.layer, r.node, r.tensor) for r in self.spec.outputs]
        # shape-determined values are shared between calls: outputs are copies
        return [
            np.array(values[k][0]) if k[:2] in self._shape_keys else values[k][0]
            for k in keys
        ]

    def _run_plan(
        self, plan: list, values: dict, ctx: RunContext, record: dict | None
    ) -> None:
        """Runs the steps of a plan, adding their outputs to ``values``."""
        for step in plan:
            if step.arrays is not None:  # an array op: no masks
                ins = [None if k is None else values[k][0] for k in step.inputs]
                outs = self._guarded(step, step.arrays, ins, ctx)
                masks: Any = (None,) * len(outs)
            elif isinstance(step.layer, InputLayer):
                if step.key + (0,) not in values:
                    raise ShapeError(f"input layer {step.node.layer!r} got no value")
                continue
            else:
                xs, ms = self._node_inputs(step, values)
                outs, masks = self._guarded(
                    step, step.layer.call, xs, ms, step.node, ctx
                )
            if step.out_keys is not None:
                for k, o in zip(step.out_keys, outs):
                    values[k] = (o, None)
                continue
            for i, (o, m) in enumerate(zip(outs, masks)):
                values[step.key + (i,)] = (o, m)
            if record is not None:
                record[step.key] = [np.shape(o) for o in outs]

    @staticmethod
    def _guarded(step: Step, fn: Any, *args: Any) -> Any:
        """fn(*args), its errors naming the step's layer."""
        try:
            return fn(*args)
        except FastLSTMError as exc:
            if f"{step.node.layer!r}" in str(exc):
                raise
            raise type(exc)(
                f"layer {step.node.layer!r} ({step.layer.class_name}): {exc}"
            ) from None

    def _cached_shapes(self, key: tuple) -> dict | None:
        """The shape-determined values for inputs of these shapes, if kept
        (read without the lock: a lookup is atomic under the GIL)."""
        # one dict lookup is atomic; _keep evicts the oldest entries first
        return self._shape_cache.get(key)

    def _keep(self, key: tuple, values: dict) -> None:
        """Keeps read-only copies of this call's shape-determined values,
        within SHAPE_CACHE_ENTRIES and SHAPE_CACHE_BYTES."""
        got = {}
        for k, (o, _) in values.items():
            if k[:2] in self._shape_keys:
                o = np.array(o)
                o.setflags(write=False)
                got[k] = (o, None)
        size = sum(int(v[0].nbytes) for v in got.values())
        if size > SHAPE_CACHE_BYTES:
            return
        with self._shape_lock:
            self._shape_cache[key] = got
            total = sum(
                int(v[0].nbytes) for e in self._shape_cache.values() for v in e.values()
            )
            while len(self._shape_cache) > SHAPE_CACHE_ENTRIES or (
                total > SHAPE_CACHE_BYTES
            ):
                _, old = self._shape_cache.popitem(last=False)
                total -= sum(int(v[0].nbytes) for v in old.values())

    def _node_inputs(self, step: Step, values: dict) -> tuple[list, list]:
        """(arrays, masks) a node passes to its layer: positional inputs,
        then initial states; the explicit mask, else (implicit masks) each
        input's own."""
        got = [(None, None) if k is None else values[k] for k in step.inputs]
        xs = [v[0] for v in got]
        own = self.spec.implicit_masks or step.layer.reads_input_masks
        ms = [v[1] for v in got] if own else [None] * len(got)
        if step.mask is not None:
            ms = [np.asarray(values[step.mask][0], bool)] + ms[1:]
        xs += [values[k][0] for k in step.states]
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


def _input_array(
    name: str, item: Any, shape: Any, streaming: bool, empty_rows: bool = False
) -> np.ndarray:
    try:
        arr = np.asarray(item)
    except Exception as exc:  # ragged lists and other oddities
        raise DTypeError(f"input {name!r} cannot be read as an array: {exc}") from exc
    check_elements(arr.shape, f"input {name!r}")
    if arr.dtype.kind not in "fiub":
        raise ShapeError(f"input {name!r} has dtype {arr.dtype}; numbers expected")
    if shape is not None:
        # a stream's pieces: axis 1 of (batch, time, features) inputs and
        # of (batch, time) token ids is time
        free = {0, 1} if streaming and len(shape) in (2, 3) else {0}
        if arr.ndim != len(shape) or any(
            d is not None and k not in free and d != s
            for k, (d, s) in enumerate(zip(shape, arr.shape))
        ):
            raise ShapeError(
                f"input {name!r} has shape {arr.shape} but the model "
                f"expects {tuple(shape)} (None = any size)"
            )
    if arr.size == 0 and not (empty_rows and arr.ndim and 0 not in arr.shape[1:]):
        raise ShapeError(f"input {name!r} is empty: shape {arr.shape}")
    return arr
