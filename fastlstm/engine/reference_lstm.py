"""LSTM cells the C core does not compute (ReferenceLSTMSpec), on a float64
NumPy implementation of the general equations: gate clipping,
``input_forget`` and any gate activations with parameters."""

from __future__ import annotations

import numpy as np

from fastlstm.engine.lstm import Prepared
from fastlstm.model_spec import ReferenceLSTMSpec

__all__ = ["ReferenceLSTM"]


class ReferenceLSTM:
    """Runs a ReferenceLSTMSpec like fastlstm.LSTM runs an LSTMSpec:
    ``make_state`` and ``run_prepared`` (batch-major inputs, lengths but no
    masks; outputs in processing order)."""

    def __init__(self, spec: ReferenceLSTMSpec) -> None:
        self.spec = spec
        self.go_backwards = spec.go_backwards
        self.input_size, self.units = spec.input_size, spec.units
        self.output_size = spec.units

    def make_state(self, state: tuple | None, batch: int) -> tuple:
        H = self.units
        if state is None:
            return np.zeros((batch, H)), np.zeros((batch, H))
        return np.asarray(state[0], np.float64), np.asarray(state[1], np.float64)

    def run_prepared(
        self, p: Prepared, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(every step's output in processing order, h, c), float32."""
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
        return y.astype(np.float32), h.astype(np.float32), c.astype(np.float32)

    def _clip(self, v: np.ndarray) -> np.ndarray:
        clip = self.spec.clip
        return v if clip is None else np.clip(v, -clip, clip)
