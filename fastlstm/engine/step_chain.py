"""The per-step path of a model stream: a model that is one chain of
layers (Embedding or Masking, recurrent layers running forward, Dense,
Activation, ReLU and ELU, per-feature affine maps, LayerNormalization,
dropout and noise) runs each time step through the C core in one call
(fastlstm._core.ChainCore). Other models stream through the graph, one
NumPy call per layer.

``chain_plan`` reads the graph; the stream then gives each recurrent
stage an engine stream (its state and threads) and builds the ChainCore.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fastlstm.activations import Activation as Code
from fastlstm.activations import kernel_activation
from fastlstm.engine.layers import (
    Activation,
    Dense,
    Embedding,
    Identity,
    InputLayer,
    Masking,
    Recurrent,
)
from fastlstm.engine.sequence_layers import Affine, LayerNorm, Rectifier
from fastlstm.model_spec import TensorRef

__all__ = ["RecurrentStage", "chain_plan", "input_size", "sized"]

# Token ids reach the C step as float32, exact up to 2^24.
MAX_VOCAB = 1 << 24


@dataclasses.dataclass(frozen=True)
class RecurrentStage:
    """Cell ``cell`` of recurrent layer ``layer``: whether the step's mask
    reaches it, and whether its output is a sequence's step (what it gives
    at a masked step differs from a last output's)."""

    layer: str
    cell: int
    masked: bool
    sequence_output: bool


def chain_plan(graph: Any) -> list | None:
    """The stages of ``graph`` as one chain (tuples as ChainCore takes them,
    a RecurrentStage for each recurrent cell), or None when the graph is
    not such a chain."""
    spec = graph.spec
    if len(spec.inputs) != 1 or len(spec.outputs) != 1 or graph._folded_nodes:
        return None
    nodes = list(spec.nodes)
    if input_size(graph) is None or len({n.layer for n in nodes}) != len(nodes):
        return None  # a layer called twice would share one state in C
    if spec.outputs[0] != _ref(nodes[-1]) or not isinstance(
        graph.layers[nodes[0].layer], InputLayer
    ):
        return None
    stages: list = []
    masked = False  # whether the current values carry the step's mask
    for prev, node in zip(nodes, nodes[1:]):
        if node.mask is not None or node.initial_state or len(node.inputs) != 1:
            return None
        if node.inputs[0] != _ref(prev):
            return None
        masked = _add_stages(graph.layers[node.layer], masked, stages)
        if masked is None:
            return None
        masked = masked and spec.implicit_masks
    return stages if any(isinstance(s, RecurrentStage) for s in stages) else None


def input_size(graph: Any) -> int | None:
    """Features of one step of the chain's input: the last axis of a
    (batch, time, features) input, or 1 for the token ids of a (batch, time)
    input read by an Embedding first (after dropout-like layers); None
    otherwise."""
    shape = graph.spec.input_shapes[0]
    if shape is not None and len(shape) == 3 and shape[2] is not None:
        return int(shape[2])
    if shape is None or len(shape) != 2:
        return None
    for node in graph.spec.nodes[1:]:
        layer = graph.layers[node.layer]
        if not isinstance(layer, Identity):
            ok = isinstance(layer, Embedding) and layer.spec.table.shape[0] <= MAX_VOCAB
            return 1 if ok else None
    return None


def _ref(node: Any) -> TensorRef:
    """A node's first output."""
    return TensorRef(node.layer, node.index, 0)


def _add_stages(layer: Any, masked: bool, stages: list) -> bool | None:
    """Appends the stages of one layer; returns whether its output carries
    the mask, or None if the layer cannot join a chain."""
    spec = layer.spec
    if isinstance(layer, Identity):
        return masked
    if isinstance(layer, Embedding):
        if stages or spec.table.shape[0] > MAX_VOCAB:  # ids only from the input
            return None
        table = np.ascontiguousarray(spec.table, np.float32)
        stages.append(("embedding", table, bool(spec.mask_zero)))
        return bool(spec.mask_zero)
    if isinstance(layer, Masking):
        stages.append(("masking", None, float(spec.mask_value), bool(spec.keep_nan)))
        return True
    if isinstance(layer, Dense):
        return _add_dense(spec, masked, stages)
    if isinstance(layer, Activation):
        return _add_activation(spec.activation, spec.axis, masked, stages)
    if isinstance(layer, Rectifier):
        name = _plain_rectifier(spec)
        return None if name is None else _add_activation(name, -1, masked, stages)
    if isinstance(layer, LayerNorm):
        if tuple(spec.axes) not in ((-1,), (2,)):
            return None
        gamma, beta = (
            None if a is None else np.ascontiguousarray(a, np.float32).reshape(-1)
            for a in (spec.gamma, spec.beta)
        )
        stages.append(
            (
                "layernorm",
                None,
                gamma,
                beta,
                float(spec.epsilon),
                bool(spec.rms_scaling),
            )
        )
        return masked
    if isinstance(layer, Affine):
        if spec.axis not in (-1, 2):
            return None
        stages.append(("affine", spec.mul, spec.add))
        return masked and spec.keeps_mask
    if isinstance(layer, Recurrent):
        if spec.go_backwards or spec.time_major or spec.return_state:
            return None
        n = len(spec.cells)
        for k in range(n):
            sequence = spec.return_sequences or k < n - 1
            stages.append(RecurrentStage(spec.name, k, masked, sequence))
        return masked and spec.return_sequences
    return None


def _plain_rectifier(spec: Any) -> str | None:
    """The activation a ReLU or ELU layer without options computes, or None
    (thresholds, slopes, caps and other alphas stay on the graph)."""
    if spec.elu_alpha is not None:
        return "elu" if spec.elu_alpha == 1.0 else None
    plain = spec.max_value is None and not spec.negative_slope and not spec.threshold
    return "relu" if plain else None


def _add_dense(spec: Any, masked: bool, stages: list) -> bool | None:
    act = spec.activation
    code = kernel_activation(act)
    if code is None and act != "softmax":
        return None
    kernel = np.ascontiguousarray(spec.kernel, np.float32)
    bias = None if spec.bias is None else np.ascontiguousarray(spec.bias, np.float32)
    stages.append(("dense", kernel, bias, int(Code.LINEAR if code is None else code)))
    if act == "softmax":
        stages.append(("softmax", kernel.shape[1]))
    return masked


def _add_activation(name: str, axis: int, masked: bool, stages: list) -> bool | None:
    if name == "softmax" and axis in (-1, 2):
        stages.append(("softmax", None))
        return masked
    code = kernel_activation(name)
    if code is None:
        return None
    stages.append(("activation", None, int(code)))
    return masked


def sized(stages: list, input_size: int, cells: dict) -> list | None:
    """The stages with every size filled in (masking, activation and
    softmax take the features that reach them; ``cells`` maps each
    RecurrentStage to its engine cell), or None when a stage does not take
    the features that reach it: the graph then says so at the step."""
    out, features = [], input_size
    for s in stages:
        if isinstance(s, RecurrentStage):
            if cells[s].input_size != features:
                return None
            out.append(s)
            features = cells[s].output_size
            continue
        kind = s[0]
        if kind in ("masking", "activation", "softmax", "layernorm"):
            s = (kind, features, *s[2:])
            if kind == "layernorm" and any(
                a is not None and a.size != features for a in s[2:4]
            ):
                return None
        elif kind == "dense":
            if s[1].shape[0] != features:
                return None
            features = s[1].shape[1]
        elif kind == "embedding":  # first, on the input's token ids
            features = s[1].shape[1]
        elif kind == "affine":
            if np.size(s[1]) not in (1, features) or np.size(s[2]) not in (1, features):
                return None
            s = _affine(s, features)
        out.append(s)
    return out


def _affine(stage: tuple, features: int) -> tuple:
    """An affine stage with scale and shift one value per feature (a
    single value broadcasts, as in the graph)."""
    _, mul, add = stage
    mul = np.broadcast_to(np.asarray(mul, np.float32).reshape(-1), (features,))
    add = np.broadcast_to(np.asarray(add, np.float32).reshape(-1), (features,))
    return ("affine", np.ascontiguousarray(mul), np.ascontiguousarray(add))
