"""Layers built from LSTM layers: bidirectional wrappers and stacks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from fastlstm import _inputs
from fastlstm._core import StreamGuard
from fastlstm.errors import ConfigError, ShapeError, StreamError
from fastlstm.lstm import (
    LSTM,
    LSTMStream,
    Output,
    _Prepared,
    prepare_call,
    refuse_pickle,
)

__all__ = ["Bidirectional", "Stack", "StackStream", "MERGE_MODES"]

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional:
    """A forward and a backward LSTM over the same input, Keras semantics.

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
        self, forward: LSTM, backward: LSTM, merge_mode: str | None = "concat"
    ) -> None:
        if not isinstance(forward, LSTM) or not isinstance(backward, LSTM):
            raise ConfigError("Bidirectional takes two fastlstm.LSTM layers")
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

    input_size = property(lambda self: self.forward_layer.input_size)
    return_sequences = property(lambda self: self.forward_layer.return_sequences)
    return_state = property(lambda self: self.forward_layer.return_state)
    time_major = property(lambda self: self.forward_layer.time_major)

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
        out, states = self._forward(p, initial_state, self.return_sequences)
        outputs = list(out) if self.merge_mode is None else [out]
        if self.return_state:
            return outputs + states
        return outputs if self.merge_mode is None else out

    def _forward(
        self,
        p: _Prepared,
        initial_state: Any,
        sequences: bool,
        name: str = "initial_state",
    ) -> tuple[Any, list]:
        fw_state = bw_state = None
        if initial_state is not None:
            if not _inputs.is_sequence(initial_state, 4):
                raise ShapeError(
                    f"{name} of a Bidirectional layer must be [h_fw, c_fw, h_bw, c_bw]"
                )
            fw_state, bw_state = initial_state[:2], initial_state[2:]
        y_f, st_f = self.forward_layer._forward(p, fw_state, sequences, name)
        y_b, st_b = self.backward_layer._forward(p, bw_state, sequences, name)
        if sequences:  # backward outputs are in processing order: realign
            y_b = np.flip(y_b, axis=0 if self.time_major else 1)
        return self._merge(y_f, y_b), st_f + st_b

    def _merge(self, a: np.ndarray, b: np.ndarray) -> Any:
        mode = self.merge_mode
        if mode == "concat":
            return np.concatenate([a, b], axis=-1)
        if mode == "sum":
            return a + b
        if mode == "mul":
            return a * b
        if mode == "ave":
            return (a + b) * np.float32(0.5)
        return [a, np.ascontiguousarray(b)]

    def stream(self, batch_size: int) -> None:
        raise StreamError(
            "a Bidirectional layer cannot stream: its backward half needs the "
            "whole sequence before it can output the first step"
        )


Layer = Union[LSTM, Bidirectional]


class Stack:
    """Layers applied in order, each feeding its output sequence to the next.

    Every layer but the last must have ``return_sequences=True``; the stack
    returns what its last layer returns. With ``return_state=True`` the call
    returns ``[output, states]``, states being one list per layer: [h, c] for
    an LSTM, [h_fw, c_fw, h_bw, c_bw] for a Bidirectional. A mask or lengths
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
            if not isinstance(layer, (LSTM, Bidirectional)):
                raise ConfigError(
                    f"layer {k} is a {type(layer).__name__}; a Stack "
                    "holds fastlstm.LSTM and Bidirectional layers"
                )
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
        if problems:
            raise ConfigError("invalid Stack:\n  - " + "\n  - ".join(problems))
        self.layers = layers
        self.return_state = bool(return_state)

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
        n = len(self.layers)
        if initial_state is not None and not _inputs.is_sequence(initial_state, n):
            raise ShapeError(
                f"initial_state must be a list holding one state per "
                f"layer ({n}), got {_describe(initial_state)}"
            )
        states = []
        out = None
        for k, layer in enumerate(self.layers):
            last = k == len(self.layers) - 1
            init = None if initial_state is None else initial_state[k]
            out, st = layer._forward(
                p, init, layer.return_sequences if last else True, f"initial_state[{k}]"
            )
            states.append(st)
            if not last:
                p = _Prepared(
                    out,
                    p.batch,
                    p.steps,
                    p.mask,
                    p.lengths,
                    p.time_major,
                    f"the output of stack layer {k} (overflowed inside the stack)",
                )
        return [out, states] if self.return_state else out

    def stream(self, batch_size: int) -> StackStream:
        """A stateful stream through every layer (LSTM layers only)."""
        for k, layer in enumerate(self.layers):
            if isinstance(layer, Bidirectional):
                raise StreamError(
                    f"layer {k} is Bidirectional, which cannot stream: "
                    "its backward half needs the whole sequence"
                )
        return StackStream([layer.stream(batch_size) for layer in self.layers])


class StackStream:
    """Stateful stream through a Stack: each step passes through every layer."""

    def __init__(self, streams: list[LSTMStream]) -> None:
        self._streams = streams
        # held from before the first layer to after the last, so two threads
        # cannot interleave layers of one stream
        self._guard = StreamGuard()

    batch_size = property(lambda self: self._streams[0].batch_size)

    def __reduce_ex__(self, protocol: object) -> tuple:
        refuse_pickle(self)

    def step(self, x: Any, mask: Any = None) -> np.ndarray:
        with self._guard:
            for s in self._streams:
                x = s.step(x, mask)
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
    def state(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """One (h, c) pair per layer."""
        with self._guard:
            return [s.state for s in self._streams]

    @state.setter
    def state(self, value: Sequence[tuple[Any, Any]]) -> None:
        with self._guard:
            n = len(self._streams)
            if not _inputs.is_sequence(value, n):
                raise ShapeError(
                    f"state must be a list holding one (h, c) pair per "
                    f"layer ({n}), got {_describe(value)}"
                )
            for s, v in zip(self._streams, value):
                s.state = v


def _describe(value: Any) -> str:
    """'list of length 3' for a list or tuple, else the type name (messages)."""
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__
