"""Recurrent layers built from cells (LSTM, GRU or SimpleRNN layers).

``Direction`` runs cells one after another in one direction of time (a Keras
RNN over stacked cells, a TF1 MultiRNNCell, one direction of a torch layer);
``Bidirectional`` runs two directions over one input and merges them;
``Stack`` feeds layers into each other. This is the one place that runs
cells backwards, flips outputs, merges directions and hands out states; every
front end builds on it.

Output order: a backward direction returns its outputs in processing order
(Keras' ``go_backwards``); ``Bidirectional`` flips them back to time order
before merging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from fastlstm import _inputs
from fastlstm._core import StreamGuard
from fastlstm.engine.gru_rnn import GRU, SimpleRNN
from fastlstm.engine.lstm import (
    LSTM,
    Output,
    Prepared,
    StreamBase,
    prepare_call,
    refuse_pickle,
)
from fastlstm.errors import ConfigError, ShapeError, StreamError

__all__ = ["Carry", "Direction", "Bidirectional", "Stack", "StackStream"]

MERGE_MODES = ("concat", "sum", "mul", "ave", None)

# The one-direction layers a Direction runs as its cells.
CELLS = (LSTM, GRU, SimpleRNN)
Cell = Union[LSTM, GRU, SimpleRNN]


def state_count(cells: Sequence[Cell]) -> int:
    """Arrays in the flat state list of these cells ([h, c] per LSTM, [h]
    per GRU or SimpleRNN)."""
    return sum(c.state_count for c in cells)


@dataclasses.dataclass
class Carry:
    """Recurrent state kept between calls (stateful layers): per cell its
    state arrays and then ``seen`` ([h, c, seen] for an LSTM, [h, seen]
    otherwise), empty until the first call."""

    states: list = dataclasses.field(default_factory=list)

    def clear(self) -> None:
        self.states.clear()


class Direction:
    """Cells run in one direction of time, each feeding its outputs to the
    next. Every cell runs backwards when the direction does; between cells
    the outputs are flipped back to time order, so masks and lengths apply
    to each cell as to the first (what reversing the input once gives)."""

    def __init__(
        self,
        cells: Sequence[Cell],
        *,
        return_sequences: bool | None = None,
        return_state: bool | None = None,
    ) -> None:
        cells = list(cells)
        if not cells or not all(isinstance(c, CELLS) for c in cells):
            raise ConfigError(
                "a Direction takes one or more fastlstm LSTM, GRU or SimpleRNN cells"
            )
        problems = []
        for k, (a, b) in enumerate(zip(cells, cells[1:])):
            if b.input_size != a.output_size:
                problems.append(
                    f"cell {k + 1} takes {b.input_size} features but cell {k} "
                    f"outputs {a.output_size}"
                )
            if (b.go_backwards, b.time_major) != (a.go_backwards, a.time_major):
                problems.append(f"cell {k + 1} runs differently from cell {k}")
        if problems:
            raise ConfigError("invalid cells:\n  - " + "\n  - ".join(problems))
        self.cells = cells
        last = cells[-1]
        self.return_sequences = (
            last.return_sequences if return_sequences is None else return_sequences
        )
        self.return_state = last.return_state if return_state is None else return_state

    input_size = property(lambda self: self.cells[0].input_size)
    output_size = property(lambda self: self.cells[-1].output_size)
    go_backwards = property(lambda self: self.cells[0].go_backwards)
    time_major = property(lambda self: self.cells[0].time_major)

    def __repr__(self) -> str:
        return "Direction([" + ", ".join(repr(c) for c in self.cells) + "])"

    def run(
        self,
        p: Prepared,
        init: Sequence[Any] | None,
        sequences: bool,
        carry: Carry | None = None,
        name: str = "initial_state",
    ) -> tuple[np.ndarray, list]:
        """(outputs, the flat list of every cell's states: [h0, c0, h1, ...]
        for LSTM cells, one h per GRU or SimpleRNN cell). ``init`` is that
        flat list of initial states, or None for the carry's state (stateful
        layers) or zeros. The outputs are every step's (processing order)
        when ``sequences``, else the last step's."""
        n = len(self.cells)
        n_states = state_count(self.cells)
        if n > 1 and init is not None and not _inputs.is_sequence(init, n_states):
            raise ShapeError(
                f"{name} must list {n_states} arrays, the states of every cell"
            )
        if (
            carry is not None
            and carry.states
            and carry.states[0][0].shape[0] != p.batch
        ):
            raise ShapeError(
                f"the layer holds state for batch size {carry.states[0][0].shape[0]}, "
                f"got {p.batch}; call reset_states() first"
            )
        states: list = []
        y = p.x
        for k, cell in enumerate(self.cells):
            last = k == n - 1
            if k:
                y = p.flipped(y) if self.go_backwards else y
                p = p.with_input(y, f"the output of cell {k - 1}")
            st, seen = self._cell_state(k, p.batch, init, carry, name)
            seq, lst = cell.run_states(p, st, sequences or not last, seen=seen)
            y = seq if seq is not None else lst
            states += st
            if carry is not None:
                entry = [*(a.copy() for a in st), seen]
                if len(carry.states) > k:
                    carry.states[k] = entry
                else:
                    carry.states.append(entry)
        return y, states

    def _cell_state(
        self, k: int, batch: int, init: Any, carry: Carry | None, name: str
    ) -> tuple[tuple, np.ndarray | None]:
        """Cell k's states (fresh arrays the run updates) and its seen."""
        cell = self.cells[k]
        seen = None
        if init is not None:
            a = state_count(self.cells[:k])
            b = a + cell.state_count
            if len(self.cells) == 1:
                st = cell.make_state(init, batch, name)
            else:
                one = init[a] if cell.state_count == 1 else init[a:b]
                st = cell.make_state(one, batch, f"{name}[{a}:{b}]")
        elif carry is not None and len(carry.states) > k:
            *arrays, seen = carry.states[k]
            st = tuple(a.copy() for a in arrays)
            seen = seen.copy()
        else:
            st = cell.make_state(None, batch)
        if seen is None and carry is not None:
            seen = np.zeros(batch, np.uint8)
        return st, seen


def _direction(layer: Cell | Direction) -> Direction:
    return layer if isinstance(layer, Direction) else Direction([layer])


def merge(mode: str | None, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """The outputs of a Bidirectional from its two halves (time order)."""
    if mode == "concat":
        return [np.concatenate([a, b], axis=-1)]
    if mode == "sum":
        return [a + b]
    if mode == "mul":
        return [a * b]
    if mode == "ave":
        return [(a + b) * np.float32(0.5)]
    return [np.ascontiguousarray(a), np.ascontiguousarray(b)]


class Bidirectional:
    """A forward and a backward direction over the same input, Keras semantics.

    ``forward`` and ``backward`` are LSTM layers (or Directions of cells);
    ``backward`` must run the other way in time (``go_backwards`` differs).
    With ``return_sequences`` the backward outputs are re-reversed so index t
    of both halves belongs to input step t. Merge modes: 'concat' (forward
    features first), 'sum', 'mul', 'ave', or None (a list of both).
    Returns like Keras: ``output`` or ``[output, h_fw, c_fw, h_bw, c_bw]``
    with the forward layer's ``return_state``. Masked steps follow each
    sub-layer's ``zero_output_for_mask`` (tf.keras and Keras 3 set it to
    ``return_sequences`` on both).
    """

    def __init__(
        self,
        forward: Cell | Direction,
        backward: Cell | Direction,
        merge_mode: str | None = "concat",
    ) -> None:
        for name, half in (("forward", forward), ("backward", backward)):
            if not isinstance(half, (*CELLS, Direction)):
                raise ConfigError(
                    f"Bidirectional's {name} must be a fastlstm LSTM, GRU or "
                    f"SimpleRNN layer, got {type(half).__name__}"
                )
        if merge_mode not in MERGE_MODES:
            raise ConfigError(
                f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}"
            )
        problems = []
        if backward.go_backwards == forward.go_backwards:
            problems.append(
                "backward.go_backwards must differ from forward.go_backwards"
            )
        for attr in ("input_size", "return_sequences", "return_state", "time_major"):
            if getattr(forward, attr) != getattr(backward, attr):
                problems.append(
                    f"{attr} differs: forward {getattr(forward, attr)}, "
                    f"backward {getattr(backward, attr)}"
                )
        if (
            merge_mode in ("sum", "mul", "ave")
            and forward.output_size != backward.output_size
        ):
            problems.append(
                f"merge_mode={merge_mode!r} needs equal output sizes, got "
                f"{forward.output_size} and {backward.output_size}"
            )
        if problems:
            raise ConfigError("invalid Bidirectional: " + "; ".join(problems))
        self.forward_layer = forward
        self.backward_layer = backward
        self.merge_mode = merge_mode
        self._halves = (_direction(forward), _direction(backward))

    input_size = property(lambda self: self.forward_layer.input_size)
    return_sequences = property(lambda self: self.forward_layer.return_sequences)
    return_state = property(lambda self: self.forward_layer.return_state)
    time_major = property(lambda self: self.forward_layer.time_major)
    go_backwards = False

    @property
    def output_size(self) -> int:
        f, b = self.forward_layer.output_size, self.backward_layer.output_size
        return f + b if self.merge_mode == "concat" else f

    def __repr__(self) -> str:
        return (
            f"Bidirectional({self.forward_layer!r}, {self.backward_layer!r}, "
            f"merge_mode={self.merge_mode!r})"
        )

    def __call__(
        self,
        x: Any,
        initial_state: Sequence[Any] | None = None,
        mask: Any = None,
        lengths: Any = None,
    ) -> Output:
        """initial_state: [h_fw, c_fw, h_bw, c_bw] or None."""
        p = prepare_call(x, self.input_size, self.time_major, mask, lengths)
        outputs, states = self.run(p, initial_state, self.return_sequences)
        if self.return_state:
            return outputs + states
        return outputs if self.merge_mode is None else outputs[0]

    def run(
        self,
        p: Prepared,
        init: Sequence[Any] | None,
        sequences: bool,
        carries: tuple[Carry | None, Carry | None] = (None, None),
        name: str = "initial_state",
    ) -> tuple[list[np.ndarray], list]:
        """(outputs: one merged array, or both halves with merge_mode None;
        the forward states, then the backward ones)."""
        fw, bw = self._halves
        n_fw = state_count(fw.cells)
        init_fw = init_bw = None
        if init is not None:
            n = n_fw + state_count(bw.cells)
            if not _inputs.is_sequence(init, n):
                raise ShapeError(
                    f"{name} of a Bidirectional layer must list {n} arrays: the "
                    "forward states, then the backward ones"
                    + (" ([h_fw, c_fw, h_bw, c_bw])" if n == 4 else "")
                )
            init_fw, init_bw = list(init[:n_fw]), list(init[n_fw:])
        y_f, st_f = fw.run(p, init_fw, sequences, carries[0], name)
        y_b, st_b = bw.run(p, init_bw, sequences, carries[1], name)
        if sequences:  # backward outputs are in processing order: realign
            y_b = np.flip(y_b, axis=0 if self.time_major else 1)
        return merge(self.merge_mode, y_f, y_b), st_f + st_b

    def stream(self, batch_size: int) -> None:
        raise StreamError(
            "a Bidirectional layer cannot stream: its backward half needs the "
            "whole sequence before it can output the first step"
        )


Layer = Union[LSTM, GRU, SimpleRNN, Direction, Bidirectional]


class Stack:
    """Layers applied in order, each feeding its output sequence to the next.

    Every layer but the last must have ``return_sequences=True``; the stack
    returns what its last layer returns. With ``return_state=True`` the call
    returns ``[output, states]``, states being one list per layer: [h, c] for
    an LSTM, [h] for a GRU or SimpleRNN, the forward then the backward
    states for a Bidirectional. A mask or lengths
    apply to every layer (as Keras propagates masks through a stack).
    """

    def __init__(self, layers: Sequence[Layer], *, return_state: bool = False) -> None:
        layers = list(layers)
        if not layers:
            raise ConfigError("a Stack needs at least one layer")
        if not isinstance(return_state, (bool, np.bool_)):
            raise ConfigError(f"return_state must be a bool, got {return_state!r}")
        problems = []
        for k, layer in enumerate(layers):
            if not isinstance(layer, (*CELLS, Direction, Bidirectional)):
                raise ConfigError(
                    f"layer {k} is a {type(layer).__name__}; a Stack "
                    "holds fastlstm LSTM, GRU, SimpleRNN and Bidirectional layers"
                )
            problems += _stack_problems(layers, k)
        if problems:
            raise ConfigError("invalid Stack:\n  - " + "\n  - ".join(problems))
        self.layers = layers
        self.return_state = bool(return_state)
        self._runs = [
            layer if isinstance(layer, Bidirectional) else _direction(layer)
            for layer in layers
        ]

    input_size = property(lambda self: self.layers[0].input_size)
    output_size = property(lambda self: self.layers[-1].output_size)
    time_major = property(lambda self: self.layers[0].time_major)
    return_sequences = property(lambda self: self.layers[-1].return_sequences)

    def __repr__(self) -> str:
        return "Stack([" + ", ".join(repr(x) for x in self.layers) + "])"

    def __call__(
        self,
        x: Any,
        initial_state: Sequence[Any] | None = None,
        mask: Any = None,
        lengths: Any = None,
    ) -> Output:
        """initial_state: one state list per layer (see the class doc)."""
        p = prepare_call(x, self.input_size, self.time_major, mask, lengths)
        out, states = self.run(p, initial_state)
        return [out, states] if self.return_state else out

    def run(self, p: Prepared, initial_state: Sequence[Any] | None) -> tuple[Any, list]:
        """(what the last layer outputs, one state list per layer)."""
        n = len(self.layers)
        if initial_state is not None and not _inputs.is_sequence(initial_state, n):
            raise ShapeError(
                f"initial_state must be a list holding one state per "
                f"layer ({n}), got {_describe(initial_state)}"
            )
        states = []
        out: Any = None
        for k, layer in enumerate(self._runs):
            last = k == n - 1
            init = None if initial_state is None else initial_state[k]
            sequences = self.layers[k].return_sequences if last else True
            out, st = layer.run(p, init, sequences, name=f"initial_state[{k}]")
            if isinstance(layer, Bidirectional) and layer.merge_mode is not None:
                out = out[0]
            states.append(st)
            if not last:
                p = p.with_input(
                    out, f"the output of stack layer {k} (overflowed inside the stack)"
                )
        return out, states

    def stream(self, batch_size: int) -> StackStream:
        """A stateful stream through every layer (no Bidirectional)."""
        for k, layer in enumerate(self.layers):
            if isinstance(layer, Bidirectional):
                raise StreamError(
                    f"layer {k} is Bidirectional, which cannot stream: "
                    "its backward half needs the whole sequence"
                )
        return StackStream(
            [cell.stream(batch_size) for layer in self._runs for cell in layer.cells]
        )


def _stack_problems(layers: list, k: int) -> list[str]:
    layer = layers[k]
    problems = []
    if layer.return_state:
        problems.append(
            f"layer {k} has return_state=True; use "
            "Stack(..., return_state=True) instead"
        )
    if layer.time_major != layers[0].time_major:
        problems.append(f"layer {k} time_major differs from layer 0")
    if isinstance(layer, Bidirectional) and layer.merge_mode is None:
        problems.append(
            f"layer {k} is a Bidirectional with merge_mode=None, "
            "whose two outputs cannot feed a next layer"
        )
    if k < len(layers) - 1 and not layer.return_sequences:
        problems.append(
            f"layer {k} must have return_sequences=True to feed layer {k + 1}"
        )
    if k and layer.input_size != layers[k - 1].output_size:
        problems.append(
            f"layer {k} takes {layer.input_size} features but "
            f"layer {k - 1} outputs {layers[k - 1].output_size}"
        )
    return problems


class StackStream:
    """Stateful stream through a Stack: each step passes through every cell."""

    def __init__(self, streams: list[StreamBase]) -> None:
        self._streams = streams
        # held from before the first layer to after the last, so two threads
        # cannot interleave layers of one stream
        self._guard = StreamGuard()

    batch_size = property(lambda self: self._streams[0].batch_size)

    def __reduce_ex__(self, protocol: object) -> tuple:
        refuse_pickle(self)

    def step(self, x: Any, mask: Any = None, out: Any = None) -> np.ndarray:
        """One step through every cell; ``out`` (an array of the last
        cell's output shape) receives the result, as an engine stream's."""
        with self._guard:
            last = len(self._streams) - 1
            for k, s in enumerate(self._streams):
                x = s.step(x, mask, out=out if k == last else None)
            return x

    def feed(self, x: Any, mask: Any = None) -> np.ndarray:
        with self._guard:
            for s in self._streams:
                x = s.feed(x, mask)
            return x

    def reset(self) -> None:
        with self._guard:
            for s in self._streams:
                s.reset()

    @property
    def state(self) -> list:
        """One state per cell: (h, c) for an LSTM, h for a GRU or SimpleRNN."""
        with self._guard:
            return [s.state for s in self._streams]

    @state.setter
    def state(self, value: Sequence[Any]) -> None:
        with self._guard:
            n = len(self._streams)
            if not _inputs.is_sequence(value, n):
                raise ShapeError(
                    f"state must be a list holding one state per layer ({n}): "
                    f"(h, c) for an LSTM, h otherwise; got {_describe(value)}"
                )
            for s, v in zip(self._streams, value):
                s.state = v


def _describe(value: Any) -> str:
    """'list of length 3' for a list or tuple, else the type name (messages)."""
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__
