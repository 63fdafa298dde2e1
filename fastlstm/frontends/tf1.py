"""TF1 LSTM cells run like ``tf.compat.v1.nn.dynamic_rnn``.

``outputs, state = model(x, sequence_length=None, initial_state=None)``:

* x (batch, time, features), or (time, batch, features) with
  ``time_major=True``;
* ``state`` is an ``LSTMStateTuple(c, h)`` for one cell, a tuple of them
  (one per layer) for a MultiRNNCell; for a fw/bw pair the call returns
  ``(outputs_fw, outputs_bw), (state_fw, state_bw)`` like
  ``bidirectional_dynamic_rnn`` (outputs not concatenated, the backward
  outputs in input time order);
* with ``sequence_length`` the outputs are 0 past each row's length and the
  state is the one at its last valid step (the backward direction starts at
  each row's last valid step, as ``reverse_sequence`` makes it).

Build it with ``fastlstm.load("model.ckpt")`` (the checkpoint prefix) or
``fastlstm.from_tf1(...)``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm.engine.layers import BidirectionalLayer, RunContext
from fastlstm.engine.lstm import LSTM
from fastlstm.engine.recurrent import StackStream
from fastlstm.errors import ConfigError, ModelFormatError, ShapeError, StreamError
from fastlstm.frontends.graph_model import GraphFrontEnd
from fastlstm.loaders.tf1_reader import cells_graph, read_tf1
from fastlstm.spec import LSTMSpec

__all__ = ["LSTMStateTuple", "TF1LSTM", "TF1LSTMStream", "from_tf1"]

LSTMStateTuple = collections.namedtuple("LSTMStateTuple", ["c", "h"])
LSTMStateTuple.__doc__ = "TF1's LSTM state: (c, h), in that order."


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be a bool, got {value!r}")
    return bool(value)


class TF1LSTM(GraphFrontEnd):
    """One TF1 LSTM cell, a MultiRNNCell stack, or a fw/bw pair of them.

    ``forward`` (and ``backward``) list one canonical LSTMSpec per layer;
    ``multi`` says whether a direction is a MultiRNNCell (its state is a
    tuple of per-layer states even with one layer); a (forward, backward)
    pair for a bidirectional model.
    """

    def __init__(
        self,
        forward: Sequence[LSTMSpec],
        backward: Sequence[LSTMSpec] | None = None,
        *,
        multi: bool | tuple[bool, bool] | None = None,
        time_major: bool = False,
        nan_policy: str = "raise",
        scopes: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        time_major = _bool(time_major, "time_major")
        forward = _cells(forward, "forward")
        if backward is not None:
            backward = _cells(backward, "backward")
            if backward[0].input_size != forward[0].input_size:
                raise ConfigError(
                    f"the backward cell takes {backward[0].input_size} features, "
                    f"the forward cell {forward[0].input_size}"
                )
        if not isinstance(multi, tuple):
            multi = (multi, multi)
        multi = tuple(
            (len(cells or ()) > 1) if m is None else bool(m)
            for m, cells in zip(multi, (forward, backward))
        )
        graph = cells_graph(forward, backward, multi, time_major, scopes or ())
        self._setup(graph, nan_policy, threads)

    def _adapt(self) -> None:
        spec = self.spec
        layer = self._graph.layers[spec.layers[1].name]
        if isinstance(layer, BidirectionalLayer):
            self._fw = layer.engine.forward_layer.cells
            self._bw = layer.engine.backward_layer.cells
            self._time_major = spec.layers[1].forward.time_major
        else:
            self._fw, self._bw = layer.direction.cells, None
            self._time_major = spec.layers[1].time_major
        self._multi = tuple(spec.conventions["multi"])
        self.scopes = list(spec.conventions["scopes"])

    time_major = property(lambda self: self._time_major)
    bidirectional = property(lambda self: self._bw is not None)
    input_size = property(lambda self: self._fw[0].input_size)
    num_layers = property(lambda self: len(self._fw))
    layers = property(
        lambda self: (list(self._fw), list(self._bw or [])),
        doc="(forward layers, backward layers) as fastlstm.LSTM objects.",
    )

    @property
    def output_size(self) -> int | tuple[int, int]:
        """Width of the outputs (a pair for a fw/bw model)."""
        f = self._fw[-1].output_size
        return f if self._bw is None else (f, self._bw[-1].output_size)

    def __repr__(self) -> str:
        def desc(layers: list[LSTM]) -> str:
            return "[" + ", ".join(repr(x) for x in layers) + "]"

        if self._bw is None:
            return f"TF1LSTM({desc(self._fw)})"
        return f"TF1LSTM(fw={desc(self._fw)}, bw={desc(self._bw)})"

    # -- inference ---------------------------------------------------------
    def __call__(
        self, x: Any, sequence_length: Any = None, initial_state: Any = None
    ) -> tuple[Any, Any]:
        xs, B, _ = _inputs.sequence_input(x, self.input_size, self._time_major)
        name = self.spec.layers[1].name
        if self._bw is None:
            states = self._unpack(initial_state, 0, "initial_state")
            init = {} if states is None else {name: _flat(states)}
            y, *flat = self._run(xs, sequence_length, init)
            return y, self._pack(flat, 0)
        if initial_state is not None and not _inputs.is_sequence(initial_state, 2):
            raise ShapeError(
                "initial_state of a bidirectional model must be (state_fw, state_bw)"
            )
        given = initial_state or (None, None)
        sf = self._unpack(given[0], 0, "initial_state[0] (fw)")
        sb = self._unpack(given[1], 1, "initial_state[1] (bw)")
        init = {}
        if sf is not None or sb is not None:  # zeros for the one not given
            sf = sf or _zeros(self._fw, B)
            sb = sb or _zeros(self._bw, B)
            init = {name: _flat(sf) + _flat(sb)}
        y_f, y_b, *flat = self._run(xs, sequence_length, init)
        n = 2 * len(self._fw)
        return (y_f, y_b), (self._pack(flat[:n], 0), self._pack(flat[n:], 1))

    def _run(self, xs: np.ndarray, lengths: Any, init: dict) -> list:
        ctx = RunContext(
            {},
            input_names={"x": "x"},
            lengths=lengths,
            initial_states=init,
            lengths_name="sequence_length",
            state_name="initial_state",
        )
        return self._graph.run([xs], ctx)

    def _unpack(self, state: Any, direction: int, name: str) -> list | None:
        """Per-layer (h, c) initial states from TF's (c, h) structure."""
        if state is None:
            return None
        layers = self._bw if direction else self._fw
        if not self._multi[direction]:
            if not _inputs.is_sequence(state, 2):
                raise ShapeError(f"{name} must be an LSTMStateTuple (c, h)")
            return [(state[1], state[0])]
        n = len(layers)
        if not _inputs.is_sequence(state, n) or not all(
            _inputs.is_sequence(s, 2) for s in state
        ):
            raise ShapeError(
                f"{name} must be a tuple of {n} LSTMStateTuple(c, h), one per layer"
            )
        return [(s[1], s[0]) for s in state]

    def _pack(self, flat: list, direction: int) -> Any:
        """TF's state structure from the engine's [h0, c0, h1, c1, ...]."""
        states = [LSTMStateTuple(flat[i + 1], flat[i]) for i in range(0, len(flat), 2)]
        return tuple(states) if self._multi[direction] else states[0]

    def stream(self, batch_size: int) -> TF1LSTMStream:
        """A stateful stream (one direction only)."""
        if self._bw is not None:
            raise StreamError(
                "a bidirectional model cannot stream: its backward direction "
                "needs the whole sequence before its first output"
            )
        return TF1LSTMStream(self, batch_size)


def _flat(pairs: list | None) -> list | None:
    """[h0, c0, h1, c1, ...] from per-layer (h, c) pairs."""
    return None if pairs is None else [a for pair in pairs for a in pair]


def _zeros(cells: list[LSTM], batch: int) -> list[tuple]:
    return [
        (
            np.zeros((batch, c.output_size), np.float32),
            np.zeros((batch, c.units), np.float32),
        )
        for c in cells
    ]


def _cells(specs: Sequence[LSTMSpec], what: str) -> list[LSTMSpec]:
    specs = list(specs)
    if not specs:
        raise ConfigError(f"the {what} direction needs at least one cell")
    for k, (a, b) in enumerate(zip(specs, specs[1:])):
        if b.input_size != a.output_size:
            raise ModelFormatError(
                f"{what} cell {k + 1} takes {b.input_size} features but cell "
                f"{k} outputs {a.output_size}"
            )
    return specs


class TF1LSTMStream(StackStream):
    """Feeds a one-direction TF1LSTM a sequence in pieces, keeping its state:
    ``feed(x)`` (batch-major, or time-major if the model is) returns every
    step's output, ``step(x_t)`` one step's; ``state`` in TF's structure."""

    def __init__(self, model: TF1LSTM, batch_size: int) -> None:
        super().__init__([layer.stream(batch_size) for layer in model._fw])
        self._model = model

    @property
    def state(self) -> Any:
        with self._guard:
            flat = [a for s in self._streams for a in s.state]
        return self._model._pack(flat, 0)

    @state.setter
    def state(self, value: Any) -> None:
        with self._guard:
            pairs = self._model._unpack(value, 0, "state")
            if pairs is None:
                raise ShapeError("state must be an LSTMStateTuple (c, h) or a tuple")
            for s, p in zip(self._streams, pairs):
                s.state = p


def from_tf1(
    source: Any,
    *,
    scope: str | None = None,
    forget_bias: float | Mapping = 1.0,
    cell_clip: float | Mapping | None = None,
    proj_clip: float | Mapping | None = None,
    activation: str | Mapping = "tanh",
    time_major: bool = False,
    nan_policy: str = "raise",
    threads: int | None = None,
) -> TF1LSTM:
    """A TF1LSTM from a checkpoint prefix (``"model.ckpt"``, or its
    ``.index``, or a folder with a ``checkpoint`` file), an ``.npz`` or a dict
    of variables keyed by their checkpoint names.

    Peepholes and projection come from the variables present. What the
    checkpoint does not store comes as options: ``forget_bias`` (default
    1.0, as in TF), ``cell_clip``, ``proj_clip``, ``activation`` (a Keras
    activation name, default tanh); each may be a {scope: value} dict for
    stacks whose cells differ. ``scope`` picks the cells when the checkpoint
    holds several (a cell scope or a prefix such as ``"encoder"``).
    """
    spec = read_tf1(
        source,
        scope=scope,
        forget_bias=forget_bias,
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        activation=activation,
        time_major=_bool(time_major, "time_major"),
    )
    return TF1LSTM.from_spec(spec, nan_policy=nan_policy, threads=threads)
