"""Canonical specs of the layers that work along the time axis around
recurrent layers: 1-D convolutions, pooling, per-channel affine maps
(batch normalization at inference, adapted normalization, rescaling),
layer normalization, padding / cropping / upsampling / permuting, and
rectifiers with parameters. Weights are float32 NumPy arrays; inputs are
(batch, time, channels) unless ``channels_first``."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from fastlstm.activations import NUMPY_ACTIVATIONS
from fastlstm.errors import UnsupportedLayerError
from fastlstm.model_spec import LayerSpec

__all__ = [
    "Conv1DSpec",
    "Pool1DSpec",
    "AffineSpec",
    "LayerNormSpec",
    "TimeOpSpec",
    "RectifierSpec",
    "PReLUSpec",
    "IndexSpec",
    "index_key",
    "AttentionSpec",
    "MultiHeadAttentionSpec",
]

PADDINGS = ("valid", "same", "causal")


def _finite(name: str, arrays: dict) -> list[str]:
    return [
        f"{name}: {what} holds NaN or inf"
        for what, a in arrays.items()
        if a is not None and not np.isfinite(a).all()
    ]


def _sizes(a: np.ndarray | None) -> int:
    return 0 if a is None else int(a.size)


@dataclasses.dataclass(frozen=True)
class Conv1DSpec(LayerSpec):
    """``activation(conv(x, kernel) + bias)``: kernel (K, C_in / groups,
    C_out); padding valid, same (Keras' split: the extra on the right) or
    causal (all on the left); strides, dilation, groups. No mask comes
    out (Keras drops it)."""

    kernel: np.ndarray = None  # type: ignore[assignment]
    bias: np.ndarray | None = None
    strides: int = 1
    padding: str = "valid"
    dilation: int = 1
    groups: int = 1
    activation: str = "linear"
    channels_first: bool = False

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        k, out = self.kernel, []
        if k is None or k.ndim != 3 or min(k.shape) < 1:
            return [f"{self.name}: kernel must be (K, C_in/groups, C_out)"]
        if self.padding not in PADDINGS:
            out.append(f"{self.name}: padding {self.padding!r}")
        if (
            min(self.strides, self.dilation, self.groups) < 1
            or k.shape[2] % self.groups
        ):
            out.append(f"{self.name}: strides/dilation/groups out of range")
        if self.bias is not None and self.bias.shape != (k.shape[2],):
            out.append(f"{self.name}: bias {self.bias.shape} for kernel {k.shape}")
        if self.activation not in NUMPY_ACTIVATIONS:
            out.append(f"{self.name}: unknown activation {self.activation!r}")
        return out + _finite(self.name, {"kernel": k, "bias": self.bias})

    def param_count(self) -> int:
        return _sizes(self.kernel) + _sizes(self.bias)


@dataclasses.dataclass(frozen=True)
class Pool1DSpec(LayerSpec):
    """Max or average pooling over time: windows of ``pool`` steps every
    ``strides`` (valid or same padding; an average over a window cut by
    same padding counts only the steps inside), or over the whole sequence
    (``global_pool``, ``keepdims``). A global average with a mask averages
    the valid steps only; a global max ignores the mask. No mask comes out."""

    op: str = "max"
    pool: int = 2
    strides: int = 2
    padding: str = "valid"
    global_pool: bool = False
    keepdims: bool = False
    channels_first: bool = False

    def problems(self) -> list[str]:
        out = []
        if self.op not in ("max", "avg"):
            out.append(f"{self.name}: pooling op {self.op!r}")
        if self.padding not in ("valid", "same") or min(self.pool, self.strides) < 1:
            out.append(f"{self.name}: pool/strides/padding out of range")
        return out


@dataclasses.dataclass(frozen=True)
class AffineSpec(LayerSpec):
    """``x * mul + add`` per channel along ``axis``: what
    BatchNormalization (inference), Normalization and Rescaling compute.
    ``keeps_mask``: whether the input's mask passes through."""

    mul: np.ndarray = None  # type: ignore[assignment]
    add: np.ndarray = None  # type: ignore[assignment]
    axis: int = -1
    keeps_mask: bool = True
    params: int = 0  # the Keras layer's own parameter count

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        if self.mul is None or self.add is None:
            return [f"{self.name}: needs mul and add"]
        return _finite(self.name, {"mul": self.mul, "add": self.add})

    def param_count(self) -> int:
        return self.params


@dataclasses.dataclass(frozen=True)
class LayerNormSpec(LayerSpec):
    """Normalizes over ``axes`` (mean and variance per row), then scales by
    ``gamma`` and shifts by ``beta`` (either may be None); ``rms_scaling``
    divides by the root mean square instead (no centering). The mask
    passes through."""

    axes: tuple = (-1,)
    epsilon: float = 1e-3
    gamma: np.ndarray | None = None
    beta: np.ndarray | None = None
    rms_scaling: bool = False

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        return _finite(self.name, {"gamma": self.gamma, "beta": self.beta})

    def param_count(self) -> int:
        return _sizes(self.gamma) + _sizes(self.beta)


TIME_OPS = ("pad", "crop", "upsample", "permute")


@dataclasses.dataclass(frozen=True)
class TimeOpSpec(LayerSpec):
    """ZeroPadding1D (``pad``: zeros before and after), Cropping1D
    (``crop``), UpSampling1D (``upsample``: each step repeated) and Permute
    (``permute``: ``args`` are the axes, 1-based, batch excluded). No mask
    comes out."""

    op: str = "pad"
    args: tuple = ()

    def problems(self) -> list[str]:
        if self.op not in TIME_OPS:
            return [f"{self.name}: unknown op {self.op!r}"]
        if any(not isinstance(a, int) or a < 0 for a in self.args):
            return [f"{self.name}: arguments {self.args} must be counts"]
        return []


@dataclasses.dataclass(frozen=True)
class RectifierSpec(LayerSpec):
    """ReLU with Keras' options (``max_value``, ``negative_slope`` below
    ``threshold``; LeakyReLU is one) or, with ``elu_alpha``, ELU. The mask
    passes through."""

    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0
    elu_alpha: float | None = None


@dataclasses.dataclass(frozen=True)
class PReLUSpec(LayerSpec):
    """``max(x, 0) + alpha * min(x, 0)``, alpha broadcast over the axes
    it is shared along. The mask passes through."""

    alpha: np.ndarray = None  # type: ignore[assignment]

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        return _finite(self.name, {"alpha": self.alpha})

    def param_count(self) -> int:
        return _sizes(self.alpha)


@dataclasses.dataclass(frozen=True)
class IndexSpec(LayerSpec):
    """``x[key]`` (Keras 3 GetItem, tf.keras SlicingOpLambda: what ``h[:, -1]``
    saves as); the key is the call's (``NodeSpec.constant``), read by
    ``index_key``. No mask comes out."""


def index_key(value: Any, where: str) -> tuple:
    """A NumPy index from a saved one: ints and slices (Keras 3's
    ``{"class_name": "__slice__", "config": {...}}``, tf.keras' ``{"start":
    ..., "stop": ..., "step": ...}``); anything else is refused."""
    items = value if isinstance(value, list) else [value]
    key: list = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            key.append(item)
            continue
        if isinstance(item, dict) and item.get("class_name") == "__slice__":
            item = item.get("config")
        if isinstance(item, dict) and set(item) <= {"start", "stop", "step"}:
            parts = [item.get(k) for k in ("start", "stop", "step")]
            if all(
                p is None or (isinstance(p, int) and not isinstance(p, bool))
                for p in parts
            ):
                if parts[2] != 0:
                    key.append(slice(*parts))
                    continue
        raise UnsupportedLayerError(
            f"{where}: index {item!r} (fastlstm takes ints and slices)"
        )
    return tuple(key)


@dataclasses.dataclass(frozen=True)
class AttentionSpec(LayerSpec):
    """Keras' Attention (``score`` "dot" or "concat") and AdditiveAttention
    ("additive") over [query, value(, key)]: scores, the value mask (and a
    causal mask, ``use_causal_mask`` on the call) by subtracting 1e9,
    softmax, weights @ value, zeros where the query mask is off. ``scale``
    is a scalar (dot, concat) or a (dim,) vector (additive), or None;
    ``concat_weight`` the concat mode's scalar. The query mask comes out."""

    score: str = "dot"
    scale: np.ndarray | None = None
    concat_weight: np.ndarray | None = None

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        if self.score not in ("dot", "concat", "additive"):
            return [f"{self.name}: score mode {self.score!r}"]
        arrays = {"scale": self.scale, "concat_score_weight": self.concat_weight}
        return _finite(self.name, arrays)

    def param_count(self) -> int:
        return _sizes(self.scale) + _sizes(self.concat_weight)


@dataclasses.dataclass(frozen=True)
class MultiHeadAttentionSpec(LayerSpec):
    """Keras' MultiHeadAttention (attention over the time axis): query, key
    and value projections ``w*`` (dim, heads, size) with biases (heads,
    size) or None, scores scaled by 1/sqrt(key size), the mask of query,
    value and key (and a causal one, ``use_causal_mask`` on the call)
    setting masked scores to a large negative number before the softmax,
    and the output projection ``wo`` (heads, value size, out) with bias.
    ``zeroes_masked_scores``: Keras 3, when it returns the scores, runs a
    masked softmax that zeroes masked positions (a query masked everywhere
    then attends to nothing); otherwise such a query's weights are
    uniform."""

    zeroes_masked_scores: bool = False
    wq: np.ndarray = None  # type: ignore[assignment]
    wk: np.ndarray = None  # type: ignore[assignment]
    wv: np.ndarray = None  # type: ignore[assignment]
    wo: np.ndarray = None  # type: ignore[assignment]
    bq: np.ndarray | None = None
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None
    bo: np.ndarray | None = None

    weighted: ClassVar[bool] = True

    def problems(self) -> list[str]:
        ws = (self.wq, self.wk, self.wv, self.wo)
        if any(w is None or w.ndim != 3 for w in ws):
            return [f"{self.name}: projections must be 3-D"]
        heads = {w.shape[1] for w in ws[:3]} | {self.wo.shape[0]}
        out = []
        if len(heads) != 1 or self.wq.shape[2] != self.wk.shape[2]:
            out.append(f"{self.name}: head counts or key sizes differ")
        arrays = dict(
            zip(("wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo"), self._all())
        )
        return out + _finite(self.name, arrays)

    def _all(self) -> tuple:
        return (self.wq, self.wk, self.wv, self.wo, self.bq, self.bk, self.bv, self.bo)

    def param_count(self) -> int:
        return sum(_sizes(a) for a in self._all())
