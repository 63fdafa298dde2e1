"""PyTorch-shaped models: ``TorchLSTM`` behaves like ``nn.LSTM`` and
``TorchLSTMCell`` like ``nn.LSTMCell``, running on fastlstm.LSTM layers.

``output, (h_n, c_n) = model(x, hx=None, lengths=None)``:

* x (L, N, I), or (N, L, I) with ``batch_first``, or unbatched (L, I);
* output (L, N, D*H_out) (forward features first), h_n (D*num_layers, N,
  H_out), c_n (D*num_layers, N, H), index ``layer*D + direction``;
  ``batch_first`` does not apply to h and c, as in torch;
* ``lengths`` (N,) gives what running a PackedSequence and
  ``pad_packed_sequence(..., total_length=L)`` gives: zeros past each
  length, h_n/c_n at each row's last valid step (forward) or at t=0
  (reverse, which starts at each row's last valid step).

torch is never imported here; ``from_torch`` only reads the module (or the
state_dict) you pass it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm.engine.layers import BidirectionalLayer, RunContext
from fastlstm.engine.lstm import LSTM, LSTMStream
from fastlstm.engine.recurrent import StackStream
from fastlstm.errors import ConfigError, ShapeError, StreamError, UnsupportedLayerError
from fastlstm.frontends.graph_model import GraphFrontEnd
from fastlstm.loaders.torch_lstm import (
    cell_graph,
    find_lstm,
    lstm_graph,
    read_state_dict,
)
from fastlstm.spec import LSTMSpec, real_array

__all__ = [
    "TorchLSTM",
    "TorchLSTMCell",
    "TorchLSTMStream",
    "from_torch",
    "from_state_dict",
]


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be a bool, got {value!r}")
    return bool(value)


class TorchLSTM(GraphFrontEnd):
    """An ``nn.LSTM`` (any num_layers, bidirectional, proj_size, bias) on
    fastlstm's engine. Build it with ``fastlstm.load(path)``,
    ``fastlstm.from_torch(module_or_state_dict)`` or from canonical specs:
    ``layers`` holds one (forward, reverse-or-None) LSTMSpec pair per layer.
    """

    def __init__(
        self,
        layers: Sequence[tuple[LSTMSpec, LSTMSpec | None]],
        *,
        batch_first: bool = False,
        nan_policy: str = "raise",
    ) -> None:
        batch_first = _bool(batch_first, "batch_first")
        layers = list(layers)
        if not layers:
            raise ConfigError("a TorchLSTM needs at least one layer")
        problems = _layer_problems(layers)
        if problems:
            raise ConfigError("invalid TorchLSTM:\n  - " + "\n  - ".join(problems))
        self._setup(lstm_graph(layers, batch_first, "<specs>"), nan_policy)

    def _adapt(self) -> None:
        spec = self.spec
        self._batch_first = bool(spec.conventions["batch_first"])
        self._layers: list[tuple[LSTM, LSTM | None]] = []
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
        self.proj_size = first.proj_size
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
        doc="(forward, reverse-or-None) fastlstm.LSTM pair of each layer.",
    )

    def __repr__(self) -> str:
        extras = []
        if self.num_layers > 1:
            extras.append(f"num_layers={self.num_layers}")
        if not self.bias:
            extras.append("bias=False")
        if self.batch_first:
            extras.append("batch_first=True")
        if self.bidirectional:
            extras.append("bidirectional=True")
        if self.proj_size:
            extras.append(f"proj_size={self.proj_size}")
        return (
            f"TorchLSTM({self.input_size}, {self.hidden_size}"
            + "".join(", " + e for e in extras)
            + ")"
        )

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Any,
        *,
        prefix: str | None = None,
        batch_first: bool | None = None,
        nan_policy: str = "raise",
        where: str = "<state_dict>",
    ) -> TorchLSTM:
        """From an nn.LSTM state_dict (arrays or tensors), possibly inside a
        checkpoint dict or under a prefix (``'lstm.'``, ``'module.'``).
        ``batch_first`` must be given: a state_dict does not record it."""
        model = from_state_dict(
            state_dict,
            prefix=prefix,
            batch_first=batch_first,
            nan_policy=nan_policy,
            where=where,
        )
        if not isinstance(model, TorchLSTM):
            raise ConfigError(
                f"{where}: holds nn.LSTMCell weights; use TorchLSTMCell or "
                "fastlstm.from_torch"
            )
        return model

    # -- inference -----------------------------------------------------------
    def __call__(
        self, x: Any, hx: tuple[Any, Any] | None = None, lengths: Any = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``output, (h_n, c_n)``, shapes as nn.LSTM returns them."""
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
        h_n, c_n = np.stack(flat[0::2]), np.stack(flat[1::2])
        if unbatched:
            out = out[0] if self._batch_first else out[:, 0]
            h_n, c_n = h_n[:, 0], c_n[:, 0]
        return out, (h_n, c_n)

    forward = __call__

    def _initial_states(
        self, hx: Any, N: int, unbatched: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        if hx is None:
            return None
        h0, c0 = _inputs.pair_input(hx, "hx")
        DL = self.num_directions * self.num_layers
        out = []
        for value, width, name in (
            (h0, self.output_size, "hx[0] (h_0)"),
            (c0, self.hidden_size, "hx[1] (c_0)"),
        ):
            arr = real_array(value, name)
            want = (DL, width) if unbatched else (DL, N, width)
            if arr.shape != want:
                raise ShapeError(
                    f"{name} must have shape {want} (D*num_layers"
                    + ("" if unbatched else ", batch")
                    + f", {'H_out' if width == self.output_size else 'H'}), "
                    f"got {arr.shape}"
                )
            out.append(arr[:, None] if unbatched else arr)
        return out[0], out[1]

    def stream(self, batch_size: int) -> TorchLSTMStream:
        """A stateful stream (unidirectional models only)."""
        if self.bidirectional:
            raise StreamError(
                "a bidirectional LSTM cannot stream: its reverse direction "
                "needs the whole sequence before its first output"
            )
        return TorchLSTMStream(self, batch_size)


def _layer_problems(layers: list) -> list[str]:
    """What is inconsistent in (forward, reverse-or-None) cells per layer."""
    bidirectional = layers[0][1] is not None
    first = layers[0][0]
    problems = []
    for k, (f, b) in enumerate(layers):
        if (b is not None) != bidirectional:
            problems.append(f"layer {k}: every layer or none must have a reverse")
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


class TorchLSTMStream(StackStream):
    """Feeds a unidirectional TorchLSTM a sequence in pieces, keeping (h, c)
    between calls: ``feed(x)`` takes (L, N, I) (or (N, L, I) with
    batch_first) and returns the output of each step; ``step(x_t)`` takes
    (N, I). ``state`` is ``(h_n, c_n)`` in torch's shapes."""

    def __init__(self, model: TorchLSTM, batch_size: int) -> None:
        super().__init__([fw.stream(batch_size) for fw, _ in model._layers])
        self._model = model

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        with self._guard:
            pairs = [s.state for s in self._streams]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    @state.setter
    def state(self, value: tuple[Any, Any]) -> None:
        with self._guard:
            self._set_state(value)

    def _set_state(self, value: tuple[Any, Any]) -> None:
        h, c = _inputs.pair_input(value, "state")
        h = real_array(h, "state[0] (h)")
        c = real_array(c, "state[1] (c)")
        n = len(self._streams)
        if h.ndim != 3 or c.ndim != 3 or h.shape[0] != n or c.shape[0] != n:
            raise ShapeError(
                f"state must be (h, c) of shapes (num_layers={n}, batch, H_out) "
                f"and ({n}, batch, H), got {h.shape} and {c.shape}"
            )
        for k, s in enumerate(self._streams):
            s.state = (h[k], c[k])


class TorchLSTMCell(GraphFrontEnd):
    """An ``nn.LSTMCell``: ``h_1, c_1 = cell(x, (h_0, c_0))`` with x (N, I)
    or unbatched (I,); hx defaults to zeros."""

    def __init__(self, spec: LSTMSpec, *, nan_policy: str = "raise") -> None:
        self._setup(cell_graph(spec, "<spec>"), nan_policy)

    def _adapt(self) -> None:
        self._layer = self._graph.layers["cell"].direction.cells[0]
        self.input_size = self._layer.input_size
        self.hidden_size = self._layer.units
        self.bias = self._layer.spec.bias is not None

    layer = property(lambda self: self._layer, doc="The underlying fastlstm.LSTM.")

    def __repr__(self) -> str:
        b = "" if self.bias else ", bias=False"
        return f"TorchLSTMCell({self.input_size}, {self.hidden_size}{b})"

    def __call__(
        self, x: Any, hx: tuple[Any, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
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
            h0, c0 = _inputs.pair_input(hx, "hx")
            h0, c0 = real_array(h0, "hx[0] (h)"), real_array(c0, "hx[1] (c)")
            if unbatched:
                h0, c0 = h0[None], c0[None]
            state = (h0, c0)
        xs = _inputs.sequence_input(arr[:, None], self.input_size, False)[0]
        ctx = RunContext(
            {},
            initial_states={} if state is None else {"cell": list(state)},
            state_name="hx",
            input_names={"x": "x"},
        )
        _, h, c = self._graph.run([xs], ctx)
        return (h[0], c[0]) if unbatched else (h, c)

    forward = __call__

    def stream(self, batch_size: int) -> LSTMStream:
        """A stream whose ``step(x_t)`` returns h and keeps (h, c)."""
        return self._layer.stream(batch_size)


def from_state_dict(
    state_dict: Any,
    *,
    prefix: str | None = None,
    batch_first: bool | None = None,
    nan_policy: str = "raise",
    where: str = "<state_dict>",
) -> TorchLSTM | TorchLSTMCell:
    """A TorchLSTM (or TorchLSTMCell) from a state_dict or checkpoint dict of
    NumPy arrays or torch tensors. A state_dict does not record
    ``batch_first``: an nn.LSTM needs it given (an nn.LSTMCell has none)."""
    spec = read_state_dict(
        state_dict, prefix=prefix, batch_first=batch_first, where=where
    )
    if spec.conventions["calls"] == "torch_cell":
        return TorchLSTMCell.from_spec(spec, nan_policy=nan_policy)
    return TorchLSTM.from_spec(spec, nan_policy=nan_policy)


def from_torch(
    module: Any, *, prefix: str | None = None, batch_first: bool | None = None
) -> TorchLSTM | TorchLSTMCell:
    """A fastlstm model from a live ``nn.LSTM`` / ``nn.LSTMCell``, from a
    module holding one (``prefix=`` picks one of several), or from a
    state_dict (a dict of tensors or arrays). ``batch_first`` defaults to
    the module's own setting; a state_dict does not record it, so for one it
    must be given."""
    if isinstance(module, Mapping):
        return from_state_dict(module, prefix=prefix, batch_first=batch_first)
    if not (hasattr(module, "state_dict") and hasattr(module, "named_modules")):
        raise TypeError(
            "from_torch takes an nn.LSTM, nn.LSTMCell, a module holding one, or a "
            f"state_dict; got {type(module).__name__}"
        )
    cls = type(module).__name__
    mode = getattr(module, "mode", None)
    if (mode is not None and mode != "LSTM") or cls in (
        "GRU",
        "RNN",
        "GRUCell",
        "RNNCell",
    ):
        raise UnsupportedLayerError(
            f"from_torch: {cls} is not an LSTM; fastlstm runs nn.LSTM and nn.LSTMCell"
        )
    where = f"<live {cls}>"
    sd = module.state_dict()
    p, kind, _ = find_lstm(sd, prefix, where)
    if batch_first is None:
        sub = dict(module.named_modules()).get(p.rstrip("."), None)
        batch_first = bool(getattr(sub, "batch_first", False))
    return from_state_dict(sd, prefix=p, batch_first=batch_first, where=where)
