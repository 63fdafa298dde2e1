"""Keras layers that work along the time axis around recurrent layers ->
the canonical specs of fastlstm.sequence_specs: Conv1D, the 1-D and
global poolings, BatchNormalization (inference), LayerNormalization,
Normalization, Rescaling, ZeroPadding1D, Cropping1D, UpSampling1D,
Permute, ReLU, LeakyReLU, ELU and PReLU. Masks follow Keras: which layers
pass them on is recorded in each spec (Rescaling passes it in Keras 3
only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastlstm.errors import ModelFormatError, UnsupportedLayerError
from fastlstm.model_spec import LayerSpec
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

__all__ = ["SEQUENCE_CONVERTERS", "SEQUENCE_WEIGHTED"]

# Keras' backend.epsilon(), the floor of Normalization's standard deviation
KERAS_EPSILON = 1e-7


def _where(layer: Any) -> str:
    return f"layer {layer.name!r} ({layer.class_name})"


def _one(value: Any, name: str, where: str) -> int:
    """An int from Keras' 1-tuples ([3]) or ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise UnsupportedLayerError(f"{where}: {name}={value} is not 1-D")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelFormatError(f"{where}: {name}={value!r} is not a count")
    return value


def _pair(value: Any, name: str, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (_one(value[0], name, where), _one(value[1], name, where))
    raise ModelFormatError(f"{where}: {name}={value!r} is not one or two counts")


def _channels_first(cfg: dict, where: str) -> bool:
    fmt = cfg.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise ModelFormatError(f"{where}: data_format {fmt!r}")
    return fmt == "channels_first"


def _arrays(layer: Any, count: int) -> list[np.ndarray]:
    ws = [np.asarray(w, np.float32) for w in layer.weights]
    if len(ws) != count:
        raise ModelFormatError(
            f"{_where(layer)}: {len(ws)} weight arrays, expected {count}"
        )
    return ws


def conv1d(layer: Any, flavor: Any, activation: Callable) -> Conv1DSpec:
    cfg, where = layer.config, _where(layer)
    use_bias = cfg.get("use_bias", True)
    ws = _arrays(layer, 2 if use_bias else 1)
    padding = str(cfg.get("padding", "valid")).lower()
    return Conv1DSpec(
        layer.name,
        layer.class_name,
        kernel=ws[0],
        bias=ws[1] if use_bias else None,
        strides=_one(cfg.get("strides", 1), "strides", where),
        padding=padding,
        dilation=_one(cfg.get("dilation_rate", 1), "dilation_rate", where),
        groups=_one(cfg.get("groups", 1), "groups", where),
        activation=activation(cfg.get("activation"), flavor, where),
        channels_first=_channels_first(cfg, where),
    )


def pooling(layer: Any, flavor: Any) -> Pool1DSpec:
    cfg, where, cls = layer.config, _where(layer), layer.class_name
    op = "max" if "Max" in cls else "avg"
    if cls.startswith("Global"):
        return Pool1DSpec(
            layer.name,
            cls,
            op=op,
            global_pool=True,
            keepdims=bool(cfg.get("keepdims", False)),
            channels_first=_channels_first(cfg, where),
        )
    pool = _one(cfg.get("pool_size", 2), "pool_size", where)
    strides = cfg.get("strides")
    return Pool1DSpec(
        layer.name,
        cls,
        op=op,
        pool=pool,
        strides=pool if strides is None else _one(strides, "strides", where),
        padding=str(cfg.get("padding", "valid")).lower(),
        channels_first=_channels_first(cfg, where),
    )


def _axis(cfg: dict, where: str) -> int:
    axis = cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise UnsupportedLayerError(f"{where}: axis={axis} (one axis supported)")
        axis = axis[0]
    return int(axis)


def batch_norm(layer: Any, flavor: Any) -> AffineSpec:
    """Inference: x * gamma / sqrt(var + eps) + (beta - mean * that)."""
    cfg = layer.config
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    ws = _arrays(layer, 2 + scale + center)
    gamma = ws.pop(0) if scale else None
    beta = ws.pop(0) if center else None
    mean, var = ws
    mul = (1.0 / np.sqrt(var.astype(np.float64) + cfg.get("epsilon", 1e-3))).astype(
        np.float32
    )
    if gamma is not None:
        mul = mul * gamma
    add = -mean * mul + (0 if beta is None else beta)
    return AffineSpec(
        layer.name,
        layer.class_name,
        mul=mul.astype(np.float32),
        add=add.astype(np.float32),
        axis=_axis(cfg, _where(layer)),
        params=sum(int(w.size) for w in layer.weights),
    )


def normalization(layer: Any, flavor: Any) -> AffineSpec:
    """(x - mean) / max(sqrt(variance), epsilon), or its inverse, from the
    adapted weights [mean, variance, count] or the config's values."""
    cfg, where = layer.config, _where(layer)
    if cfg.get("mean") is not None and cfg.get("variance") is not None:
        mean = np.asarray(cfg["mean"], np.float32).reshape(-1)
        var = np.asarray(cfg["variance"], np.float32).reshape(-1)
    else:
        mean, var, _ = _arrays(layer, 3)
        mean, var = mean.reshape(-1), var.reshape(-1)
    std = np.maximum(np.sqrt(var), np.float32(KERAS_EPSILON))
    if cfg.get("invert", False):
        mul, add = std, mean
    else:
        mul = (1.0 / std).astype(np.float32)
        add = -mean * mul
    return AffineSpec(
        layer.name,
        layer.class_name,
        mul=mul.astype(np.float32),
        add=add.astype(np.float32),
        axis=_axis(cfg, where),
        params=sum(int(w.size) for w in layer.weights),
    )


def rescaling(layer: Any, flavor: Any) -> AffineSpec:
    cfg = layer.config
    return AffineSpec(
        layer.name,
        layer.class_name,
        mul=np.asarray(cfg.get("scale", 1.0), np.float32).reshape(-1),
        add=np.asarray(cfg.get("offset", 0.0), np.float32).reshape(-1),
        keeps_mask=flavor.major >= 3,  # tf.keras' Rescaling drops the mask
    )


def layer_norm(layer: Any, flavor: Any) -> LayerNormSpec:
    cfg = layer.config
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    rms = bool(cfg.get("rms_scaling", False))
    ws = _arrays(layer, int(scale) + int(center and not rms))
    axes = cfg.get("axis", -1)
    axes = tuple(axes) if isinstance(axes, (list, tuple)) else (int(axes),)
    return LayerNormSpec(
        layer.name,
        layer.class_name,
        axes=axes,
        epsilon=float(cfg.get("epsilon", 1e-3)),
        gamma=ws[0] if scale else None,
        beta=ws[-1] if center and not rms else None,
        rms_scaling=rms,
    )


def time_op(layer: Any, flavor: Any) -> TimeOpSpec:
    cfg, where, cls = layer.config, _where(layer), layer.class_name
    if cls == "ZeroPadding1D":
        args = _pair(cfg.get("padding", 1), "padding", where)
        return TimeOpSpec(layer.name, cls, op="pad", args=args)
    if cls == "Cropping1D":
        args = _pair(cfg.get("cropping", (1, 1)), "cropping", where)
        return TimeOpSpec(layer.name, cls, op="crop", args=args)
    if cls == "UpSampling1D":
        size = _one(cfg.get("size", 2), "size", where)
        return TimeOpSpec(layer.name, cls, op="upsample", args=(size,))
    dims = tuple(int(d) for d in cfg.get("dims", ()))
    return TimeOpSpec(layer.name, cls, op="permute", args=dims)


def rectifier(layer: Any, flavor: Any) -> RectifierSpec:
    cfg, cls = layer.config, layer.class_name
    if cls == "ELU":
        return RectifierSpec(layer.name, cls, elu_alpha=float(cfg.get("alpha", 1.0)))
    if cls == "LeakyReLU":
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        return RectifierSpec(layer.name, cls, negative_slope=float(slope))
    max_value = cfg.get("max_value")
    return RectifierSpec(
        layer.name,
        cls,
        max_value=None if max_value is None else float(max_value),
        negative_slope=float(cfg.get("negative_slope", 0.0) or 0.0),
        threshold=float(cfg.get("threshold", 0.0) or 0.0),
    )


def prelu(layer: Any, flavor: Any) -> LayerSpec:
    (alpha,) = _arrays(layer, 1)
    return PReLUSpec(layer.name, layer.class_name, alpha=alpha)


def attention(layer: Any, flavor: Any) -> AttentionSpec:
    """Attention: [scale] if use_scale, then [concat_score_weight] in the
    concat mode; AdditiveAttention: [scale (dim,)] if use_scale."""
    cfg, cls = layer.config, layer.class_name
    use_scale = bool(cfg.get("use_scale", cls == "AdditiveAttention"))
    score = "additive" if cls == "AdditiveAttention" else cfg.get("score_mode", "dot")
    ws = _arrays(layer, int(use_scale) + int(score == "concat"))
    if cfg.get("causal"):  # tf.keras' old constructor flag
        raise UnsupportedLayerError(
            f"{_where(layer)}: causal=True (pass use_causal_mask to the call)"
        )
    return AttentionSpec(
        layer.name,
        cls,
        score=score,
        scale=ws[0] if use_scale else None,
        concat_weight=ws[-1] if score == "concat" else None,
    )


def multi_head_attention(layer: Any, flavor: Any) -> MultiHeadAttentionSpec:
    """Weights in Keras' order: query, key, value, output (kernel, then
    bias when use_bias); attention over the time axis only."""
    cfg, where = layer.config, _where(layer)
    axes = cfg.get("attention_axes")
    if axes not in (None, [1], (1,), 1):
        raise UnsupportedLayerError(f"{where}: attention_axes={axes}")
    for key in ("use_gate", "sliding_window"):
        if cfg.get(key):
            raise UnsupportedLayerError(f"{where}: {key}={cfg[key]!r}")
    use_bias = cfg.get("use_bias", True)
    ws = _arrays(layer, 8 if use_bias else 4)
    step = 2 if use_bias else 1
    kernels = ws[0::step]
    biases = ws[1::step] if use_bias else [None] * 4
    if any(k.ndim != 3 for k in kernels):
        raise ModelFormatError(f"{where}: projection kernels must be 3-D")
    return MultiHeadAttentionSpec(
        layer.name,
        layer.class_name,
        zeroes_masked_scores=flavor.major >= 3,
        wq=kernels[0],
        wk=kernels[1],
        wv=kernels[2],
        wo=kernels[3],
        bq=biases[0],
        bk=biases[1],
        bv=biases[2],
        bo=biases[3],
    )


def _slicing(layer: Any) -> IndexSpec:
    """tf.keras' x[...] (other TF op lambdas hold code: refused)."""
    function = layer.config.get("function")
    if function != "__operators__.getitem":
        raise UnsupportedLayerError(
            f"{_where(layer)}: TF op {function!r} (only x[...] indexing is run)"
        )
    return IndexSpec(layer.name, layer.class_name)


POOLING_CLASSES = (
    "MaxPooling1D",
    "AveragePooling1D",
    "GlobalMaxPooling1D",
    "GlobalAveragePooling1D",
)
SEQUENCE_CONVERTERS: dict[str, Callable] = {
    **{c: pooling for c in POOLING_CLASSES},
    "BatchNormalization": batch_norm,
    "LayerNormalization": layer_norm,
    "Normalization": normalization,
    "Rescaling": rescaling,
    "ZeroPadding1D": time_op,
    "Cropping1D": time_op,
    "UpSampling1D": time_op,
    "Permute": time_op,
    "ReLU": rectifier,
    "LeakyReLU": rectifier,
    "ELU": rectifier,
    "PReLU": prelu,
    "GetItem": lambda layer, flavor: IndexSpec(layer.name, layer.class_name),
    "SlicingOpLambda": lambda layer, flavor: _slicing(layer),
    "Attention": attention,
    "AdditiveAttention": attention,
    "MultiHeadAttention": multi_head_attention,
}
# Layers that hold weights (Conv1D is added by keras_layers, which gives it
# the Keras activation parser). Normalization may hold them (adapted) or not.
SEQUENCE_WEIGHTED = (
    "MultiHeadAttention",
    "Attention",
    "AdditiveAttention",
    "BatchNormalization",
    "LayerNormalization",
    "PReLU",
)
