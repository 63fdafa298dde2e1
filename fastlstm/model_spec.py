"""The canonical model graph every reader returns and the engine runs.

A ``ModelSpec`` is a graph of layer specs and the calls ("nodes") that
connect them. Each layer spec holds what the runtime needs and nothing
framework-specific: weights in the canonical layout (``LSTMSpec`` for
recurrent cells; ``kernel`` (in, out) for Dense), activation names from
``fastlstm.activations``, and every framework rule that changes the numbers
as an explicit field (``zero_output_for_mask``, ``Masking.keep_nan``,
``ModelSpec.implicit_masks``). ``class_name`` is only what the file called
the layer, for messages and summaries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from fastlstm.activations import NUMPY_ACTIVATIONS, GateActivation
from fastlstm.errors import ModelFormatError
from fastlstm.spec import CELL_SPECS, MAX_DIM, LSTMSpec

__all__ = [
    "LayerSpec",
    "InputSpec",
    "IdentitySpec",
    "MaskingSpec",
    "DenseSpec",
    "EmbeddingSpec",
    "ActivationSpec",
    "ReshapeSpec",
    "RepeatSpec",
    "MergeSpec",
    "MaskOpSpec",
    "ConstantSpec",
    "OpSpec",
    "ReferenceLSTMSpec",
    "ReferenceCellSpec",
    "RecurrentOpSpec",
    "RecurrentSpec",
    "BidirectionalSpec",
    "TensorRef",
    "NodeSpec",
    "ModelSpec",
    "recurrent_chain",
    "sequential",
]

MERGE_OPS = ("concat", "add", "subtract", "multiply", "average", "maximum", "minimum")
MASK_OPS = ("not_equal", "equal", "any", "all", "and", "or", "not", "identity")
MERGE_MODES = ("concat", "sum", "mul", "ave", None)
# Array ops an OpSpec may name, with ONNX's definitions (onnx/docs/
# Operators.md): the shape and glue ops exporters write around recurrent
# nodes. engine/ops.py implements exactly these.
ARRAY_OPS = (
    # shape and glue ops (engine/ops.py)
    "Cast",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Expand",
    "Gather",
    "Identity",
    "Reshape",
    "Shape",
    "Slice",
    "Squeeze",
    "Transpose",
    "Unsqueeze",
    # compute ops (engine/ops_compute.py)
    "Abs",
    "Add",
    "And",
    "BatchNormalization",
    "Clip",
    "Conv",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Flatten",
    "Gemm",
    "Greater",
    "GreaterOrEqual",
    "LayerNormalization",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "MatMul",
    "Max",
    "Mean",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pow",
    "Range",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Split",
    "Sqrt",
    "Sub",
    "Sum",
    "Tanh",
    "Tile",
    "Where",
    "Xor",
)


def _finite(name: str, arrays: dict[str, np.ndarray | None]) -> list[str]:
    return [
        f"{name}: {what} holds NaN or inf"
        for what, a in arrays.items()
        if a is not None and not np.isfinite(a).all()
    ]


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """A layer of the graph: its unique name and what the file called it."""

    name: str
    class_name: str

    weighted: ClassVar[bool] = False

    def problems(self) -> list[str]:
        """What is inconsistent in this layer (empty when it is sound)."""
        return []

    def param_count(self) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class InputSpec(LayerSpec):
    """A model input (its shape is in ``ModelSpec.input_shapes``)."""


@dataclasses.dataclass(frozen=True)
class IdentitySpec(LayerSpec):
    """Dropout and noise layers: the identity at inference; masks pass."""


@dataclasses.dataclass(frozen=True)
class MaskingSpec(LayerSpec):
    """Masks steps whose features all equal ``mask_value`` and zeroes them.
    ``keep_nan``: zero by multiplying by the mask (NaN stays NaN, tf.keras)
    rather than by selecting (Keras 3)."""

    mask_value: float = 0.0
    keep_nan: bool = False


@dataclasses.dataclass(frozen=True)
class DenseSpec(LayerSpec):
    """``activation(x @ kernel + bias)`` over the last axis."""

    kernel: np.ndarray = None  # type: ignore[assignment]
    bias: np.ndarray | None = None
    activation: str = "linear"

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        k, b = self.kernel, self.bias
        out = []
        if k is None or k.ndim != 2 or min(k.shape) < 1:
            return [f"{self.name}: kernel must be (in, out), got {np.shape(k)}"]
        if b is not None and b.shape != (k.shape[1],):
            out.append(f"{self.name}: bias {b.shape} does not fit kernel {k.shape}")
        if self.activation not in NUMPY_ACTIVATIONS:
            out.append(f"{self.name}: unknown activation {self.activation!r}")
        return out + _finite(self.name, {"kernel": k, "bias": b})

    def param_count(self) -> int:
        return int(self.kernel.size + (0 if self.bias is None else self.bias.size))


@dataclasses.dataclass(frozen=True)
class EmbeddingSpec(LayerSpec):
    """Rows of ``table`` by token id; ``mask_zero`` masks id 0."""

    table: np.ndarray = None  # type: ignore[assignment]
    mask_zero: bool = False

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        if self.table is None or self.table.ndim != 2 or min(self.table.shape) < 1:
            return [f"{self.name}: table must be (input_dim, output_dim)"]
        return _finite(self.name, {"table": self.table})

    def param_count(self) -> int:
        return int(self.table.size)


@dataclasses.dataclass(frozen=True)
class ActivationSpec(LayerSpec):
    """An activation on its own; ``axis`` for softmax."""

    activation: str = "linear"
    axis: int = -1

    def problems(self) -> list[str]:
        if self.activation not in NUMPY_ACTIVATIONS:
            return [f"{self.name}: unknown activation {self.activation!r}"]
        return []


@dataclasses.dataclass(frozen=True)
class ReshapeSpec(LayerSpec):
    """Reshapes each batch row to ``target_shape`` (None: flattens)."""

    target_shape: tuple | None = None


@dataclasses.dataclass(frozen=True)
class RepeatSpec(LayerSpec):
    """Repeats a (batch, features) input ``n`` times along a new time axis."""

    n: int = 1

    def problems(self) -> list[str]:
        if not 0 < self.n <= MAX_DIM:
            return [f"{self.name}: n={self.n} is not a count from 1 to {MAX_DIM}"]
        return []


@dataclasses.dataclass(frozen=True)
class MergeSpec(LayerSpec):
    """Combines its inputs: one of MERGE_OPS (``axis`` for concat); the
    output mask is the AND of the inputs' masks."""

    op: str = "concat"
    axis: int = -1

    def problems(self) -> list[str]:
        return [] if self.op in MERGE_OPS else [f"{self.name}: merge op {self.op!r}"]


@dataclasses.dataclass(frozen=True)
class MaskOpSpec(LayerSpec):
    """A boolean op on masks (Keras 3 records mask computations this way);
    the second operand is an input or the node's ``constant``."""

    op: str = "not_equal"
    axis: int | None = None
    keepdims: bool = False

    def problems(self) -> list[str]:
        return [] if self.op in MASK_OPS else [f"{self.name}: mask op {self.op!r}"]


@dataclasses.dataclass(frozen=True)
class RecurrentSpec(LayerSpec):
    """Cells (LSTMSpec, GRUSpec or SimpleRNNSpec) run one after another in
    one direction of time (one cell for a plain layer). Every cell's
    ``go_backwards`` equals the layer's. ``return_state`` appends each
    cell's states to the outputs ([h, c] for an LSTM, [h] otherwise);
    ``stateful`` keeps the state between calls; ``time_major`` inputs are
    (time, batch, features)."""

    cells: tuple = ()
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    time_major: bool = False

    weighted: ClassVar[bool] = True

    @property
    def input_size(self) -> int:
        return self.cells[0].input_size

    @property
    def output_size(self) -> int:
        return self.cells[-1].output_size

    def problems(self) -> list[str]:
        if not self.cells or not all(isinstance(c, CELL_SPECS) for c in self.cells):
            return [f"{self.name}: needs one or more LSTM, GRU or SimpleRNN cells"]
        out = []
        for k, (a, b) in enumerate(zip(self.cells, self.cells[1:])):
            if b.input_size != a.output_size:
                out.append(
                    f"{self.name}: cell {k + 1} takes {b.input_size} features, "
                    f"cell {k} outputs {a.output_size}"
                )
        if any(c.go_backwards != self.go_backwards for c in self.cells):
            out.append(f"{self.name}: a cell runs the other way in time")
        return out

    @property
    def state_count(self) -> int:
        """Arrays in the layer's states: 2 per LSTM cell, 1 per other cell."""
        return sum(2 if isinstance(c, LSTMSpec) else 1 for c in self.cells)

    def param_count(self) -> int:
        return sum(c.param_count() for c in self.cells)


@dataclasses.dataclass(frozen=True)
class BidirectionalSpec(LayerSpec):
    """A forward and a backward RecurrentSpec over one input; the backward
    outputs are flipped to time order, then merged (MERGE_MODES; None keeps
    both). Outputs: the merged output(s), then the forward states, then the
    backward ones when the halves return states."""

    forward: RecurrentSpec = None  # type: ignore[assignment]
    backward: RecurrentSpec = None  # type: ignore[assignment]
    merge_mode: str | None = "concat"

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        out = self.forward.problems() + self.backward.problems()
        if out:
            return out
        f, b = self.forward, self.backward
        if f.go_backwards == b.go_backwards:
            out.append(f"{self.name}: both halves run in the same direction")
        if f.input_size != b.input_size:
            out.append(f"{self.name}: the halves take different inputs")
        if self.merge_mode not in MERGE_MODES:
            out.append(f"{self.name}: merge_mode {self.merge_mode!r}")
        elif self.merge_mode in ("sum", "mul", "ave") and (
            f.output_size != b.output_size
        ):
            out.append(f"{self.name}: merge_mode {self.merge_mode!r} needs equal sizes")
        return out

    def param_count(self) -> int:
        return self.forward.param_count() + self.backward.param_count()


@dataclasses.dataclass(frozen=True)
class ConstantSpec(LayerSpec):
    """A constant array (an ONNX initializer): no inputs, one output."""

    value: np.ndarray = None  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True)
class OpSpec(LayerSpec):
    """An array op of ARRAY_OPS with its attributes (ONNX semantics);
    inputs and outputs by position, a missing optional input as None."""

    op: str = "Identity"
    attrs: Mapping = dataclasses.field(default_factory=dict)
    opset: int = 0  # the graph's ONNX opset (0: unknown); some ops changed
    outputs: int = 1  # how many outputs the node names (Split without sizes)

    def describe(self) -> str:
        return f"node {self.name!r} ({self.op})"

    def problems(self) -> list[str]:
        return [] if self.op in ARRAY_OPS else [f"{self.name}: unknown op {self.op!r}"]


class _ReferenceSizes:
    """Sizes of a reference cell from its canonical kernels."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray

    @property
    def input_size(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def units(self) -> int:
        return int(self.recurrent_kernel.shape[0])

    output_size = units


@dataclasses.dataclass(frozen=True)
class ReferenceLSTMSpec(_ReferenceSizes):
    """An LSTM cell beyond what the C core computes, run on a float64
    NumPy implementation: gates clipped to [-clip, clip] before their
    activations, ``input_forget`` (f = 1 - i), distinct candidate (``g``)
    and output (``h``) activations, activations with parameters. Weights in
    the canonical layout of LSTMSpec; ``reason`` says why the C core cannot
    run it."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    peepholes: np.ndarray | None
    gate: GateActivation
    candidate: GateActivation
    output: GateActivation
    clip: float | None = None
    input_forget: bool = False
    go_backwards: bool = False
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class ReferenceCellSpec(_ReferenceSizes):
    """A GRU or simple RNN cell (``kind`` "GRU" or "RNN") beyond what the C
    core computes, run on a float64 NumPy implementation: pre-activations
    clipped to [-clip, clip], activations with parameters (``activations``:
    f for z and r, then g for the candidate; one for an RNN). Weights in
    the canonical layout of GRUSpec / SimpleRNNSpec."""

    kind: str
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    recurrent_bias: np.ndarray | None
    activations: tuple
    reset_after: bool = True
    clip: float | None = None
    go_backwards: bool = False
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class RecurrentOpSpec(LayerSpec):
    """A recurrent layer as an array op (ONNX's LSTM, GRU and RNN): inputs
    (x, lengths, h0, c0), c0 for an LSTM only, any but x may be None;
    outputs (y, h_n, c_n), c_n for an LSTM only, with a direction axis: y
    (T, D, B, H), h_n and c_n (D, B, H) in the ``time_major`` layout, else
    (B, T, D, H) and (B, D, H). ``directions`` holds one cell (LSTMSpec,
    GRUSpec, SimpleRNNSpec or a Reference*Spec) per direction, forward
    first; each runs backwards when its ``go_backwards`` says so, and the
    outputs are in time order."""

    directions: tuple = ()
    time_major: bool = True

    weighted: ClassVar[bool] = True

    def describe(self) -> str:
        return f"node {self.name!r} ({self.class_name})"

    def problems(self) -> list[str]:
        if len(self.directions) not in (1, 2):
            return [f"{self.name}: needs one or two directions"]
        sizes = {(d.input_size, d.units) for d in self.directions}
        return [] if len(sizes) == 1 else [f"{self.name}: directions differ in size"]


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """Output ``tensor`` of call number ``node`` of layer ``layer``."""

    layer: str
    node: int = 0
    tensor: int = 0


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One call of a layer: positional inputs, plus optional mask and
    initial-state tensors passed as keyword arguments."""

    layer: str
    index: int
    inputs: tuple
    mask: TensorRef | None = None
    initial_state: tuple = ()
    constant: Any = None  # second operand of mask ops such as not_equal
    # the call's other keyword arguments that are plain values (Attention's
    # use_causal_mask, return_attention_scores)
    options: Mapping = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model as a graph: ``layers`` (layer specs), ``nodes`` (calls, in an
    order where inputs come first), the model's ``inputs`` and ``outputs``
    (TensorRefs) and each input's declared shape."""

    name: str
    layers: tuple
    nodes: tuple
    inputs: tuple
    outputs: tuple
    input_shapes: tuple  # batch included (None = any size)
    keras_version: str = ""  # the producer's version, for the record
    source_format: str = ""
    source: str = ""
    # A layer's input mask passes on implicitly (Keras 1/2, Sequential
    # models); otherwise only explicit ``mask`` arguments carry masks
    # (Keras 3 functional configs record every mask a layer received).
    implicit_masks: bool = True
    # Nesting of the outputs as the framework returns them, as indices into
    # ``outputs``: e.g. [0, [1, 2], [3, 4]] for [seq, [h0, c0], [h1, c1]].
    output_structure: Any = None
    # The producer's call conventions its front end follows: "calls" (keras
    # when absent, torch_module, torch_cell, tf1, onnx) and their details,
    # e.g. torch {"mode": "GRU", "batch_first": bool}, TF1 {"multi": (fw,
    # bw), "scopes"}.
    conventions: Mapping = dataclasses.field(default_factory=dict)

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def problems(self) -> list[str]:
        """Every inconsistency of the graph and its layers."""
        out: list[str] = []
        names = [ls.name for ls in self.layers]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            out.append(f"layer names repeat: {dup}")
        known = set(names)
        for ls in self.layers:
            if not isinstance(ls, LayerSpec):
                out.append(f"{getattr(ls, 'name', ls)!r} is not a layer spec")
            else:
                out += ls.problems()
        made: set[tuple] = {(r.layer, r.node) for r in self.inputs}
        for node in self.nodes:
            if node.layer not in known:
                out.append(f"a node calls unknown layer {node.layer!r}")
            refs = [r for r in node.inputs if r is not None]
            refs += list(node.initial_state)
            refs += [node.mask] if node.mask is not None else []
            late = [r.layer for r in refs if (r.layer, r.node) not in made]
            if late:
                out.append(f"node {node.layer}[{node.index}] reads {late} too early")
            made.add((node.layer, node.index))
        for r in list(self.inputs) + list(self.outputs):
            if r.layer not in known:
                out.append(f"model input/output {r.layer!r} is not a layer")
        return out

    def validate(self) -> ModelSpec:
        """Raises one ModelFormatError listing every problem; returns self."""
        problems = self.problems()
        if problems:
            raise ModelFormatError(
                f"{self.source or self.name}: invalid model:\n  - "
                + "\n  - ".join(problems)
            )
        return self


def recurrent_chain(
    layers: Sequence[RecurrentSpec | BidirectionalSpec],
    *,
    name: str,
    source: str = "",
    source_format: str = "",
    conventions: Mapping | None = None,
) -> ModelSpec:
    """A graph feeding one input ``x`` through recurrent layers in order,
    each returning every step and its states. Outputs: the last layer's
    output(s), then every layer's states, layer by layer."""
    layers = list(layers)
    nodes = [NodeSpec("x", 0, ())]
    prev = TensorRef("x")
    states: list[TensorRef] = []
    outs: list[TensorRef] = []
    for ls in layers:
        nodes.append(NodeSpec(ls.name, 0, (prev,)))
        prev = TensorRef(ls.name)
        if isinstance(ls, BidirectionalSpec):
            n_out = 1 if ls.merge_mode is not None else 2
            n_states = ls.forward.state_count + ls.backward.state_count
        else:
            n_out, n_states = 1, ls.state_count
        outs = [TensorRef(ls.name, 0, i) for i in range(n_out)]
        states += [TensorRef(ls.name, 0, n_out + i) for i in range(n_states)]
    first = layers[0].forward if isinstance(layers[0], BidirectionalSpec) else layers[0]
    return ModelSpec(
        name=name,
        layers=(InputSpec("x", "Input"), *layers),
        nodes=tuple(nodes),
        inputs=(TensorRef("x"),),
        outputs=tuple(outs + states),
        input_shapes=((None, None, first.input_size),),
        source=source,
        source_format=source_format,
        conventions=dict(conventions or {}),
    ).validate()


def sequential(
    layers: Sequence[LayerSpec], *, name: str, input_shape: tuple
) -> ModelSpec:
    """A graph feeding one input ``x`` of ``input_shape`` (batch included)
    through ``layers`` in order, as a Keras Sequential model does; the last
    layer's output is the model's."""
    layers = list(layers)
    nodes = [NodeSpec("x", 0, ())]
    prev = TensorRef("x")
    for ls in layers:
        nodes.append(NodeSpec(ls.name, 0, (prev,)))
        prev = TensorRef(ls.name)
    return ModelSpec(
        name=name,
        layers=(InputSpec("x", "InputLayer"), *layers),
        nodes=tuple(nodes),
        inputs=(TensorRef("x"),),
        outputs=(prev,),
        input_shapes=(tuple(input_shape),),
    ).validate()
