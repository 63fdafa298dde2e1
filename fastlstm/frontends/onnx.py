"""ONNX graphs of LSTM nodes, run like ONNX Runtime.

``Y, Y_h, Y_c = model(X, sequence_lens=None, initial_h=None, initial_c=None)``
for a single-node graph; in general ``model(*inputs, **named_inputs)``
returns the list of graph outputs, in the graph's order (as
``InferenceSession.run(None, feeds)`` does). Glue nodes run as NumPy
(fastlstm.loaders.onnx_graph); LSTM nodes run on fastlstm's engine.

ONNX LSTM (onnx/onnx:onnx/defs/rnn/defs.cc): gate blocks i, o, f, c
(canonical i, f, g, o = ONNX blocks [0, 2, 3, 1]), bias = Wb + Rb, peepholes
P = (i, o, f). The engine's LSTM has one gate activation and one cell
activation used for both the candidate and the output; the ONNX features it
cannot express (``clip`` on the gates' pre-activations, ``input_forget``,
different g and h activations, activations with other parameters) run on a
float64 NumPy implementation of the ONNX equations instead, as ONNX Runtime
computes them; ``numpy_fallback=False`` makes them an error instead.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastlstm.engine.lstm import LSTM
from fastlstm.errors import (
    ConfigError,
    FastLSTMError,
    ModelFormatError,
    ShapeError,
    UnsupportedLayerError,
)
from fastlstm.loaders.onnx_graph import (
    CORRUPT_FIELD_ERRORS,
    SUPPORTED_OPS,
    Graph,
    Node,
    corrupt_model_error,
    glue_budget,
    read_onnx,
    run_glue,
)
from fastlstm.spec import LSTMSpec

__all__ = ["OnnxModel", "from_onnx", "load_onnx"]

ONNX_TO_CANONICAL = (0, 2, 3, 1)  # ONNX blocks i, o, f, c -> i, f, g, o
LSTM_ATTRIBUTES = {
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "input_forget",
    "layout",
}
# activations and the defaults ONNX Runtime uses when alpha/beta run out
ALPHA = {
    "affine": 1.0,
    "leakyrelu": 0.01,
    "thresholdedrelu": 1.0,
    "scaledtanh": 1.0,
    "hardsigmoid": 0.2,
    "elu": 1.0,
}
BETA = {"affine": 0.0, "scaledtanh": 1.0, "hardsigmoid": 0.5}
ACTIVATIONS = {"relu", "tanh", "sigmoid", "softsign", "softplus"} | set(ALPHA)
DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")


@dataclasses.dataclass(frozen=True)
class Act:
    name: str  # lower case
    alpha: float = 0.0
    beta: float = 0.0

    def __call__(self, v: np.ndarray) -> np.ndarray:
        n, a, b = self.name, self.alpha, self.beta
        with np.errstate(over="ignore"):
            if n == "sigmoid":
                return 0.5 * (1.0 + np.tanh(0.5 * v))
            if n == "tanh":
                return np.tanh(v)
            if n == "relu":
                return np.maximum(v, 0.0)
            if n == "softsign":
                return v / (1.0 + np.abs(v))
            if n == "softplus":
                return np.logaddexp(0.0, v)
            if n == "affine":
                return a * v + b
            if n == "leakyrelu":
                return np.where(v >= 0, v, a * v)
            if n == "thresholdedrelu":
                return np.where(v > a, v, 0.0)
            if n == "scaledtanh":
                return a * np.tanh(b * v)
            if n == "hardsigmoid":
                return np.clip(a * v + b, 0.0, 1.0)
            if n == "elu":
                return np.where(v >= 0, v, a * np.expm1(np.minimum(v, 0.0)))
        raise AssertionError(n)

    def engine(self) -> str | None:
        """The engine's name for this function, or None."""

        def near(x: float, y: float) -> bool:
            return abs(x - y) <= 1e-7

        n, a, b = self.name, self.alpha, self.beta
        if n in ("sigmoid", "tanh", "relu", "softsign", "softplus"):
            return n
        if n == "elu" and near(a, 1.0):
            return "elu"
        if n == "hardsigmoid" and near(b, 0.5):
            if near(a, 0.2):
                return "hard_sigmoid_k2"
            if near(a, 1 / 6):
                return "hard_sigmoid_k3"
        if n == "affine" and near(a, 1.0) and near(b, 0.0):
            return "linear"
        if n == "scaledtanh" and near(a, 1.0) and near(b, 1.0):
            return "tanh"
        if n == "leakyrelu" and near(a, 0.0):
            return "relu"
        return None


def _activations(node: Node, D: int) -> list[tuple[Act, Act, Act]]:
    names = node.attrs.get("activations")
    if names is None:
        names = list(DEFAULT_ACTIVATIONS) * D
    if len(names) != 3 * D:
        raise ModelFormatError(
            f"{node.describe()}: {len(names)} activations for {D} direction(s); "
            f"expected {3 * D}"
        )
    alphas = list(node.attrs.get("activation_alpha", []))
    betas = list(node.attrs.get("activation_beta", []))
    acts = []
    for name in names:
        key = str(name).lower()
        if key not in ACTIVATIONS:
            raise UnsupportedLayerError(
                f"{node.describe()}: activation {name!r} is not an ONNX LSTM "
                f"activation; supported: {sorted(ACTIVATIONS)}"
            )
        a = alphas.pop(0) if key in ALPHA and alphas else ALPHA.get(key, 0.0)
        b = betas.pop(0) if key in BETA and betas else BETA.get(key, 0.0)
        acts.append(Act(key, float(a), float(b)))
    return [tuple(acts[3 * d : 3 * d + 3]) for d in range(D)]


def _blocks(a: np.ndarray) -> np.ndarray:
    parts = np.split(a, 4, axis=-1)
    return np.concatenate([parts[k] for k in ONNX_TO_CANONICAL], axis=-1)


class _Direction:
    """One direction of an ONNX LSTM node: on the engine, or in NumPy."""

    def __init__(
        self,
        node: Node,
        W: np.ndarray,
        R: np.ndarray,
        B: np.ndarray | None,
        P: np.ndarray | None,
        acts: tuple[Act, Act, Act],
        clip: float | None,
        input_forget: bool,
        reverse: bool,
        numpy_fallback: bool,
    ) -> None:
        H = R.shape[-1]
        self.W, self.R = W.astype(np.float64), R.astype(np.float64)
        self.b = None if B is None else B[: 4 * H].astype(np.float64) + B[4 * H :]
        self.P = None if P is None else P.astype(np.float64)
        self.acts, self.clip = acts, clip
        self.input_forget, self.reverse = input_forget, reverse
        f, g, h = acts
        why = []
        if clip is not None:
            why.append(f"clip={clip:g}")
        if input_forget:
            why.append("input_forget=1")
        if g != h:
            why.append(f"activations g={g.name} and h={h.name} differ")
        for act in (f, g):
            if act.engine() is None:
                why.append(
                    f"activation {act.name}(alpha={act.alpha:g}, beta={act.beta:g})"
                )
        self.layer = None
        self.fallback_reason = "; ".join(why)
        if why:
            if not numpy_fallback:
                raise UnsupportedLayerError(
                    f"{node.describe()}: the engine cannot express "
                    f"{self.fallback_reason} (numpy_fallback=False)"
                )
            return
        peep = None
        if P is not None:
            peep = np.stack([P[0:H], P[2 * H : 3 * H], P[H : 2 * H]])
        spec = LSTMSpec.create(
            _blocks(W.T.astype(np.float32)),
            _blocks(R.T.astype(np.float32)),
            None if self.b is None else _blocks(self.b.astype(np.float32)),
            peepholes=peep,
            activation=g.engine(),
            recurrent_activation=f.engine(),
            go_backwards=reverse,
            return_sequences=True,
            return_state=True,
        )
        self.layer = LSTM.from_spec(spec, nan_policy="propagate")

    def run(
        self, x: np.ndarray, lengths: Any, h0: Any, c0: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x (B, T, I) -> y (B, T, H) in time order, h, c."""
        if self.layer is not None:
            init = None if h0 is None else (h0, c0)
            y, h, c = self.layer(x, initial_state=init, lengths=lengths)
            if self.reverse:
                y = np.flip(y, axis=1)
            return y, h, c
        return self._numpy(x, lengths, h0, c0)

    def _numpy(
        self, x: np.ndarray, lengths: Any, h0: Any, c0: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        B, T, _ = x.shape
        H = self.R.shape[1]
        f, g, hact = self.acts
        zx = x.astype(np.float64) @ self.W.T
        if self.b is not None:
            zx += self.b
        h = np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64)
        c = np.zeros((B, H)) if c0 is None else np.asarray(c0, np.float64)
        lens = np.full(B, T) if lengths is None else np.asarray(lengths)
        y = np.zeros((B, T, H))
        clip = self.clip

        def cl(v: np.ndarray) -> np.ndarray:
            return v if clip is None else np.clip(v, -clip, clip)

        P = self.P
        for t in range(T - 1, -1, -1) if self.reverse else range(T):
            z = zx[:, t] + h @ self.R.T
            zi, zo, zf, zc = np.split(z, 4, axis=1)
            if P is not None:
                zi = zi + P[0:H] * c
                zf = zf + P[2 * H :] * c
            i = f(cl(zi))
            fg = 1.0 - i if self.input_forget else f(cl(zf))
            cn = fg * c + i * g(cl(zc))
            if P is not None:
                zo = zo + P[H : 2 * H] * cn
            hn = f(cl(zo)) * hact(cn)
            valid = (t < lens)[:, None]
            h = np.where(valid, hn, h)
            c = np.where(valid, cn, c)
            y[:, t] = np.where(valid, hn, 0.0)
        return (
            y.astype(np.float32),
            h.astype(np.float32),
            c.astype(np.float32),
        )


class _LSTMNode:
    """An ONNX LSTM node; built once its weights are known."""

    def __init__(self, node: Node, numpy_fallback: bool) -> None:
        unknown = sorted(set(node.attrs) - LSTM_ATTRIBUTES)
        if unknown:
            raise UnsupportedLayerError(
                f"{node.describe()}: unsupported LSTM attribute(s) {unknown}"
            )
        self.node = node
        self.fallback = numpy_fallback
        a = node.attrs
        self.direction = a.get("direction", "forward")
        if self.direction not in ("forward", "reverse", "bidirectional"):
            raise ModelFormatError(
                f"{node.describe()}: direction {self.direction!r} is not forward, "
                "reverse or bidirectional"
            )
        self.D = 2 if self.direction == "bidirectional" else 1
        self.layout = int(a.get("layout", 0))
        if self.layout not in (0, 1):
            raise ModelFormatError(f"{node.describe()}: layout {self.layout}")
        clip = a.get("clip")
        if clip is not None and not (np.isfinite(clip) and clip > 0):
            raise ModelFormatError(f"{node.describe()}: clip must be > 0, got {clip}")
        self.clip = None if clip is None else float(clip)
        self.input_forget = bool(a.get("input_forget", 0))
        self.acts = _activations(node, self.D)
        self.dirs: list[_Direction] | None = None
        self._key: tuple | None = None

    def prepare(self, W: Any, R: Any, B: Any, P: Any) -> list[_Direction]:
        node, D = self.node, self.D
        where = node.describe()
        key = (id(W), id(R), id(B), id(P))
        if self.dirs is not None and self._key == key:
            return self.dirs
        arrays = {}
        for name, arr in (("W", W), ("R", R), ("B", B), ("P", P)):
            if arr is None:
                if name in ("W", "R"):
                    raise ModelFormatError(f"{where}: input {name} is missing")
                continue
            arr = np.asarray(arr)
            if arr.dtype.kind != "f":
                raise ModelFormatError(f"{where}: {name} has dtype {arr.dtype}")
            arrays[name] = arr
        R_ = arrays["R"]
        if R_.ndim != 3 or R_.shape[0] != D or R_.shape[1] != 4 * R_.shape[2]:
            raise ModelFormatError(
                f"{where}: R has shape {R_.shape}, expected ({D}, 4*hidden, hidden)"
            )
        H = R_.shape[2]
        hs = node.attrs.get("hidden_size")
        if hs is not None and hs != H:
            raise ModelFormatError(f"{where}: hidden_size={hs} but R says {H}")
        W_ = arrays["W"]
        if W_.ndim != 3 or W_.shape[:2] != (D, 4 * H) or W_.shape[2] < 1:
            raise ModelFormatError(
                f"{where}: W has shape {W_.shape}, expected ({D}, {4 * H}, input)"
            )
        for name, shape in (("B", (D, 8 * H)), ("P", (D, 3 * H))):
            if name in arrays and arrays[name].shape != shape:
                raise ModelFormatError(
                    f"{where}: {name} has shape {arrays[name].shape}, expected {shape}"
                )
        self.hidden, self.input_size = H, W_.shape[2]
        dirs = []
        for d in range(D):
            reverse = self.direction == "reverse" or d == 1
            dirs.append(
                _Direction(
                    node,
                    W_[d],
                    R_[d],
                    arrays["B"][d] if "B" in arrays else None,
                    arrays["P"][d] if "P" in arrays else None,
                    self.acts[d],
                    self.clip,
                    self.input_forget,
                    reverse,
                    self.fallback,
                )
            )
        self.dirs, self._key = dirs, key
        return dirs

    def run(self, ins: list) -> list:
        ins = list(ins) + [None] * (8 - len(ins))
        X, W, R, B, seq, h0, c0, P = ins[:8]
        where = self.node.describe()
        dirs = self.prepare(W, R, B, P)
        if X is None:
            raise ModelFormatError(f"{where}: input X is missing")
        x = np.asarray(X)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = (
                "(seq, batch, input)" if self.layout == 0 else "(batch, seq, input)"
            )
            raise ShapeError(
                f"{where}: X has shape {x.shape}, expected {layout} with "
                f"input={self.input_size}"
            )
        if x.dtype.kind != "f":
            raise ShapeError(f"{where}: X has dtype {x.dtype}; floats expected")
        xb = x.transpose(1, 0, 2) if self.layout == 0 else x
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        Bn, T = xb.shape[:2]
        lengths = None
        if seq is not None:
            lengths = np.asarray(seq)
            if lengths.dtype.kind not in "iu" or lengths.shape != (Bn,):
                raise ShapeError(
                    f"{where}: sequence_lens must be ({Bn},) integers, got "
                    f"{lengths.dtype} {lengths.shape}"
                )
            if (lengths < 0).any() or (lengths > T).any():
                raise ShapeError(
                    f"{where}: sequence_lens {lengths.tolist()} outside [0, {T}]"
                )
            lengths = lengths.astype(np.int32)
        states = []
        for name, s in (("initial_h", h0), ("initial_c", c0)):
            if s is None:
                states.append(None)
                continue
            s = np.asarray(s, dtype=np.float32)
            want = (
                (self.D, Bn, self.hidden)
                if self.layout == 0
                else (
                    Bn,
                    self.D,
                    self.hidden,
                )
            )
            if s.shape != want:
                raise ShapeError(
                    f"{where}: {name} has shape {s.shape}, expected {want}"
                )
            states.append(s if self.layout == 0 else s.transpose(1, 0, 2))
        ys, hs, cs = [], [], []
        zeros = np.zeros((Bn, self.hidden), np.float32)
        for d, direction in enumerate(dirs):
            h_init = None if states[0] is None else states[0][d]
            c_init = None if states[1] is None else states[1][d]
            if (h_init is None) != (c_init is None):
                h_init = zeros if h_init is None else h_init
                c_init = zeros if c_init is None else c_init
            y, h, c = direction.run(xb, lengths, h_init, c_init)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        if self.layout == 0:
            Y = np.stack([y.transpose(1, 0, 2) for y in ys], axis=1)
            Yh, Yc = np.stack(hs), np.stack(cs)
        else:
            Y = np.stack(ys, axis=2)
            Yh, Yc = np.stack(hs, axis=1), np.stack(cs, axis=1)
        return [Y, Yh, Yc]


class OnnxModel:
    """An ONNX graph of LSTM nodes and glue, run like ONNX Runtime."""

    def __init__(self, graph: Graph, *, numpy_fallback: bool = True) -> None:
        self.graph = graph
        self._numpy_fallback = bool(numpy_fallback)
        self.input_names = list(graph.inputs)
        self.output_names = list(graph.outputs)
        self.opset = graph.opset
        known = set(graph.initializers) | set(graph.inputs) | {""}
        consts: dict[str, Any] = dict(graph.initializers)
        self._lstm: dict[int, _LSTMNode] = {}
        self._pending: list[int] = []
        budget = glue_budget(graph.source, graph.initializers.values())
        for k, node in enumerate(graph.nodes):
            if node.op not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx"):
                raise UnsupportedLayerError(
                    f"{graph.source}: {node.describe()} is not supported; fastlstm "
                    "runs LSTM nodes and the glue around them: "
                    + ", ".join(sorted(SUPPORTED_OPS))
                )
            for name in node.inputs:
                if name not in known:
                    raise ModelFormatError(
                        f"{graph.source}: {node.describe()} reads {name!r}, which no "
                        "earlier node, initializer or graph input provides"
                    )
            known.update(node.outputs)
            if node.op == "LSTM":
                runner = _LSTMNode(node, numpy_fallback)
                self._lstm[k] = runner
                w = [
                    consts.get(n) if n else None for n in (node.inputs + [""] * 8)[1:8]
                ]
                if w[0] is not None and w[1] is not None:
                    runner.prepare(w[0], w[1], w[2], w[6])
                self._pending.append(k)
                continue
            if all(n in consts or n == "" for n in node.inputs) and node.op != "Shape":
                ins = [consts.get(n) if n else None for n in node.inputs]
                for name, value in zip(node.outputs, run_glue(node, ins, budget)):
                    if name:
                        consts[name] = value
            else:
                self._pending.append(k)
        for name in self.output_names:
            if name not in known:
                raise ModelFormatError(
                    f"{graph.source}: graph output {name!r} is never computed"
                )
        self._consts = consts

    def __reduce__(self) -> tuple:
        """Pickles the parsed graph (NumPy initializers), never C pointers;
        unpickling rebuilds the model from it."""
        return (_rebuild_onnx, (self.graph, self._numpy_fallback))

    @property
    def lstm_nodes(self) -> list[dict]:
        """Per LSTM node: name, direction, and whether each direction runs on
        the engine or (and why) on the NumPy fallback."""
        out = []
        for r in self._lstm.values():
            out.append(
                {
                    "name": r.node.name,
                    "direction": r.direction,
                    "engine": [d.layer is not None for d in r.dirs or []],
                    "fallback_reason": [d.fallback_reason for d in r.dirs or []],
                }
            )
        return out

    def __repr__(self) -> str:
        return (
            f"OnnxModel(inputs={self.input_names}, outputs={self.output_names}, "
            f"lstm_nodes={len(self._lstm)}, opset={self.opset})"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """Graph outputs for inputs given by position (graph order) or name;
        optional inputs (sequence_lens, initial_h, ...) may be left out."""
        if len(args) > len(self.input_names):
            raise ConfigError(
                f"{len(args)} positional inputs, the graph has "
                f"{len(self.input_names)}: {self.input_names}"
            )
        feeds = dict(zip(self.input_names, args))
        for name, value in kwargs.items():
            if name in feeds:
                raise ConfigError(f"input {name!r} given twice")
            feeds[name] = value
        return self.run(None, feeds)

    def run(
        self, output_names: Sequence[str] | None, feeds: dict[str, Any]
    ) -> list[np.ndarray]:
        """ONNX Runtime's ``InferenceSession.run(output_names, feeds)``."""
        unknown = sorted(set(feeds) - set(self.input_names))
        if unknown:
            raise ConfigError(
                f"unknown input(s) {unknown}; the graph's inputs are {self.input_names}"
            )
        env = dict(self._consts)
        for name, value in feeds.items():
            if value is not None:
                if hasattr(value, "detach") and hasattr(value, "numpy"):
                    value = value.detach().cpu().numpy()
                env[name] = np.asarray(value)
        budget = glue_budget(f"{self.graph.source}: run", env.values())
        for k in self._pending:
            node = self.graph.nodes[k]
            ins = []
            for name in node.inputs:
                if name and name not in env:
                    if name in self.input_names and k in self._lstm:
                        ins.append(None)  # an optional LSTM input left out
                        continue
                    raise ConfigError(
                        f"input {name!r} is required by {node.describe()} but was "
                        "not given"
                    )
                ins.append(env[name] if name else None)
            if k in self._lstm:
                outs = self._lstm[k].run(ins)
            else:
                outs = run_glue(node, ins, budget)
            for name, value in zip(node.outputs, outs):
                if name:
                    env[name] = value
        names = self.output_names if output_names is None else list(output_names)
        missing = [n for n in names if n not in env]
        if missing:
            raise ConfigError(f"output(s) {missing} not computed; outputs: {names}")
        return [env[n] for n in names]


def _rebuild_onnx(graph: Graph, numpy_fallback: bool) -> OnnxModel:
    """Unpickles an OnnxModel (see OnnxModel.__reduce__)."""
    return OnnxModel(graph, numpy_fallback=numpy_fallback)


def from_onnx(model: Any, *, numpy_fallback: bool = True) -> OnnxModel:
    """An OnnxModel from an .onnx path, its bytes, or an onnx.ModelProto."""
    graph = read_onnx(model)
    try:
        return OnnxModel(graph, numpy_fallback=numpy_fallback)
    except FastLSTMError:
        raise
    except CORRUPT_FIELD_ERRORS as exc:
        raise corrupt_model_error(graph.source or "<onnx model>", exc) from exc


def load_onnx(path: str | os.PathLike) -> OnnxModel:
    return from_onnx(os.fspath(path))
