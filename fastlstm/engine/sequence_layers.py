"""Runtime layers of fastlstm.sequence_specs (NumPy float32; products on
BLAS through NumPy): 1-D convolution, pooling, per-channel affine maps,
layer normalization, time-axis reshaping and rectifiers."""

from __future__ import annotations

import numpy as np

from fastlstm.activations import numpy_activation, softmax
from fastlstm.engine.layers import Layer
from fastlstm.errors import ShapeError, UnsupportedLayerError
from fastlstm.sequence_specs import (
    AffineSpec,
    Conv1DSpec,
    LayerNormSpec,
    Pool1DSpec,
    index_key,
)
from fastlstm.spec import check_elements

__all__ = [
    "Conv1D",
    "Pool1D",
    "Affine",
    "LayerNorm",
    "TimeOp",
    "Rectifier",
    "PReLU",
    "Index",
    "Attention",
    "MultiHeadAttention",
]


def _first_mask(masks: list):
    return masks[0] if masks else None


def _sequence(layer: Layer, x, channels_first: bool) -> np.ndarray:
    """x as (batch, time, channels) float32."""
    x = np.asarray(x, np.float32)
    if x.ndim != 3:
        raise ShapeError(
            f"layer {layer.name!r} ({layer.class_name}) takes (batch, steps, "
            f"channels), got {x.shape}"
        )
    return x.transpose(0, 2, 1) if channels_first else x


def _same_pads(length: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding: the extra step goes after."""
    out = -(-length // stride)
    total = max((out - 1) * stride + window - length, 0)
    return total // 2, total - total // 2


class Conv1D(Layer):
    streams = False

    def __init__(self, spec: Conv1DSpec) -> None:
        super().__init__(spec)
        self.activation = numpy_activation(spec.activation)

    def call(self, inputs, masks, node, ctx):
        s = self.spec
        x = _sequence(self, inputs[0], s.channels_first)
        K, Cg, Cout = s.kernel.shape
        if x.shape[2] != Cg * s.groups:
            raise ShapeError(
                f"layer {self.name!r} expects {Cg * s.groups} channels, got "
                f"{x.shape[2]}"
            )
        span = (K - 1) * s.dilation + 1
        if s.padding == "causal":
            pads = (span - 1, 0)
        elif s.padding == "same":
            pads = _same_pads(x.shape[1], span, s.strides)
        else:
            pads = (0, 0)
        if pads != (0, 0):
            x = np.pad(x, ((0, 0), pads, (0, 0)))
        n_out = (x.shape[1] - span) // s.strides + 1
        if n_out < 1:
            raise ShapeError(f"layer {self.name!r}: input too short for the kernel")
        check_elements((x.shape[0], n_out, K, x.shape[2]), f"{self.name!r} windows")
        idx = np.arange(n_out)[:, None] * s.strides + np.arange(K)[None] * s.dilation
        windows = x[:, idx, :]  # (B, n_out, K, C)
        og = Cout // s.groups
        parts = []
        for g in range(s.groups):
            cols = windows[..., g * Cg : (g + 1) * Cg].reshape(x.shape[0], n_out, -1)
            w = s.kernel[:, :, g * og : (g + 1) * og].reshape(K * Cg, og)
            parts.append(cols @ w)
        y = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
        if s.bias is not None:
            y += s.bias
        y = self.activation(y)
        return [
            np.ascontiguousarray(y.transpose(0, 2, 1) if s.channels_first else y)
        ], [None]


class Pool1D(Layer):
    streams = False

    def call(self, inputs, masks, node, ctx):
        s: Pool1DSpec = self.spec
        x = _sequence(self, inputs[0], s.channels_first)
        if s.global_pool:
            y = self._global(x, _first_mask(masks))
        else:
            y = self._windows(x)
            y = y.transpose(0, 2, 1) if s.channels_first else y
        return [np.ascontiguousarray(y, dtype=np.float32)], [None]

    def _global(self, x: np.ndarray, mask) -> np.ndarray:
        s = self.spec
        if s.op == "max":  # Keras' global max ignores the mask
            y = x.max(axis=1, keepdims=True)
        elif mask is None:
            y = x.mean(axis=1, keepdims=True)
        else:
            m = np.asarray(mask, np.float32)[:, :, None]
            with np.errstate(invalid="ignore", divide="ignore"):
                y = (x * m).sum(axis=1, keepdims=True) / m.sum(axis=1, keepdims=True)
        if s.keepdims:
            return y.transpose(0, 2, 1) if s.channels_first else y
        return y[:, 0]

    def _windows(self, x: np.ndarray) -> np.ndarray:
        s = self.spec
        T = x.shape[1]
        lo, hi = _same_pads(T, s.pool, s.strides) if s.padding == "same" else (0, 0)
        n_out = (T + lo + hi - s.pool) // s.strides + 1
        if n_out < 1:
            raise ShapeError(f"layer {self.name!r}: input shorter than the pool")
        starts = np.arange(n_out) * s.strides - lo
        idx = starts[:, None] + np.arange(s.pool)[None]
        inside = (idx >= 0) & (idx < T)  # padded steps never count
        windows = x[:, np.clip(idx, 0, T - 1), :]  # (B, n_out, pool, C)
        if s.op == "max":
            return np.where(inside[None, :, :, None], windows, -np.inf).max(axis=2)
        total = (windows * inside[None, :, :, None]).sum(axis=2)
        return total / inside.sum(axis=1)[None, :, None]


class Affine(Layer):
    def call(self, inputs, masks, node, ctx):
        s: AffineSpec = self.spec
        x = np.asarray(inputs[0], np.float32)
        shape = [1] * x.ndim
        axis = s.axis % x.ndim
        shape[axis] = -1
        if x.shape[axis] != s.mul.size and s.mul.size != 1:
            raise ShapeError(
                f"layer {self.name!r} expects {s.mul.size} channels on axis "
                f"{s.axis}, got input of shape {x.shape}"
            )
        y = x * s.mul.reshape(shape) + s.add.reshape(shape)
        return [y.astype(np.float32, copy=False)], [
            _first_mask(masks) if s.keeps_mask else None
        ]


class LayerNorm(Layer):
    def call(self, inputs, masks, node, ctx):
        s: LayerNormSpec = self.spec
        x = np.asarray(inputs[0], np.float32)
        axes = tuple(a % x.ndim for a in s.axes)
        if s.rms_scaling:
            inv = 1.0 / np.sqrt(
                np.mean(np.square(x), axis=axes, keepdims=True) + s.epsilon
            )
            y = x * inv
        else:
            mean = x.mean(axis=axes, keepdims=True)
            var = np.square(x - mean).mean(axis=axes, keepdims=True)
            y = (x - mean) / np.sqrt(var + np.float32(s.epsilon))
        shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
        if s.gamma is not None:
            y = y * s.gamma.reshape(shape)
        if s.beta is not None:
            y = y + s.beta.reshape(shape)
        return [y.astype(np.float32, copy=False)], [_first_mask(masks)]


class TimeOp(Layer):
    streams = False

    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0], np.float32)
        op, args = self.spec.op, self.spec.args
        if op == "permute":
            if sorted(args) != list(range(1, x.ndim)):
                raise ShapeError(f"layer {self.name!r}: dims {args} for {x.shape}")
            return [np.ascontiguousarray(x.transpose(0, *args))], [None]
        if x.ndim != 3:
            raise ShapeError(f"layer {self.name!r} takes (batch, steps, features)")
        if op == "pad":
            y = np.pad(x, ((0, 0), args, (0, 0)))
        elif op == "crop":
            if sum(args) >= x.shape[1]:
                raise ShapeError(f"layer {self.name!r}: cropping {args} of {x.shape}")
            y = x[:, args[0] : x.shape[1] - args[1]]
        else:
            check_elements((x.shape[0], x.shape[1] * args[0], x.shape[2]), self.name)
            y = np.repeat(x, args[0], axis=1)
        return [np.ascontiguousarray(y)], [None]


class Rectifier(Layer):
    def call(self, inputs, masks, node, ctx):
        s = self.spec
        x = np.asarray(inputs[0], np.float32)
        if s.elu_alpha is not None:
            y = np.where(x > 0, x, np.float32(s.elu_alpha) * np.expm1(np.minimum(x, 0)))
        else:  # Keras' relu(x, negative_slope, max_value, threshold)
            thr = np.float32(s.threshold)
            pos = x * (x > thr) if s.threshold else np.maximum(x, 0)
            if s.max_value is not None:
                pos = np.clip(pos, 0, np.float32(s.max_value))
            y = pos
            if s.negative_slope:
                y = pos - np.float32(s.negative_slope) * np.maximum(thr - x, 0)
        return [y.astype(np.float32, copy=False)], [_first_mask(masks)]


class PReLU(Layer):
    def call(self, inputs, masks, node, ctx):
        x = np.asarray(inputs[0], np.float32)
        a = self.spec.alpha
        try:
            y = np.maximum(x, 0) + a * np.minimum(x, 0)
        except ValueError as exc:
            raise ShapeError(f"layer {self.name!r}: {exc}") from None
        return [y.astype(np.float32, copy=False)], [_first_mask(masks)]


class Index(Layer):
    """x[key], the key from the call (Keras' h[:, -1])."""

    streams = False

    def call(self, inputs, masks, node, ctx):
        where = f"layer {self.name!r} ({self.class_name})"
        key = index_key(node.constant, where)
        x = np.asarray(inputs[0])
        try:
            y = x[key]
        except IndexError as exc:
            raise ShapeError(f"{where}: {exc}") from None
        return [np.ascontiguousarray(y)], [None]


class Attention(Layer):
    """Keras' Attention and AdditiveAttention (AttentionSpec)."""

    streams = False
    reads_input_masks = True
    BIG = np.float32(1.0e9)  # what Keras subtracts from masked scores

    def call(self, inputs, masks, node, ctx):
        q, v = (np.asarray(a, np.float32) for a in inputs[:2])
        k = np.asarray(inputs[2], np.float32) if len(inputs) > 2 else v
        q_mask = masks[0] if masks else None
        v_mask = masks[1] if len(masks) > 1 else None
        if q.ndim != 3 or v.ndim != 3 or k.ndim != 3 or k.shape[:2] != v.shape[:2]:
            raise ShapeError(f"layer {self.name!r}: query {q.shape}, value {v.shape}")
        scores = self._scores(q, k)
        keep = None if v_mask is None else np.asarray(v_mask, bool)[:, None, :]
        if node.options.get("use_causal_mask"):
            causal = np.tril(np.ones(scores.shape[1:], bool))[None]
            keep = causal if keep is None else keep & causal
        if keep is not None:
            scores = np.where(keep, scores, scores - self.BIG)
        weights = softmax(scores)
        out = weights @ v
        if q_mask is not None:
            out = np.where(np.asarray(q_mask, bool)[..., None], out, np.float32(0))
        outs = [out.astype(np.float32, copy=False)]
        if node.options.get("return_attention_scores"):
            outs.append(weights.astype(np.float32, copy=False))
        return outs, [q_mask] + [None] * (len(outs) - 1)

    def _scores(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        s = self.spec
        if s.score == "dot":
            scores = q @ k.transpose(0, 2, 1)
            return scores if s.scale is None else scores * s.scale
        pair = q[:, :, None, :] + k[:, None, :, :]  # (B, Tq, Tv, dim)
        check_elements(pair.shape, f"{self.name!r} scores")
        if s.score == "additive":
            scale = np.float32(1) if s.scale is None else s.scale
            return (scale * np.tanh(pair)).sum(axis=-1)
        if s.scale is not None:
            pair = s.scale * pair
        return s.concat_weight * np.tanh(pair).sum(axis=-1)


class MultiHeadAttention(Layer):
    """Keras' MultiHeadAttention (MultiHeadAttentionSpec), inference."""

    streams = False
    reads_input_masks = True
    MASKED = np.float32(-1e9)  # any constant gives Keras' softmax here

    def call(self, inputs, masks, node, ctx):
        s = self.spec
        if node.options.get("attention_mask"):
            raise UnsupportedLayerError(
                f"layer {self.name!r}: an attention_mask argument is not supported"
            )
        q_in, v_in = (np.asarray(a, np.float32) for a in inputs[:2])
        k_in = np.asarray(inputs[2], np.float32) if len(inputs) > 2 else v_in
        masks = list(masks) + [None] * 3
        q_mask, v_mask = masks[0], masks[1]
        k_mask = masks[2] if len(inputs) > 2 else v_mask
        q = _project(q_in, s.wq, s.bq) / np.sqrt(np.float32(s.wq.shape[2]))
        k, v = _project(k_in, s.wk, s.bk), _project(v_in, s.wv, s.bv)
        scores = np.einsum("btnh,bsnh->bnts", q, k)  # (B, N, Tq, Tv)
        keep = np.ones((q.shape[0], q.shape[1], k.shape[1]), bool)
        if q_mask is not None:
            keep &= np.asarray(q_mask, bool)[:, :, None]
        for m in (v_mask, k_mask):
            if m is not None:
                keep &= np.asarray(m, bool)[:, None, :]
        if node.options.get("use_causal_mask"):
            keep &= np.tril(np.ones(keep.shape[1:], bool))[None]
        scores = np.where(keep[:, None], scores, self.MASKED)
        scores = softmax(scores)
        with_scores = node.options.get("return_attention_scores")
        if with_scores and s.zeroes_masked_scores:
            scores = np.where(keep[:, None], scores, np.float32(0))
        context = np.einsum("bnts,bsnh->btnh", scores, v)
        out = np.einsum("btnh,nho->bto", context, s.wo)
        if s.bo is not None:
            out += s.bo
        outs = [out.astype(np.float32, copy=False)]
        if with_scores:
            outs.append(scores.astype(np.float32, copy=False))
        return outs, [q_mask] + [None] * (len(outs) - 1)


def _project(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """(B, T, dim) @ (dim, heads, size) (+ bias) -> (B, T, heads, size)."""
    y = (x @ w.reshape(w.shape[0], -1)).reshape(*x.shape[:2], *w.shape[1:])
    return y if b is None else y + b
