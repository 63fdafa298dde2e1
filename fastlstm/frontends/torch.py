"""PyTorch-shaped models: ``TorchLSTM``, ``TorchGRU`` and ``TorchRNN``
behave like ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``; ``TorchLSTMCell``,
``TorchGRUCell`` and ``TorchRNNCell`` like their cells. They run the model
graph the reader made on fastlstm's engine and only translate calls.

``output, h_n = model(x, hx=None, lengths=None)`` (``output, (h_n, c_n)``
for an LSTM):

* x (L, N, I), or (N, L, I) with ``batch_first``, or unbatched (L, I);
* output (L, N, D*H_out) (forward features first), h_n (D*num_layers, N,
  H_out), c_n (D*num_layers, N, H), index ``layer*D + direction``;
  ``batch_first`` does not apply to the states, as in torch;
* ``lengths`` (N,) gives what running a PackedSequence and
  ``pad_packed_sequence(..., total_length=L)`` gives: zeros past each
  length, the states at each row's last valid step (forward) or at t=0
  (reverse, which starts at each row's last valid step).

torch is never imported here; ``from_torch`` only reads the module (or the
state_dict) you pass it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm.engine.gru_rnn import one_state
from fastlstm.engine.layers import BidirectionalLayer, RunContext
from fastlstm.engine.recurrent import StackStream
from fastlstm.errors import ConfigError, ShapeError, StreamError, UnsupportedLayerError
from fastlstm.frontends.graph_model import GraphFrontEnd
from fastlstm.loaders.torch_recurrent import (
    cell_graph,
    find_recurrent,
    module_graph,
    read_torch_graph,
)
from fastlstm.model_spec import ModelSpec
from fastlstm.spec import real_array

__all__ = [
    "TorchLSTM",
    "TorchGRU",
    "TorchRNN",
    "TorchLSTMCell",
    "TorchGRUCell",
    "TorchRNNCell",
    "TorchStream",
    "TorchLSTMStream",
    "from_torch",
    "from_state_dict",
    "torch_front_end",
]


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be a bool, got {value!r}")
    return bool(value)


class _TorchModule(GraphFrontEnd):
    """What TorchLSTM, TorchGRU and TorchRNN share. ``layers`` holds one
    (forward, reverse-or-None) cell spec pair per layer."""

    module = "LSTM"
    # (name in messages, the width it has) of each state array
    state_names: tuple[str, ...] = ("h_0",)

    def __init__(
        self,
        layers: Sequence[tuple[Any, Any]],
        *,
        batch_first: bool = False,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> None:
        batch_first = _bool(batch_first, "batch_first")
        layers = list(layers)
        if not layers:
            raise ConfigError(f"a Torch{self.module} needs at least one layer")
        problems = _layer_problems(layers)
        if problems:
            raise ConfigError(
                f"invalid Torch{self.module}:\n  - " + "\n  - ".join(problems)
            )
        self._setup(module_graph(layers, batch_first, "<specs>"), nan_policy, threads)

    def _adapt(self) -> None:
        spec = self.spec
        self._batch_first = bool(spec.conventions["batch_first"])
        self._layers: list[tuple[Any, Any]] = []
        for ls in spec.layers[1:]:
            layer = self._graph.layers[ls.name]
            if isinstance(layer, BidirectionalLayer):
                pair = layer.engine.forward_layer, layer.engine.backward_layer
                self._layers.append((pair[0].cells[0], pair[1].cells[0]))
            else:
                self._layers.append((layer.direction.cells[0], None))
        first = self._layers[0][0]
        self.input_size = first.input_size
        self.hidden_size = first.units
        self.proj_size = getattr(first, "proj_size", 0)
        self.num_layers = len(self._layers)
        self.bidirectional = self._layers[0][1] is not None
        self.bias = first.spec.bias is not None

    batch_first = property(lambda self: self._batch_first)
    num_directions = property(lambda self: 2 if self.bidirectional else 1)
    output_size = property(
        lambda self: self.proj_size or self.hidden_size,
        doc="H_out: proj_size if set, else hidden_size.",
    )
    layers = property(
        lambda self: list(self._layers),
        doc="(forward, reverse-or-None) engine layer of each layer.",
    )

    def _repr_extras(self) -> list[str]:
        extras = []
        if self.num_layers > 1:
            extras.append(f"num_layers={self.num_layers}")
        if not self.bias:
            extras.append("bias=False")
        if self.batch_first:
            extras.append("batch_first=True")
        if self.bidirectional:
            extras.append("bidirectional=True")
        return extras

    def __repr__(self) -> str:
        return (
            f"Torch{self.module}({self.input_size}, {self.hidden_size}"
            + "".join(", " + e for e in self._repr_extras())
            + ")"
        )

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Any,
        *,
        prefix: str | None = None,
        batch_first: bool | None = None,
        nonlinearity: str | None = None,
        nan_policy: str = "raise",
        where: str = "<state_dict>",
    ) -> Any:
        """From a state_dict (arrays or tensors) of this module kind,
        possibly inside a checkpoint dict or under a prefix (``'lstm.'``,
        ``'module.'``). ``batch_first`` must be given (and an nn.RNN's
        ``nonlinearity``): a state_dict does not record them."""
        model = from_state_dict(
            state_dict,
            prefix=prefix,
            batch_first=batch_first,
            nonlinearity=nonlinearity,
            nan_policy=nan_policy,
            where=where,
        )
        if not isinstance(model, cls):
            raise ConfigError(
                f"{where}: holds {model.spec.source_format} weights, not "
                f"nn.{cls.module}; use fastlstm.from_torch or fastlstm.load"
            )
        return model

    # -- inference -----------------------------------------------------------
    def __call__(self, x: Any, hx: Any = None, lengths: Any = None) -> tuple:
        """``output, h_n`` (``output, (h_n, c_n)`` for an LSTM), shapes as
        torch returns them."""
        arr = real_array(x, "x")
        if arr.ndim not in (2, 3):
            layout = "(N, L, I)" if self._batch_first else "(L, N, I)"
            raise ShapeError(
                f"x must be {layout} or unbatched (L, I), got shape {arr.shape}"
            )
        unbatched = arr.ndim == 2
        if unbatched:
            arr = arr[None] if self._batch_first else arr[:, None]
        xs, N, T = _inputs.sequence_input(arr, self.input_size, not self._batch_first)
        states = self._initial_states(hx, N, unbatched)
        if lengths is not None and unbatched:
            lengths = np.atleast_1d(real_array(lengths, "lengths"))
        init = {}
        if states is not None:
            D = self.num_directions
            for k, ls in enumerate(self.spec.layers[1:]):
                init[ls.name] = [a[k * D + d] for d in range(D) for a in states]
        ctx = RunContext(
            {},
            lengths=lengths,
            initial_states=init,
            state_name="hx",
            input_names={"x": "x"},
        )
        outs = self._graph.run([xs], ctx)
        out, flat = outs[0], outs[1:]
        S = len(self.state_names)
        finals = [np.stack(flat[i::S]) for i in range(S)]
        if unbatched:
            out = out[0] if self._batch_first else out[:, 0]
            finals = [f[:, 0] for f in finals]
        return out, (tuple(finals) if S > 1 else finals[0])

    forward = __call__

    def _state_widths(self) -> tuple[int, ...]:
        return (self.output_size,)

    def _initial_states(self, hx: Any, N: int, unbatched: bool) -> list | None:
        if hx is None:
            return None
        S = len(self.state_names)
        values = _inputs.pair_input(hx, "hx") if S == 2 else (hx,)
        DL = self.num_directions * self.num_layers
        out = []
        for k, (value, width) in enumerate(zip(values, self._state_widths())):
            name = f"hx[{k}] ({self.state_names[k]})" if S > 1 else "hx"
            arr = real_array(value, name)
            want = (DL, width) if unbatched else (DL, N, width)
            if arr.shape != want:
                which = "H_out" if width == self.output_size else "H"
                raise ShapeError(
                    f"{name} must have shape {want} (D*num_layers"
                    + ("" if unbatched else ", batch")
                    + f", {which}), got {arr.shape}"
                )
            out.append(arr[:, None] if unbatched else arr)
        return out

    def stream(self, batch_size: int) -> TorchStream:
        """A stateful stream (unidirectional models only)."""
        if self.bidirectional:
            raise StreamError(
                f"a bidirectional {self.module} cannot stream: its reverse "
                "direction needs the whole sequence before its first output"
            )
        return TorchStream(self, batch_size)


class TorchLSTM(_TorchModule):
    """An ``nn.LSTM`` (any num_layers, bidirectional, proj_size, bias) on
    fastlstm's engine. Build it with ``fastlstm.load(path)``,
    ``fastlstm.from_torch(module_or_state_dict)`` or from canonical specs:
    ``layers`` holds one (forward, reverse-or-None) LSTMSpec pair per layer.
    ``output, (h_n, c_n) = model(x, hx=None, lengths=None)``."""

    module = "LSTM"
    state_names = ("h_0", "c_0")

    def _state_widths(self) -> tuple[int, ...]:
        return (self.output_size, self.hidden_size)

    def _repr_extras(self) -> list[str]:
        extras = super()._repr_extras()
        if self.proj_size:
            extras.append(f"proj_size={self.proj_size}")
        return extras


class TorchGRU(_TorchModule):
    """An ``nn.GRU`` (any num_layers, bidirectional, bias) on fastlstm's
    engine: ``output, h_n = model(x, hx=None, lengths=None)``; ``layers``
    holds one (forward, reverse-or-None) GRUSpec pair per layer."""

    module = "GRU"


class TorchRNN(_TorchModule):
    """An ``nn.RNN`` (tanh or relu, any num_layers, bidirectional, bias) on
    fastlstm's engine: ``output, h_n = model(x, hx=None, lengths=None)``;
    ``layers`` holds one (forward, reverse-or-None) SimpleRNNSpec pair per
    layer."""

    module = "RNN"

    nonlinearity = property(
        lambda self: self._layers[0][0].spec.activation.name.lower()
    )

    def _repr_extras(self) -> list[str]:
        extras = super()._repr_extras()
        if self.nonlinearity != "tanh":
            extras.insert(0, f"nonlinearity={self.nonlinearity!r}")
        return extras


def _layer_problems(layers: list) -> list[str]:
    """What is inconsistent in (forward, reverse-or-None) cells per layer."""
    bidirectional = layers[0][1] is not None
    first = layers[0][0]
    problems = []
    for k, (f, b) in enumerate(layers):
        if (b is not None) != bidirectional:
            problems.append(f"layer {k}: every layer or none must have a reverse")
        if any(type(c) is not type(first) for c in (f, b) if c is not None):
            problems.append(f"layer {k}: its cells are not all {type(first).__name__}")
            continue
        if b is not None and (b.units, b.output_size) != (f.units, f.output_size):
            problems.append(f"layer {k}: reverse sizes differ from forward")
        if (f.units, f.output_size) != (first.units, first.output_size):
            problems.append(f"layer {k}: sizes differ from layer 0")
        if k:
            want = layers[k - 1][0].output_size * (2 if bidirectional else 1)
            if f.input_size != want:
                problems.append(
                    f"layer {k} takes {f.input_size} features, layer {k - 1} "
                    f"outputs {want}"
                )
        if b is not None and b.input_size != f.input_size:
            problems.append(f"layer {k}: reverse input size differs")
    return problems


class TorchStream(StackStream):
    """Feeds a unidirectional TorchLSTM / TorchGRU / TorchRNN a sequence in
    pieces, keeping the states between calls: ``feed(x)`` takes (L, N, I)
    (or (N, L, I) with batch_first) and returns the output of each step;
    ``step(x_t)`` takes (N, I). ``state`` is ``h_n`` (``(h_n, c_n)`` for an
    LSTM) in torch's shapes."""

    def __init__(self, model: _TorchModule, batch_size: int) -> None:
        super().__init__([fw.stream(batch_size) for fw, _ in model._layers])
        self._model = model
        self._pairs = len(model.state_names) == 2

    @property
    def state(self) -> Any:
        with self._guard:
            per_layer = [s.state for s in self._streams]
        if not self._pairs:
            return np.stack(per_layer)
        return np.stack([p[0] for p in per_layer]), np.stack([p[1] for p in per_layer])

    @state.setter
    def state(self, value: Any) -> None:
        with self._guard:
            self._set_state(value)

    def _set_state(self, value: Any) -> None:
        n = len(self._streams)
        if not self._pairs:
            h = real_array(one_state(value, "state"), "state")
            if h.ndim != 3 or h.shape[0] != n:
                raise ShapeError(
                    f"state must be h of shape (num_layers={n}, batch, H_out), "
                    f"got {h.shape}"
                )
            for k, s in enumerate(self._streams):
                s.state = h[k]
            return
        h, c = _inputs.pair_input(value, "state")
        h = real_array(h, "state[0] (h)")
        c = real_array(c, "state[1] (c)")
        if h.ndim != 3 or c.ndim != 3 or h.shape[0] != n or c.shape[0] != n:
            raise ShapeError(
                f"state must be (h, c) of shapes (num_layers={n}, batch, H_out) "
                f"and ({n}, batch, H), got {h.shape} and {c.shape}"
            )
        for k, s in enumerate(self._streams):
            s.state = (h[k], c[k])


TorchLSTMStream = TorchStream  # the name this stream had when it ran LSTMs only


class _TorchCell(GraphFrontEnd):
    """What the cells share: ``h_1 = cell(x, h_0)`` (an LSTM cell takes and
    returns (h, c)) with x (N, I) or unbatched (I,); hx defaults to zeros."""

    module = "LSTM"
    state_names: tuple[str, ...] = ("h",)

    def __init__(
        self, spec: Any, *, nan_policy: str = "raise", threads: int | None = None
    ) -> None:
        self._setup(cell_graph(spec, "<spec>"), nan_policy, threads)

    def _adapt(self) -> None:
        self._layer = self._graph.layers["cell"].direction.cells[0]
        self.input_size = self._layer.input_size
        self.hidden_size = self._layer.units
        self.bias = self._layer.spec.bias is not None

    layer = property(lambda self: self._layer, doc="The underlying engine layer.")

    def __repr__(self) -> str:
        b = "" if self.bias else ", bias=False"
        return f"Torch{self.module}Cell({self.input_size}, {self.hidden_size}{b})"

    def __call__(self, x: Any, hx: Any = None) -> Any:
        arr = real_array(x, "x")
        if arr.ndim not in (1, 2):
            raise ShapeError(
                f"x must be (N, input_size) or unbatched (input_size,), got {arr.shape}"
            )
        unbatched = arr.ndim == 1
        if unbatched:
            arr = arr[None]
        state = None
        if hx is not None:
            S = len(self.state_names)
            values = _inputs.pair_input(hx, "hx") if S == 2 else (hx,)
            names = [f"hx[{k}] ({n})" for k, n in enumerate(self.state_names)]
            state = [real_array(v, n if S > 1 else "hx") for v, n in zip(values, names)]
            if unbatched:
                state = [a[None] for a in state]
        xs = _inputs.sequence_input(arr[:, None], self.input_size, False)[0]
        ctx = RunContext(
            {},
            initial_states={} if state is None else {"cell": state},
            state_name="hx",
            input_names={"x": "x"},
        )
        finals = self._graph.run([xs], ctx)[1:]
        if unbatched:
            finals = [f[0] for f in finals]
        return tuple(finals) if len(finals) > 1 else finals[0]

    forward = __call__

    def stream(self, batch_size: int) -> Any:
        """A stream whose ``step(x_t)`` returns h and keeps the state."""
        return self._layer.stream(batch_size)


class TorchLSTMCell(_TorchCell):
    """An ``nn.LSTMCell``: ``h_1, c_1 = cell(x, (h_0, c_0))``."""

    module = "LSTM"
    state_names = ("h", "c")


class TorchGRUCell(_TorchCell):
    """An ``nn.GRUCell``: ``h_1 = cell(x, h_0)``."""

    module = "GRU"


class TorchRNNCell(_TorchCell):
    """An ``nn.RNNCell`` (tanh or relu): ``h_1 = cell(x, h_0)``."""

    module = "RNN"


_MODULES = {"LSTM": TorchLSTM, "GRU": TorchGRU, "RNN": TorchRNN}
_CELLS = {"LSTM": TorchLSTMCell, "GRU": TorchGRUCell, "RNN": TorchRNNCell}


def torch_front_end(
    spec: ModelSpec, nan_policy: str = "raise", threads: int | None = None
) -> Any:
    """The torch-shaped model of a graph a torch reader made (by its
    conventions: module or cell, and the mode)."""
    kind = spec.conventions["mode"].split("_")[0]
    table = _CELLS if spec.conventions["calls"] == "torch_cell" else _MODULES
    return table[kind].from_spec(spec, nan_policy=nan_policy, threads=threads)


def from_state_dict(
    state_dict: Any,
    *,
    prefix: str | None = None,
    batch_first: bool | None = None,
    nonlinearity: str | None = None,
    nan_policy: str = "raise",
    where: str = "<state_dict>",
    threads: int | None = None,
) -> Any:
    """The torch-shaped model of a state_dict or checkpoint dict of NumPy
    arrays or torch tensors. A state_dict does not record ``batch_first``
    (a module needs it given, a cell has none) nor an nn.RNN's
    ``nonlinearity``."""
    spec = read_torch_graph(
        state_dict,
        prefix=prefix,
        batch_first=batch_first,
        nonlinearity=nonlinearity,
        where=where,
    )
    return torch_front_end(spec, nan_policy, threads)


_TORCH_CLASSES = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")


def from_torch(
    module: Any,
    *,
    prefix: str | None = None,
    batch_first: bool | None = None,
    threads: int | None = None,
) -> Any:
    """A fastlstm model from a live ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` or one
    of their cells, from a module holding one (``prefix=`` picks one of
    several), or from a state_dict (a dict of tensors or arrays).
    ``batch_first`` and an nn.RNN's nonlinearity come from the module; a
    state_dict does not record them, so for one batch_first must be given
    (use from_state_dict for an nn.RNN's nonlinearity)."""
    if isinstance(module, Mapping):
        return from_state_dict(
            module, prefix=prefix, batch_first=batch_first, threads=threads
        )
    if not (hasattr(module, "state_dict") and hasattr(module, "named_modules")):
        raise TypeError(
            "from_torch takes an nn.LSTM, nn.GRU, nn.RNN, one of their cells, a "
            f"module holding one, or a state_dict; got {type(module).__name__}"
        )
    where = f"<live {type(module).__name__}>"
    sd = module.state_dict()
    p, _, _ = find_recurrent(sd, prefix, where)
    sub = dict(module.named_modules()).get(p.rstrip("."), None)
    if not any(c.__name__ in _TORCH_CLASSES for c in type(sub).__mro__):
        raise UnsupportedLayerError(
            f"{where}: the recurrent weights under {p!r} belong to a "
            f"{type(sub).__name__}; fastlstm runs nn.LSTM, nn.GRU, nn.RNN and "
            "their cells"
        )
    if batch_first is None:
        batch_first = bool(getattr(sub, "batch_first", False))
    nonlinearity = getattr(sub, "nonlinearity", None)
    return from_state_dict(
        sd,
        prefix=p,
        batch_first=batch_first,
        nonlinearity=nonlinearity,
        where=where,
        threads=threads,
    )
