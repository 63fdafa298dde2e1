"""The runtime layer for each kind of canonical layer spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastlstm.engine.layers import (
    Activation,
    BidirectionalLayer,
    Dense,
    Embedding,
    Identity,
    InputLayer,
    Layer,
    Masking,
    MaskOp,
    Merge,
    Recurrent,
    Repeat,
    Reshape,
)
from fastlstm.engine.ops import ConstantLayer, OpLayer
from fastlstm.engine.recurrent_op import RecurrentOp
from fastlstm.engine.sequence_layers import (
    Affine,
    Attention,
    Conv1D,
    Index,
    LayerNorm,
    MultiHeadAttention,
    Pool1D,
    PReLU,
    Rectifier,
    TimeOp,
)
from fastlstm.errors import ModelFormatError
from fastlstm.model_spec import (
    ActivationSpec,
    BidirectionalSpec,
    ConstantSpec,
    DenseSpec,
    EmbeddingSpec,
    IdentitySpec,
    InputSpec,
    LayerSpec,
    MaskingSpec,
    MaskOpSpec,
    MergeSpec,
    OpSpec,
    RecurrentOpSpec,
    RecurrentSpec,
    RepeatSpec,
    ReshapeSpec,
)
from fastlstm.sequence_specs import (
    AffineSpec,
    AttentionSpec,
    Conv1DSpec,
    IndexSpec,
    LayerNormSpec,
    MultiHeadAttentionSpec,
    Pool1DSpec,
    PReLUSpec,
    RectifierSpec,
    TimeOpSpec,
)

__all__ = ["build_layer"]

_BUILDERS: dict[type, Callable[[Any], Layer]] = {
    InputSpec: InputLayer,
    IdentitySpec: Identity,
    MaskingSpec: Masking,
    DenseSpec: Dense,
    ActivationSpec: Activation,
    EmbeddingSpec: Embedding,
    ReshapeSpec: Reshape,
    RepeatSpec: Repeat,
    MergeSpec: Merge,
    MaskOpSpec: MaskOp,
    RecurrentSpec: Recurrent,
    BidirectionalSpec: BidirectionalLayer,
    ConstantSpec: ConstantLayer,
    OpSpec: OpLayer,
    RecurrentOpSpec: RecurrentOp,
    Conv1DSpec: Conv1D,
    Pool1DSpec: Pool1D,
    AffineSpec: Affine,
    LayerNormSpec: LayerNorm,
    TimeOpSpec: TimeOp,
    RectifierSpec: Rectifier,
    PReLUSpec: PReLU,
    IndexSpec: Index,
    AttentionSpec: Attention,
    MultiHeadAttentionSpec: MultiHeadAttention,
}


def build_layer(
    spec: LayerSpec, nan_policy: str = "raise", threads: int | None = None
) -> Layer:
    """The runtime layer for a canonical layer spec; ``nan_policy`` and
    ``threads`` apply to recurrent layers (see fastlstm.LSTM)."""
    builder = _BUILDERS.get(type(spec))
    if builder is None:
        raise ModelFormatError(
            f"layer {spec.name!r}: {type(spec).__name__} is not a layer spec the "
            "engine runs"
        )
    if isinstance(spec, (RecurrentSpec, BidirectionalSpec, RecurrentOpSpec)):
        return builder(spec, nan_policy, threads)
    return builder(spec)
