"""A slow, obviously correct float64 NumPy LSTM: the test oracle.

Never used at run time. It follows the equations step by step, in the
canonical gate order i, f, g, o, with Keras' masking rules and PyTorch's
packed-sequence (lengths) rules, so the C kernel can be checked against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """The float64 definition of every activation the engine supports."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        table = {
            "tanh": lambda v: np.tanh(v),
            "sigmoid": lambda v: 0.5 * (1.0 + np.tanh(0.5 * v)),
            "hard_sigmoid_k2": lambda v: np.clip(0.2 * v + 0.5, 0.0, 1.0),
            "hard_sigmoid_k3": lambda v: np.clip(v / 6.0 + 0.5, 0.0, 1.0),
            "relu": lambda v: np.maximum(v, 0.0),
            "linear": lambda v: v,
            "softsign": lambda v: v / (1.0 + np.abs(v)),
            "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0.0))),
            "selu": lambda v: (
                _SELU_SCALE
                * np.where(v > 0, v, _SELU_ALPHA * np.expm1(np.minimum(v, 0.0)))
            ),
            "softplus": lambda v: np.logaddexp(0.0, v),
            "exponential": lambda v: np.exp(v),
        }
        return table[name](x)


def lstm(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    activation_name: str = "tanh",
    recurrent_activation_name: str = "sigmoid",
    peepholes: np.ndarray | None = None,
    projection: np.ndarray | None = None,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    go_backwards: bool = False,
    initial_state: tuple[Any, Any] | None = None,
    mask: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    zero_output_for_mask: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One LSTM layer over x (batch, time, features).

    Returns (outputs (B, T, R) in processing order, last_output (B, R),
    h (B, R), c (B, H)), all float64. At a masked step the state is carried;
    the output is the previous output (zeros before the first valid step) or
    zeros with zero_output_for_mask. Past a row's length the output is zeros
    and the state stays at the row's last valid step; its last_output is its
    output at that step.
    """
    x = np.asarray(x, np.float64)
    W = np.asarray(kernel, np.float64)
    U = np.asarray(recurrent_kernel, np.float64)
    B, T, _ = x.shape
    H = W.shape[1] // 4
    R = U.shape[0]
    b = np.zeros(4 * H) if bias is None else np.asarray(bias, np.float64)
    if initial_state is None:
        h, c = np.zeros((B, R)), np.zeros((B, H))
    else:
        h = np.array(initial_state[0], np.float64).reshape(B, R)
        c = np.array(initial_state[1], np.float64).reshape(B, H)
    valid = np.ones((B, T), bool) if mask is None else np.asarray(mask, bool).copy()
    past = np.zeros((B, T), bool)
    if lengths is not None:
        past = np.arange(T)[None, :] >= np.asarray(lengths)[:, None]
        valid &= ~past
    act = lambda v: activation(activation_name, v)  # noqa: E731
    ract = lambda v: activation(recurrent_activation_name, v)  # noqa: E731

    outputs = np.zeros((B, T, R))
    seen = np.zeros(B, bool)
    last = np.zeros((B, R))
    order = range(T - 1, -1, -1) if go_backwards else range(T)
    for k, t in enumerate(order):
        z = x[:, t] @ W + h @ U + b
        zi, zf, zg, zo = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
        if peepholes is not None:
            zi = zi + peepholes[0] * c
            zf = zf + peepholes[1] * c
        c_new = ract(zf) * c + ract(zi) * act(zg)
        if cell_clip is not None:
            c_new = np.clip(c_new, -cell_clip, cell_clip)
        if peepholes is not None:
            zo = zo + peepholes[2] * c_new  # the output gate sees the new c
        h_new = ract(zo) * act(c_new)
        if projection is not None:
            h_new = h_new @ np.asarray(projection, np.float64)
            if proj_clip is not None:
                h_new = np.clip(h_new, -proj_clip, proj_clip)
        v = valid[:, t][:, None]
        h = np.where(v, h_new, h)
        c = np.where(v, c_new, c)
        seen |= valid[:, t]
        carried = np.where(seen[:, None], h, 0.0)
        masked_out = np.zeros_like(h) if zero_output_for_mask else carried
        out = np.where(v, h, masked_out)
        out = np.where(past[:, t][:, None], 0.0, out)
        outputs[:, k] = out
        last = np.where(past[:, t][:, None], carried, out)
    return outputs, last, h, c
