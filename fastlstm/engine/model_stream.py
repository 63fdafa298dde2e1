"""A model graph run step by step (or chunk by chunk) with its recurrent
state kept: the stream of a Keras-shaped model. Chain-shaped models step
in C (engine.step_chain); others through the graph, layer by layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm._core import ChainCore, StreamGuard
from fastlstm.engine.graph import Graph, RunContext
from fastlstm.engine.lstm import refuse_pickle
from fastlstm.engine.step_chain import RecurrentStage, chain_plan, input_size, sized
from fastlstm.errors import ShapeError, StreamError

__all__ = ["ModelStream"]

Inputs = Any  # one array, a list of arrays, or a dict of arrays by input name


class _GraphSteps:
    """What a stream's steps work on (the graph, its carries, the pinned
    state arrays), apart from the stream: its C step calls back into this,
    and holding the stream instead would make a reference cycle."""

    def __init__(self, graph: Graph, batch: int) -> None:
        self.graph, self.batch = graph, batch
        self.ctx: RunContext = graph.context(graph.recurrent_names())
        # each recurrent cell's state arrays, when steps run in C (the
        # carries hold them; a graph run replaces them, repin copies back)
        self.pinned: dict[str, list] = {}

    def check_batch(self, arrays: list) -> None:
        if arrays[0].shape[0] != self.batch:
            raise ShapeError(
                f"batch size {arrays[0].shape[0]} but the stream was made "
                f"for {self.batch}"
            )

    def run_flat(self, x: Inputs) -> list:
        """Runs a chunk (batch, time, ...) per input; returns the outputs.
        A chunk that fails leaves every state as it was."""
        arrays = self.graph.input_arrays(x, streaming=True)
        self.check_batch(arrays)
        # a run replaces the carries' entries (never writes into them)
        saved = {name: list(c.states) for name, c in self.ctx.carries.items()}
        try:
            return self.graph.run(arrays, self.ctx)
        except BaseException:
            for name, states in saved.items():
                self.ctx.carries[name].states[:] = states
            raise
        finally:
            self.repin()

    def step(self, x: Inputs) -> Any:
        """One step through the graph, layer by layer."""
        flat = self.run_flat(_with_time(x, self.graph))
        flat = [o[:, 0] if o.ndim >= 3 and o.shape[1] == 1 else o for o in flat]
        return self.graph.structured(flat)

    def repin(self) -> None:
        """Puts each recurrent cell's current state into its pinned arrays
        (zeros after a reset) and the arrays back into the carries."""
        for name, cells in self.pinned.items():
            states = self.ctx.carries[name].states
            for k, pinned in enumerate(cells):
                if k >= len(states):
                    for a in pinned:
                        a.fill(0)
                    states.append(pinned)
                elif states[k] is not pinned:
                    for a, b in zip(pinned, states[k]):
                        np.copyto(a, b)
                    states[k] = pinned

    def chain_input(self, x: Any) -> np.ndarray:
        """One step's input as the C step reads it, checked as the graph
        checks its inputs: (batch, features), or (batch,) token ids cut
        toward zero in their own type first, as the graph's Embedding does."""
        arrays = self.graph.input_arrays(_with_time(x, self.graph), streaming=True)
        self.check_batch(arrays)
        step = arrays[0][:, 0]
        if step.ndim == 1 and step.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                step = np.trunc(step)
        return np.ascontiguousarray(step, dtype=np.float32)

    def compiled_step(self, plan: list, guard: StreamGuard) -> Any:
        """The C step of a chain-shaped model (see engine.step_chain), or
        None when its layers' sizes do not chain: each recurrent cell gets
        an engine stream whose state arrays the carries hold."""
        cells = {
            s: self.graph.layers[s.layer].direction.cells[s.cell]
            for s in plan
            if isinstance(s, RecurrentStage)
        }
        full = sized(plan, input_size(self.graph), cells)
        if full is None:
            return None
        streams = {s: cell.stream(self.batch) for s, cell in cells.items()}
        for s, stream in streams.items():
            arrays = [a for a in (stream._h, stream._c) if a is not None]
            self.pinned.setdefault(s.layer, []).append([*arrays, stream._seen])
        self.repin()
        stages = [
            ("recurrent", streams[s], s.masked, s.sequence_output)
            if isinstance(s, RecurrentStage)
            else s
            for s in full
        ]
        chain = ChainCore()
        chain._init_chain(stages, self.batch, guard, self.chain_input, self.step)
        return chain.step


class ModelStream:
    """Feeds a model step by step (or chunk by chunk) keeping recurrent state.

    Needs every layer on the path to work one step at a time: recurrent
    layers that run forward, and per-step layers (Dense, Activation,
    Embedding, Masking, merges...). Bidirectional and go_backwards layers, and
    Flatten/Reshape/RepeatVector, need the whole sequence and are refused.

    A model that is one chain of Embedding or Masking, forward recurrent
    layers, Dense, Activation, normalization (folded or per step) and
    dropout layers steps in C, one call per
    step with no allocation when given ``out=``; its head's activations
    then come from the kernel's float32 code (within 3e-7 of ``predict``).
    """

    def __init__(self, graph: Graph, batch_size: int) -> None:
        problem = graph.streaming_problem()
        if problem is not None:
            raise StreamError(problem)
        self._graph = graph
        self._batch = _inputs.batch_size_input(batch_size)
        self._steps = _GraphSteps(graph, self._batch)
        self._ctx = self._steps.ctx
        # held for a whole step or chunk through every layer
        self._guard = StreamGuard()
        plan = chain_plan(graph)
        compiled = (
            None if plan is None else self._steps.compiled_step(plan, self._guard)
        )
        if compiled is not None:
            self.step = compiled  # type: ignore[method-assign]

    batch_size = property(lambda self: self._batch)

    def __reduce_ex__(self, protocol: object) -> tuple:
        refuse_pickle(self)

    def reset(self) -> None:
        with self._guard:
            for carry in self._ctx.carries.values():
                carry.clear()
            self._steps.repin()

    def feed(self, x: Inputs) -> Any:
        """Runs a chunk (batch, time, ...) per input; returns the outputs."""
        with self._guard:
            return self._graph.structured(self._steps.run_flat(x))

    def step(self, x: Inputs, out: np.ndarray | None = None) -> Any:
        """Runs one time step: each input (batch, ...) without the time axis.
        ``out``: an array the (single) output is written into, and returned."""
        with self._guard:
            result = self._steps.step(x)
        if out is None:
            return result
        if not isinstance(out, np.ndarray) or not isinstance(result, np.ndarray):
            raise ShapeError("out= takes one array, for a model with one output")
        if out.shape != result.shape or not out.flags.writeable:
            raise ShapeError(
                f"out must be a writeable array of shape {result.shape}, got "
                f"{out.shape}"
            )
        np.copyto(out, result, casting="same_kind")
        return out

    @property
    def state(self) -> dict:
        """Copies of every recurrent layer's state, by layer name, as that
        layer's own stream gives it: (h, c) for an LSTM, h for a GRU or
        SimpleRNN; a list of those for a layer of several cells."""
        with self._guard:
            return {name: self._layer_state(name) for name in self._ctx.carries}

    @state.setter
    def state(self, value: Mapping) -> None:
        """Sets the state of the layers named in ``value`` (the others keep
        theirs); steps the mask skips before a row's first valid one then
        output zeros, as with initial states."""
        if not isinstance(value, Mapping):
            raise ShapeError(
                "state must be a dict {recurrent layer name: its state}, as the "
                "state property gives it"
            )
        unknown = sorted(set(value) - set(self._ctx.carries))
        if unknown:
            raise ShapeError(
                f"state: no recurrent layer {unknown}; the model's are "
                f"{list(self._ctx.carries)}"
            )
        with self._guard:
            new = {name: self._checked_state(name, v) for name, v in value.items()}
            for name, states in new.items():
                self._ctx.carries[name].states[:] = states
            self._steps.repin()

    def _cells(self, name: str) -> list:
        return self._graph.layers[name].direction.cells

    def _layer_state(self, name: str) -> Any:
        carry, per_cell = self._ctx.carries[name], []
        for k, cell in enumerate(self._cells(name)):
            if len(carry.states) > k:
                arrays = [np.array(a) for a in carry.states[k][:-1]]
            else:
                arrays = list(cell.make_state(None, self._batch))
            per_cell.append(tuple(arrays) if len(arrays) > 1 else arrays[0])
        return per_cell[0] if len(per_cell) == 1 else per_cell

    def _checked_state(self, name: str, value: Any) -> list:
        cells = self._cells(name)
        if len(cells) > 1 and not _inputs.is_sequence(value, len(cells)):
            raise ShapeError(
                f"state[{name!r}] must list one state per cell ({len(cells)})"
            )
        values = [value] if len(cells) == 1 else list(value)
        return [
            [
                *cell.make_state(v, self._batch, f"state[{name!r}]"),
                np.zeros(self._batch, np.uint8),
            ]
            for cell, v in zip(cells, values)
        ]


def _with_time(x: Inputs, graph: Graph) -> Any:
    """One step's inputs with a time axis of one step added."""

    def add_time(a: Any) -> np.ndarray:
        return np.asarray(a)[:, None]

    if isinstance(x, dict):
        return {k: add_time(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and len(graph.input_names) > 1:
        return [add_time(v) for v in x]
    return add_time(x)
