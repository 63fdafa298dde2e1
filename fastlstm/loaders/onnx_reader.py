"""ONNX graphs -> the canonical model graph.

Graph inputs become InputSpecs, initializers ConstantSpecs, glue nodes
OpSpecs (ONNX op names and attributes), LSTM, GRU and RNN nodes
RecurrentOpSpecs whose cells are canonical:

* LSTM: gate blocks i, o, f, c reordered to i, f, g, o, the two bias halves
  summed, peepholes (i, o, f) reordered to (i, f, o);
* GRU: blocks z, r, h are already the canonical z, r, n; the bias halves
  (Wb, Rb) stay apart; ``linear_before_reset`` is GRUSpec's reset_after;
* RNN: W, R and the bias halves as SimpleRNNSpec takes them.

A direction the C core cannot compute (gate ``clip``, ``input_forget``,
different candidate and output activations, activations with parameters
the core lacks) becomes a ReferenceLSTMSpec or ReferenceCellSpec saying
why; ``numpy_fallback=False`` refuses it instead. Recurrent weights must be
constants (initializers or Constant nodes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastlstm.activations import (
    ALPHA_DEFAULTS,
    BETA_DEFAULTS,
    GATE_ACTIVATIONS,
    GateActivation,
)
from fastlstm.errors import FastLSTMError, ModelFormatError, UnsupportedLayerError
from fastlstm.loaders.onnx_graph import (
    CORRUPT_FIELD_ERRORS,
    RECURRENT_OPS,
    SUPPORTED_OPS,
    Graph,
    Node,
    corrupt_model_error,
    read_onnx,
)
from fastlstm.model_spec import (
    ConstantSpec,
    InputSpec,
    ModelSpec,
    NodeSpec,
    OpSpec,
    RecurrentOpSpec,
    ReferenceCellSpec,
    ReferenceLSTMSpec,
    TensorRef,
)
from fastlstm.spec import GRUSpec, LSTMSpec, SimpleRNNSpec

__all__ = ["read_onnx_model", "graph_spec"]

ONNX_TO_CANONICAL = (0, 2, 3, 1)  # ONNX blocks i, o, f, c -> i, f, g, o
COMMON_ATTRIBUTES = {
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "layout",
}
ATTRIBUTES = {
    "LSTM": COMMON_ATTRIBUTES | {"input_forget"},
    "GRU": COMMON_ATTRIBUTES | {"linear_before_reset"},
    "RNN": COMMON_ATTRIBUTES,
}
DEFAULT_ACTIVATIONS = {
    "LSTM": ("Sigmoid", "Tanh", "Tanh"),
    "GRU": ("Sigmoid", "Tanh"),
    "RNN": ("Tanh",),
}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# X, sequence_lens, initial_h (and initial_c)
RUN_INPUTS = {"LSTM": (0, 4, 5, 6), "GRU": (0, 4, 5), "RNN": (0, 4, 5)}


def read_onnx_model(source: Any, *, numpy_fallback: bool = True) -> ModelSpec:
    """The canonical graph of an .onnx path, its bytes, or a ModelProto."""
    graph = read_onnx(source)
    try:
        return graph_spec(graph, numpy_fallback=numpy_fallback)
    except FastLSTMError:
        raise
    except CORRUPT_FIELD_ERRORS as exc:
        raise corrupt_model_error(graph.source or "<onnx model>", exc) from exc


class _Builder:
    """Layers, nodes and tensor names of the graph being built."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.layers: list = []
        self.nodes: list[NodeSpec] = []
        self.refs: dict[str, TensorRef] = {}
        self.constants: dict[str, np.ndarray] = {}
        self._names: set[str] = set()

    def add(self, layer: Any, inputs: tuple, outputs: list[str]) -> None:
        self.layers.append(layer)
        self.nodes.append(NodeSpec(layer.name, 0, inputs))
        for i, name in enumerate(outputs):
            if name:
                self.refs[name] = TensorRef(layer.name, 0, i)

    def unique(self, base: str) -> str:
        name, k = base or "node", 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def ref(self, name: str, node: Node) -> TensorRef | None:
        if not name:
            return None
        if name not in self.refs:
            raise ModelFormatError(
                f"{self.source}: {node.describe()} reads {name!r}, which no "
                "earlier node, initializer or graph input provides"
            )
        return self.refs[name]


def graph_spec(graph: Graph, *, numpy_fallback: bool = True) -> ModelSpec:
    """The canonical graph of a parsed ONNX Graph."""
    b = _Builder(graph.source)
    for name in graph.inputs:
        b.add(InputSpec(b.unique(name), "Input"), (), [name])
    for name, value in graph.initializers.items():
        b.add(ConstantSpec(b.unique(name), "Initializer", value), (), [name])
        b.constants[name] = value
    for node in graph.nodes:
        if node.op not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx"):
            raise UnsupportedLayerError(
                f"{graph.source}: {node.describe()} is not supported; fastlstm "
                "runs LSTM, GRU and RNN nodes and the glue around them: "
                + ", ".join(sorted(SUPPORTED_OPS))
            )
        if node.op in RECURRENT_OPS:
            for name in node.inputs:  # every input exists, weights included
                b.ref(name, node)
            layer = recurrent_spec(
                node, b.unique(node.name), b.constants, numpy_fallback
            )
            ins = tuple(
                b.ref(node.inputs[k], node) if k < len(node.inputs) else None
                for k in RUN_INPUTS[node.op]
            )
        else:
            layer = OpSpec(
                b.unique(node.name),
                node.op,
                node.op,
                dict(node.attrs),
                opset=graph.opset or 0,
                outputs=len(node.outputs),
            )
            ins = tuple(b.ref(name, node) for name in node.inputs)
            _track_constant(node, b.constants)
        b.add(layer, ins, node.outputs)
    missing = [o for o in graph.outputs if o not in b.refs]
    if missing:
        raise ModelFormatError(
            f"{graph.source}: graph output {missing[0]!r} is never computed"
        )
    return ModelSpec(
        name="onnx",
        layers=tuple(b.layers),
        nodes=tuple(b.nodes),
        inputs=tuple(b.refs[n] for n in graph.inputs),
        outputs=tuple(b.refs[n] for n in graph.outputs),
        input_shapes=tuple(graph.input_shapes or (None,) * len(graph.inputs)),
        source=graph.source,
        source_format="ONNX",
        implicit_masks=False,
        conventions={
            "calls": "onnx",
            "input_names": list(graph.inputs),
            "output_names": list(graph.outputs),
            "opset": graph.opset,
            "producer": graph.producer,
            "declared": dict(graph.declared),
        },
    ).validate()


def _track_constant(node: Node, constants: dict) -> None:
    """Constant values LSTM weights may come from: Constant nodes and
    Identity of a constant."""
    if node.op == "Constant" and "value" in node.attrs and node.outputs:
        constants[node.outputs[0]] = np.asarray(node.attrs["value"])
    elif node.op == "Identity" and node.inputs and node.inputs[0] in constants:
        constants[node.outputs[0]] = constants[node.inputs[0]]


# --- LSTM nodes ---------------------------------------------------------------------


def _activations(node: Node, D: int) -> list[tuple[GateActivation, ...]]:
    """Each direction's activations (3 for an LSTM, 2 for a GRU, 1 for an
    RNN), with their alpha and beta."""
    defaults = DEFAULT_ACTIVATIONS[node.op]
    n = len(defaults)
    names = node.attrs.get("activations")
    if names is None:
        names = list(defaults) * D
    if len(names) != n * D:
        raise ModelFormatError(
            f"{node.describe()}: {len(names)} activations for {D} direction(s); "
            f"expected {n * D}"
        )
    alphas = list(node.attrs.get("activation_alpha", []))
    betas = list(node.attrs.get("activation_beta", []))
    acts = []
    for name in names:
        key = str(name).lower()
        if key not in GATE_ACTIVATIONS:
            raise UnsupportedLayerError(
                f"{node.describe()}: activation {name!r} is not an ONNX "
                f"{node.op} activation; supported: {sorted(GATE_ACTIVATIONS)}"
            )
        a = alphas.pop(0) if key in ALPHA_DEFAULTS and alphas else None
        b = betas.pop(0) if key in BETA_DEFAULTS and betas else None
        acts.append(
            GateActivation(
                key,
                ALPHA_DEFAULTS.get(key, 0.0) if a is None else a,
                BETA_DEFAULTS.get(key, 0.0) if b is None else b,
            )
        )
    return [tuple(acts[n * d : n * d + n]) for d in range(D)]


def _blocks(a: np.ndarray) -> np.ndarray:
    parts = np.split(a, 4, axis=-1)
    return np.concatenate([parts[k] for k in ONNX_TO_CANONICAL], axis=-1)


def _weights(node: Node, constants: dict, D: int) -> dict[str, np.ndarray]:
    """W, R and (if given) B and, for an LSTM, P as checked float arrays."""
    G = GATES[node.op]
    where = node.describe()
    names = (node.inputs + [""] * 8)[:8]
    arrays = {}
    for key, k in (("W", 1), ("R", 2), ("B", 3), ("P", 7)):
        name = names[k] if key != "P" or node.op == "LSTM" else ""
        if not name:
            if key in ("W", "R"):
                raise ModelFormatError(f"{where}: input {key} is missing")
            continue
        if name not in constants:
            raise UnsupportedLayerError(
                f"{where}: input {key} ({name!r}) is computed in the graph; "
                f"fastlstm needs {node.op} weights as initializers or Constant nodes"
            )
        arr = np.asarray(constants[name])
        if arr.dtype.kind != "f":
            raise ModelFormatError(f"{where}: {key} has dtype {arr.dtype}")
        arrays[key] = arr
    R = arrays["R"]
    if R.ndim != 3 or R.shape[0] != D or R.shape[1] != G * R.shape[2]:
        what = f"{G}*hidden" if G > 1 else "hidden"
        raise ModelFormatError(
            f"{where}: R has shape {R.shape}, expected ({D}, {what}, hidden)"
        )
    H = R.shape[2]
    hs = node.attrs.get("hidden_size")
    if hs is not None and hs != H:
        raise ModelFormatError(f"{where}: hidden_size={hs} but R says {H}")
    W = arrays["W"]
    if W.ndim != 3 or W.shape[:2] != (D, G * H) or W.shape[2] < 1:
        raise ModelFormatError(
            f"{where}: W has shape {W.shape}, expected ({D}, {G * H}, input)"
        )
    for key, shape in (("B", (D, 2 * G * H)), ("P", (D, 3 * H))):
        if key in arrays and arrays[key].shape != shape:
            raise ModelFormatError(
                f"{where}: {key} has shape {arrays[key].shape}, expected {shape}"
            )
    return arrays


def recurrent_spec(
    node: Node, name: str, constants: dict, numpy_fallback: bool
) -> RecurrentOpSpec:
    """The RecurrentOpSpec of an ONNX LSTM, GRU or RNN node."""
    where = node.describe()
    unknown = sorted(set(node.attrs) - ATTRIBUTES[node.op])
    if unknown:
        raise UnsupportedLayerError(
            f"{where}: unsupported {node.op} attribute(s) {unknown}"
        )
    direction = node.attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ModelFormatError(
            f"{where}: direction {direction!r} is not forward, reverse or bidirectional"
        )
    D = 2 if direction == "bidirectional" else 1
    layout = int(node.attrs.get("layout", 0))
    if layout not in (0, 1):
        raise ModelFormatError(f"{where}: layout {layout}")
    clip = node.attrs.get("clip")
    if clip is not None and not (np.isfinite(clip) and clip > 0):
        raise ModelFormatError(f"{where}: clip must be > 0, got {clip}")
    acts = _activations(node, D)
    arrays = _weights(node, constants, D)
    cells = []
    for d in range(D):
        one = {k: v[d] for k, v in arrays.items()}
        reverse = direction == "reverse" or d == 1
        if node.op == "LSTM":
            input_forget = bool(node.attrs.get("input_forget", 0))
            cell = _cell(
                node, one, acts[d], clip, input_forget, reverse, numpy_fallback
            )
        else:
            cell = _gru_rnn_cell(node, one, acts[d], clip, reverse, numpy_fallback)
        cells.append(cell)
    return RecurrentOpSpec(
        name=name,
        class_name=node.op,
        directions=tuple(cells),
        time_major=layout == 0,
    )


def _fallback_reason(
    node: Node, why: list[str], acts: tuple, numpy_fallback: bool
) -> str:
    """Why a direction needs the float64 reference ('' if it does not):
    ``why`` plus the activations the C core lacks. Raises instead when
    the fallback is off."""
    why = why + [
        f"activation {a.name}(alpha={a.alpha:g}, beta={a.beta:g})"
        for a in acts
        if a.core_name is None
    ]
    reason = "; ".join(why)
    if reason and not numpy_fallback:
        raise UnsupportedLayerError(
            f"{node.describe()}: the engine cannot express {reason} "
            "(numpy_fallback=False)"
        )
    return reason


def _gru_rnn_cell(
    node: Node,
    arrays: dict,
    acts: tuple,
    clip: float | None,
    reverse: bool,
    numpy_fallback: bool,
) -> GRUSpec | SimpleRNNSpec | ReferenceCellSpec:
    """One direction of a GRU or RNN node: W (GH, I) and R (GH, H) as the
    canonical (I, GH) and (H, GH), the bias halves apart."""
    kernel, rec = arrays["W"].T, arrays["R"].T
    GH = kernel.shape[1]
    B = arrays.get("B")
    bias, rbias = (None, None) if B is None else (B[:GH], B[GH:])
    reset_after = bool(node.attrs.get("linear_before_reset", 0))
    why = [f"clip={clip:g}"] if clip is not None else []
    reason = _fallback_reason(node, why, acts, numpy_fallback)
    if reason:
        return ReferenceCellSpec(
            node.op,
            *(f64(a) for a in (kernel, rec, bias, rbias)),
            acts,
            reset_after,
            clip,
            reverse,
            reason,
        )
    kw = {"go_backwards": reverse, "return_sequences": True}
    if node.op == "RNN":
        return SimpleRNNSpec.create(
            f32(kernel),
            f32(rec),
            f32(bias),
            f32(rbias),
            activation=acts[0].core_name,
            **kw,
        )
    return GRUSpec.create(
        f32(kernel),
        f32(rec),
        f32(bias),
        f32(rbias),
        activation=acts[1].core_name,
        recurrent_activation=acts[0].core_name,
        reset_after=reset_after,
        **kw,
    )


def _cell(
    node: Node,
    arrays: dict,
    acts: tuple,
    clip: float | None,
    input_forget: bool,
    reverse: bool,
    numpy_fallback: bool,
) -> LSTMSpec | ReferenceLSTMSpec:
    W, R = arrays["W"].astype(np.float64), arrays["R"].astype(np.float64)
    H = R.shape[-1]
    B, P = arrays.get("B"), arrays.get("P")
    bias = None if B is None else B[: 4 * H].astype(np.float64) + B[4 * H :]
    peep = None
    if P is not None:  # ONNX rows i, o, f -> canonical i, f, o
        peep = np.stack([P[0:H], P[2 * H : 3 * H], P[H : 2 * H]]).astype(np.float64)
    kernel, rec = _blocks(W.T), _blocks(R.T)
    bias = None if bias is None else _blocks(bias)
    f, g, h = acts
    why = []
    if clip is not None:
        why.append(f"clip={clip:g}")
    if input_forget:
        why.append("input_forget=1")
    if g != h:
        why.append(f"activations g={g.name} and h={h.name} differ")
    reason = _fallback_reason(node, why, (f, g), numpy_fallback)
    if reason:
        return ReferenceLSTMSpec(
            kernel, rec, bias, peep, f, g, h, clip, input_forget, reverse, reason
        )
    return LSTMSpec.create(
        f32(kernel),
        f32(rec),
        f32(bias),
        peepholes=f32(peep),
        activation=g.core_name,
        recurrent_activation=f.core_name,
        go_backwards=reverse,
        return_sequences=True,
    )


def f32(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else a.astype(np.float32)


def f64(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else a.astype(np.float64)
