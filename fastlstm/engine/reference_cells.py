"""Cells the C core does not compute, on a float64 NumPy implementation of
the general equations: LSTMs (ReferenceLSTMSpec) with gate clipping,
``input_forget`` and any gate activations with parameters; GRUs and simple
RNNs (ReferenceCellSpec) with clipping and such activations."""

from __future__ import annotations

import numpy as np

from fastlstm.engine.lstm import Prepared
from fastlstm.model_spec import ReferenceCellSpec, ReferenceLSTMSpec

__all__ = ["ReferenceLSTM", "ReferenceCell"]


class _Reference:
    """A reference cell's spec, direction and sizes."""

    def __init__(self, spec: ReferenceLSTMSpec | ReferenceCellSpec) -> None:
        self.spec = spec
        self.go_backwards = spec.go_backwards
        self.input_size, self.units = spec.input_size, spec.units
        self.output_size = spec.units


class ReferenceLSTM(_Reference):
    """Runs a ReferenceLSTMSpec like fastlstm.LSTM runs an LSTMSpec:
    ``make_state`` and ``run_states`` (batch-major inputs, lengths but no
    masks; outputs in processing order)."""

    state_count = 2

    def make_state(self, state: tuple | None, batch: int) -> tuple:
        H = self.units
        if state is None:
            return np.zeros((batch, H)), np.zeros((batch, H))
        return np.asarray(state[0], np.float64), np.asarray(state[1], np.float64)

    def run_states(self, p: Prepared, states: tuple) -> tuple:
        """(every step's output in processing order, (h, c)), float32."""
        h, c = states
        s = self.spec
        B, T = p.batch, p.steps
        f, g, hact = s.gate, s.candidate, s.output
        zx = p.x.astype(np.float64) @ s.kernel
        if s.bias is not None:
            zx += s.bias
        lens = np.full(B, T) if p.lengths is None else p.lengths
        y = np.zeros((B, T, self.units))
        P = s.peepholes
        steps = range(T - 1, -1, -1) if s.go_backwards else range(T)
        for k, t in enumerate(steps):
            zi, zf, zg, zo = np.split(zx[:, t] + h @ s.recurrent_kernel, 4, axis=1)
            if P is not None:
                zi = zi + P[0] * c
                zf = zf + P[1] * c
            i = f(self._clip(zi))
            fg = 1.0 - i if s.input_forget else f(self._clip(zf))
            cn = fg * c + i * g(self._clip(zg))
            if P is not None:
                zo = zo + P[2] * cn
            hn = f(self._clip(zo)) * hact(cn)
            valid = (t < lens)[:, None]
            h = np.where(valid, hn, h)
            c = np.where(valid, cn, c)
            y[:, k if s.go_backwards else t] = np.where(valid, hn, 0.0)
        return y.astype(np.float32), (h.astype(np.float32), c.astype(np.float32))

    def _clip(self, v: np.ndarray) -> np.ndarray:
        return _clipped(v, self.spec.clip)


def _clipped(v: np.ndarray, clip: float | None) -> np.ndarray:
    return v if clip is None else np.clip(v, -clip, clip)


class ReferenceCell(_Reference):
    """Runs a ReferenceCellSpec (a GRU or simple RNN) as ReferenceLSTM runs
    an LSTM; the state is (h,)."""

    state_count = 1

    def make_state(self, state: tuple | None, batch: int) -> tuple:
        if state is None:
            return (np.zeros((batch, self.units)),)
        return (np.asarray(state[0], np.float64),)

    def run_states(self, p: Prepared, states: tuple) -> tuple:
        """(every step's output in processing order, (h,)), float32."""
        (h,) = states
        s = self.spec
        B, T, H = p.batch, p.steps, self.units
        zx = p.x.astype(np.float64) @ s.kernel
        if s.bias is not None:
            zx += s.bias
        rb = 0.0 if s.recurrent_bias is None else s.recurrent_bias
        lens = np.full(B, T) if p.lengths is None else p.lengths
        y = np.zeros((B, T, H))
        steps = range(T - 1, -1, -1) if s.go_backwards else range(T)
        for k, t in enumerate(steps):
            hn = self._step(zx[:, t], h, rb)
            valid = (t < lens)[:, None]
            h = np.where(valid, hn, h)
            y[:, k if s.go_backwards else t] = np.where(valid, hn, 0.0)
        return y.astype(np.float32), (h.astype(np.float32),)

    def _step(
        self, zx: np.ndarray, h: np.ndarray, rb: np.ndarray | float
    ) -> np.ndarray:
        """ONNX's equations, pre-activations clipped."""
        s, H = self.spec, self.units
        U = s.recurrent_kernel
        if s.kind == "RNN":
            return s.activations[0](_clipped(zx + h @ U + rb, s.clip))
        f, g = s.activations
        zh = h @ U + rb
        z = f(_clipped(zx[:, :H] + zh[:, :H], s.clip))
        r = f(_clipped(zx[:, H : 2 * H] + zh[:, H : 2 * H], s.clip))
        if s.reset_after:
            pre = zx[:, 2 * H :] + r * zh[:, 2 * H :]
        else:
            rbn = 0.0 if s.recurrent_bias is None else s.recurrent_bias[2 * H :]
            pre = zx[:, 2 * H :] + (r * h) @ U[:, 2 * H :] + rbn
        n = g(_clipped(pre, s.clip))
        return (1 - z) * n + z * h
