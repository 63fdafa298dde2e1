"""The steps a Graph runs, and the fusions that shorten them: patterns
exporters write around recurrent and dense layers, each run as one step
that gives the same values (bit for bit) without the intermediate ones,
when nothing else reads those."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastlstm.engine.layers import Layer, RunContext
from fastlstm.engine.recurrent_op import RecurrentOp
from fastlstm.model_spec import OpSpec

__all__ = ["Step", "fuse"]

Key = tuple  # (layer, node, tensor): one value of the graph


class Step:
    """One node of a plan, its value keys worked out once; or a fused
    step, which reads ``inputs`` and writes ``out_keys`` through
    ``arrays``."""

    __slots__ = (
        "node",
        "layer",
        "arrays",
        "key",
        "inputs",
        "mask",
        "states",
        "out_keys",
    )

    def __init__(self, node: Any, layer: Layer) -> None:
        self.node, self.layer, self.arrays = node, layer, layer.arrays
        self.key = (node.layer, node.index)
        self.inputs = [
            None if r is None else (r.layer, r.node, r.tensor) for r in node.inputs
        ]
        m = node.mask
        self.mask = None if m is None else (m.layer, m.node, m.tensor)
        self.states = [(r.layer, r.node, r.tensor) for r in node.initial_state]
        self.out_keys: list | None = None  # node outputs: key + (i,)

    @classmethod
    def fused(cls, base: Step, arrays: Callable, inputs: list, out_keys: list) -> Step:
        """A step standing for several; errors name ``base``'s layer."""
        step = cls.__new__(cls)
        step.node, step.layer, step.key = base.node, base.layer, base.key
        step.arrays, step.inputs, step.out_keys = arrays, inputs, out_keys
        step.mask, step.states = None, []
        return step

    def reads(self) -> list:
        return [k for k in (*self.inputs, *self.states, self.mask) if k is not None]


def fuse(plan: list, constants: dict, outputs: set) -> list:
    """``plan`` with its fusable patterns as single steps. ``constants``:
    the folded values by key; ``outputs``: the graph's output keys."""
    plan = _fuse_recurrent_layout(plan, constants, outputs)
    return _fuse_dense(plan, constants, outputs)


def _readers(plan: list, outputs: set) -> dict:
    """Value key -> the steps reading it (the graph's outputs count as a
    reader that is never fused away)."""
    readers: dict = {k: ["output"] for k in outputs}
    for step in plan:
        for k in step.reads():
            readers.setdefault(k, []).append(step)
    return readers


def _op(step: Any, name: str) -> bool:
    return (
        isinstance(step, Step)
        and step.out_keys is None
        and isinstance(step.layer.spec, OpSpec)
        and step.layer.spec.op == name
    )


def _only_reader(readers: dict, key: Key) -> Any:
    got = readers.get(key, [])
    return got[0] if len(got) == 1 else None


def _ints(step: Step, attr: str, k: int | None = None, constants: Any = None) -> Any:
    """An op's integer argument from its attribute, or from input k when
    that is a constant."""
    value = step.layer.spec.attrs.get(attr)
    if value is None and k is not None and len(step.inputs) > k:
        got = constants.get(step.inputs[k])
        value = None if got is None else np.asarray(got[0]).reshape(-1).tolist()
    return None if value is None else [int(v) for v in value]


def _swaps_first_axes(step: Step) -> bool:
    return _ints(step, "perm") == [1, 0, 2]


def _fuse_recurrent_layout(plan: list, constants: dict, outputs: set) -> list:
    """Transpose(1, 0, 2) -> time-major one-direction recurrent node ->
    Squeeze(axis 1) -> Transpose(1, 0, 2), what torch.onnx.export writes
    for a batch_first layer: one step reading X batch-major and writing
    the batch-major output sequence directly."""
    readers = _readers(plan, outputs)
    producer = {s.key + (0,): s for s in plan if s.out_keys is None}
    gone: set = set()
    replace: dict = {}
    for step in plan:
        layer = step.layer
        if not (
            isinstance(layer, RecurrentOp)
            and step.out_keys is None
            and layer.spec.time_major
            and len(layer.cells) == 1
            and step.inputs
            and step.inputs[0] is not None
            and not step.states
            and step.mask is None
        ):
            continue
        first = producer.get(step.inputs[0])
        squeeze = _only_reader(readers, step.key + (0,))
        if not (
            _op(first, "Transpose")
            and _swaps_first_axes(first)
            and readers.get(step.inputs[0]) == [step]
            and _op(squeeze, "Squeeze")
            and _ints(squeeze, "axes", 1, constants) == [1]
        ):
            continue
        last = _only_reader(readers, squeeze.key + (0,))
        if not (_op(last, "Transpose") and _swaps_first_axes(last)):
            continue
        out_keys = [last.key + (0,)] + [
            step.key + (i,) for i in range(1, 1 + layer.state_count)
        ]
        replace[id(step)] = Step.fused(
            step,
            lambda ins, ctx, op=layer: op.call_batch_major(ins),
            [first.inputs[0], *step.inputs[1:]],
            out_keys,
        )
        gone.update((id(first), id(squeeze), id(last)))
    return [replace.get(id(s), s) for s in plan if id(s) not in gone]


def _fuse_dense(plan: list, constants: dict, outputs: set) -> list:
    """MatMul by a constant matrix -> Add of a constant bias (a Linear
    head): one step adding the bias in place into the product."""
    readers = _readers(plan, outputs)
    gone: set = set()
    replace: dict = {}
    for step in plan:
        if not (_op(step, "MatMul") and len(step.inputs) == 2):
            continue
        w = constants.get(step.inputs[1], (None,))[0]
        add = _only_reader(readers, step.key + (0,))
        if not (
            isinstance(w, np.ndarray)
            and w.ndim == 2
            and w.dtype == np.float32
            and _op(add, "Add")
            and len(add.inputs) == 2
        ):
            continue
        b_key = add.inputs[0] if add.inputs[1] == step.key + (0,) else add.inputs[1]
        b = constants.get(b_key, (None,))[0]
        if not (
            isinstance(b, np.ndarray)
            and b.dtype == np.float32
            and b.shape == (w.shape[1],)
            and b_key != step.key + (0,)
        ):
            continue
        replace[id(step)] = Step.fused(
            add,
            lambda ins, ctx, mm=step.arrays, bias=b: _dense(mm, bias, ins, ctx),
            list(step.inputs),
            [add.key + (0,)],
        )
        gone.add(id(add))
    return [replace.get(id(s), s) for s in plan if id(s) not in gone]


def _dense(matmul: Callable, bias: np.ndarray, ins: list, ctx: RunContext) -> list:
    """x @ w + bias: the product (checked and charged as MatMul), then the
    bias added in place; the same values as Add(MatMul) for float32."""
    (y,) = matmul(ins, ctx)
    if y.dtype != np.float32:
        return [y + bias]
    np.add(y, bias, out=y)
    return [y]
