"""ONNX graphs -> the canonical model graph.

Graph inputs become InputSpecs, initializers ConstantSpecs, glue nodes
OpSpecs (ONNX op names and attributes), LSTM nodes RecurrentOpSpecs whose
cells are canonical: ONNX gate blocks i, o, f, c reordered to i, f, g, o,
the two bias halves summed, peepholes (i, o, f) reordered to (i, f, o).
A direction the C core cannot compute (gate ``clip``, ``input_forget``,
different candidate and output activations, activations with other
parameters) becomes a ReferenceLSTMSpec saying why; ``numpy_fallback=False``
refuses it instead. LSTM weights must be constants (initializers or
Constant nodes).
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
    ReferenceLSTMSpec,
    TensorRef,
)
from fastlstm.spec import LSTMSpec

__all__ = ["read_onnx_model", "graph_spec"]

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
DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
LSTM_RUN_INPUTS = (0, 4, 5, 6)  # X, sequence_lens, initial_h, initial_c


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
                "runs LSTM nodes and the glue around them: "
                + ", ".join(sorted(SUPPORTED_OPS))
            )
        if node.op == "LSTM":
            for name in node.inputs:  # every input exists, weights included
                b.ref(name, node)
            layer = lstm_spec(node, b.unique(node.name), b.constants, numpy_fallback)
            ins = tuple(
                b.ref(node.inputs[k], node) if k < len(node.inputs) else None
                for k in LSTM_RUN_INPUTS
            )
        else:
            layer = OpSpec(b.unique(node.name), node.op, node.op, dict(node.attrs))
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
        input_shapes=(None,) * len(graph.inputs),
        source=graph.source,
        source_format="ONNX",
        implicit_masks=False,
        conventions={
            "calls": "onnx",
            "input_names": list(graph.inputs),
            "output_names": list(graph.outputs),
            "opset": graph.opset,
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
        if key not in GATE_ACTIVATIONS:
            raise UnsupportedLayerError(
                f"{node.describe()}: activation {name!r} is not an ONNX LSTM "
                f"activation; supported: {sorted(GATE_ACTIVATIONS)}"
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
    return [tuple(acts[3 * d : 3 * d + 3]) for d in range(D)]


def _blocks(a: np.ndarray) -> np.ndarray:
    parts = np.split(a, 4, axis=-1)
    return np.concatenate([parts[k] for k in ONNX_TO_CANONICAL], axis=-1)


def _weights(node: Node, constants: dict, D: int) -> dict[str, np.ndarray]:
    """W, R and (if given) B and P as checked float arrays."""
    where = node.describe()
    names = (node.inputs + [""] * 8)[:8]
    arrays = {}
    for key, k in (("W", 1), ("R", 2), ("B", 3), ("P", 7)):
        name = names[k]
        if not name:
            if key in ("W", "R"):
                raise ModelFormatError(f"{where}: input {key} is missing")
            continue
        if name not in constants:
            raise UnsupportedLayerError(
                f"{where}: input {key} ({name!r}) is computed in the graph; "
                "fastlstm needs LSTM weights as initializers or Constant nodes"
            )
        arr = np.asarray(constants[name])
        if arr.dtype.kind != "f":
            raise ModelFormatError(f"{where}: {key} has dtype {arr.dtype}")
        arrays[key] = arr
    R = arrays["R"]
    if R.ndim != 3 or R.shape[0] != D or R.shape[1] != 4 * R.shape[2]:
        raise ModelFormatError(
            f"{where}: R has shape {R.shape}, expected ({D}, 4*hidden, hidden)"
        )
    H = R.shape[2]
    hs = node.attrs.get("hidden_size")
    if hs is not None and hs != H:
        raise ModelFormatError(f"{where}: hidden_size={hs} but R says {H}")
    W = arrays["W"]
    if W.ndim != 3 or W.shape[:2] != (D, 4 * H) or W.shape[2] < 1:
        raise ModelFormatError(
            f"{where}: W has shape {W.shape}, expected ({D}, {4 * H}, input)"
        )
    for key, shape in (("B", (D, 8 * H)), ("P", (D, 3 * H))):
        if key in arrays and arrays[key].shape != shape:
            raise ModelFormatError(
                f"{where}: {key} has shape {arrays[key].shape}, expected {shape}"
            )
    return arrays


def lstm_spec(
    node: Node, name: str, constants: dict, numpy_fallback: bool
) -> RecurrentOpSpec:
    """The RecurrentOpSpec of an ONNX LSTM node."""
    where = node.describe()
    unknown = sorted(set(node.attrs) - LSTM_ATTRIBUTES)
    if unknown:
        raise UnsupportedLayerError(f"{where}: unsupported LSTM attribute(s) {unknown}")
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
    input_forget = bool(node.attrs.get("input_forget", 0))
    acts = _activations(node, D)
    arrays = _weights(node, constants, D)
    cells = []
    for d in range(D):
        one = {k: v[d] for k, v in arrays.items()}
        reverse = direction == "reverse" or d == 1
        cells.append(
            _cell(node, one, acts[d], clip, input_forget, reverse, numpy_fallback)
        )
    return RecurrentOpSpec(
        name=name,
        class_name="LSTM",
        directions=tuple(cells),
        time_major=layout == 0,
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
    for act in (f, g):
        if act.core_name is None:
            why.append(f"activation {act.name}(alpha={act.alpha:g}, beta={act.beta:g})")
    if why:
        reason = "; ".join(why)
        if not numpy_fallback:
            raise UnsupportedLayerError(
                f"{node.describe()}: the engine cannot express {reason} "
                "(numpy_fallback=False)"
            )
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
