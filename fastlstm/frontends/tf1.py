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
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm.engine.lstm import LSTM, prepare_call
from fastlstm.engine.recurrent import Bidirectional, Direction, StackStream
from fastlstm.errors import ConfigError, ModelFormatError, ShapeError, StreamError
from fastlstm.loaders import read_npz, sniff, tf1_prefix
from fastlstm.loaders.tf1_cell import (
    cell_spec,
    find_cells,
    is_stack_scope,
    structure_of,
)
from fastlstm.loaders.tf1_checkpoint import CheckpointReader
from fastlstm.spec import LSTMSpec

__all__ = ["LSTMStateTuple", "TF1LSTM", "TF1LSTMStream", "from_tf1"]

LSTMStateTuple = collections.namedtuple("LSTMStateTuple", ["c", "h"])
LSTMStateTuple.__doc__ = "TF1's LSTM state: (c, h), in that order."


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be a bool, got {value!r}")
    return bool(value)


class TF1LSTM:
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
    ) -> None:
        self._time_major = _bool(time_major, "time_major")
        tm = self._time_major
        self._fw = _build(forward, False, tm, nan_policy, "forward")
        self._bw = None
        if backward is not None:
            self._bw = _build(backward, True, tm, nan_policy, "backward")
            if self._bw[0].input_size != self._fw[0].input_size:
                raise ConfigError(
                    f"the backward cell takes {self._bw[0].input_size} features, "
                    f"the forward cell {self._fw[0].input_size}"
                )
        if not isinstance(multi, tuple):
            multi = (multi, multi)
        self._multi = tuple(
            (len(layers or ()) > 1) if m is None else bool(m)
            for m, layers in zip(multi, (self._fw, self._bw))
        )
        self.scopes = list(scopes or [])
        self._directions = [Direction(self._fw)]
        if self._bw is not None:
            self._directions.append(Direction(self._bw))
            self._pair = Bidirectional(*self._directions, merge_mode=None)

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
        p = prepare_call(x, self.input_size, self._time_major, None, sequence_length)
        if self._bw is None:
            states = self._unpack(initial_state, 0, "initial_state")
            out, st = self._directions[0].run(p, _flat(states), True)
            return out, self._pack(st, 0)
        if initial_state is not None and not _inputs.is_sequence(initial_state, 2):
            raise ShapeError(
                "initial_state of a bidirectional model must be (state_fw, state_bw)"
            )
        init = initial_state or (None, None)
        sf = self._unpack(init[0], 0, "initial_state[0] (fw)")
        sb = self._unpack(init[1], 1, "initial_state[1] (bw)")
        if (sf is None) != (sb is None):  # zeros for the one not given
            sf = sf or _zeros(self._fw, p.batch)
            sb = sb or _zeros(self._bw, p.batch)
        both = None if sf is None else _flat(sf) + _flat(sb)
        (out_f, out_b), st = self._pair.run(p, both, True)
        n = 2 * len(self._fw)
        return (out_f, out_b), (self._pack(st[:n], 0), self._pack(st[n:], 1))

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


def _build(
    specs: Sequence[LSTMSpec], backward: bool, tm: bool, nan_policy: str, what: str
) -> list[LSTM]:
    specs = list(specs)
    if not specs:
        raise ConfigError(f"the {what} direction needs at least one cell")
    layers = []
    for k, spec in enumerate(specs):
        spec = dataclasses.replace(
            spec, go_backwards=backward, return_sequences=True, return_state=False
        )
        layer = LSTM.from_spec(spec, time_major=tm, nan_policy=nan_policy)
        if k and layer.input_size != layers[-1].output_size:
            raise ModelFormatError(
                f"{what} cell {k} takes {layer.input_size} features but cell "
                f"{k - 1} outputs {layers[-1].output_size}"
            )
        layers.append(layer)
    return layers


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


# --- loading -------------------------------------------------------------------


def _variable_source(source: Any) -> tuple[list[str], Any, str]:
    """(names, get(name) -> array, where) for a path or a mapping."""
    if isinstance(source, Mapping):
        flat: dict[str, np.ndarray] = {}
        for k, v in source.items():
            if hasattr(v, "numpy") and not isinstance(v, np.ndarray):
                v = v.numpy()  # a tf.Variable / EagerTensor
            flat[str(k)] = np.asarray(v)
        return list(flat), flat.__getitem__, "<variables>"
    path = os.fspath(source)
    prefix = tf1_prefix(path)
    if prefix is not None:
        reader = CheckpointReader(prefix)
        return reader.names, reader.get, prefix
    if os.path.isfile(path) and sniff(path) == "zip":
        arrays = read_npz(path)
        return list(arrays), arrays.__getitem__, path
    raise ModelFormatError(
        f"{path}: not a TF checkpoint (no {path}.index) nor an .npz of variables"
    )


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

    names, get, where = _variable_source(source)
    try:
        cells = find_cells(names)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{where}: {exc}") from None
    structure = structure_of(cells, scope, where)
    if proj_clip is not None and not isinstance(proj_clip, Mapping):
        if all(
            c.projection is None for c in structure.forward + (structure.backward or ())
        ):
            raise ConfigError(
                f"{where}: proj_clip is set but no cell has a projection "
                "(projection/kernel)"
            )
    opts = dict(
        forget_bias=forget_bias,
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        activation=activation,
    )
    fw = [cell_spec(c, get, where, **opts) for c in structure.forward]
    bw = None
    if structure.backward is not None:
        bw = [cell_spec(c, get, where, **opts) for c in structure.backward]
    multi = (
        is_stack_scope(structure.forward[-1].scope),
        structure.backward is not None and is_stack_scope(structure.backward[-1].scope),
    )
    return TF1LSTM(
        fw,
        bw,
        multi=multi,
        time_major=time_major,
        nan_policy=nan_policy,
        scopes=structure.scopes,
    )
