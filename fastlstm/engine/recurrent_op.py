"""A recurrent layer as an array op (RecurrentOpSpec, ONNX's LSTM):
inputs (x, lengths, h0, c0), outputs (y, h_n, c_n) with a direction axis."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastlstm.engine.layers import Layer, RunContext
from fastlstm.engine.lstm import LSTM, prepare
from fastlstm.engine.reference_lstm import ReferenceLSTM
from fastlstm.errors import ShapeError
from fastlstm.model_spec import RecurrentOpSpec, ReferenceLSTMSpec

__all__ = ["RecurrentOp"]


class RecurrentOp(Layer):
    """Each direction runs on the C core (an LSTMSpec) or on the float64
    reference (a ReferenceLSTMSpec); backward outputs come back in time
    order."""

    def __init__(self, spec: RecurrentOpSpec, nan_policy: str = "raise") -> None:
        super().__init__(spec)
        self.cells: list[LSTM | ReferenceLSTM] = [
            ReferenceLSTM(d)
            if isinstance(d, ReferenceLSTMSpec)
            else LSTM.from_spec(d, nan_policy=nan_policy)
            for d in spec.directions
        ]
        self.input_size = self.cells[0].input_size
        self.hidden = self.cells[0].units

    def call(self, inputs: list, masks: list, node: Any, ctx: RunContext) -> tuple:
        X, lengths, h0, c0 = (list(inputs) + [None] * 4)[:4]
        where = self.spec.describe()
        if X is None:
            raise ShapeError(f"{where}: input X is missing")
        p = prepare(*self._batch_major(X, where), False, None, None)
        if lengths is not None:
            p.lengths = _lengths(lengths, p.batch, p.steps, where)
        D, Bn, H = len(self.cells), p.batch, self.hidden
        states = [
            self._state(s, name, D, Bn, where)
            for name, s in (("initial_h", h0), ("initial_c", c0))
        ]
        ys, hs, cs = [], [], []
        for d, cell in enumerate(self.cells):
            h, c = (None if s is None else s[d] for s in states)
            if (h is None) != (c is None):
                h = np.zeros((Bn, H), np.float32) if h is None else h
                c = np.zeros((Bn, H), np.float32) if c is None else c
            y, h, c = self._run(cell, p, None if h is None else (h, c))
            ys.append(np.flip(y, axis=1) if cell.go_backwards else y)
            hs.append(h)
            cs.append(c)
        if self.spec.time_major:
            Y = np.stack([y.transpose(1, 0, 2) for y in ys], axis=1)
            return [Y, np.stack(hs), np.stack(cs)], [None] * 3
        return [np.stack(ys, 2), np.stack(hs, 1), np.stack(cs, 1)], [None] * 3

    def _batch_major(self, X: Any, where: str) -> tuple:
        x = np.asarray(X)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = (
                "(seq, batch, input)"
                if self.spec.time_major
                else ("(batch, seq, input)")
            )
            raise ShapeError(
                f"{where}: X has shape {x.shape}, expected {layout} with "
                f"input={self.input_size}"
            )
        if x.dtype.kind != "f":
            raise ShapeError(f"{where}: X has dtype {x.dtype}; floats expected")
        xb = x.transpose(1, 0, 2) if self.spec.time_major else x
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        return xb, xb.shape[0], xb.shape[1]

    def _state(self, s: Any, name: str, D: int, Bn: int, where: str) -> Any:
        if s is None:
            return None
        s = np.asarray(s, dtype=np.float32)
        tm = self.spec.time_major
        want = (D, Bn, self.hidden) if tm else (Bn, D, self.hidden)
        if s.shape != want:
            raise ShapeError(f"{where}: {name} has shape {s.shape}, expected {want}")
        return s if tm else s.transpose(1, 0, 2)

    @staticmethod
    def _run(cell: Any, p: Any, state: tuple | None) -> tuple:
        """(outputs in processing order, h, c) of one direction."""
        h, c = cell.make_state(state, p.batch)
        if isinstance(cell, ReferenceLSTM):
            return cell.run_prepared(p, h, c)
        y, _ = cell.run_prepared(p, h, c, True)
        return y, h, c


def _lengths(value: Any, batch: int, steps: int, where: str) -> np.ndarray:
    lengths = np.asarray(value)
    if lengths.dtype.kind not in "iu" or lengths.shape != (batch,):
        raise ShapeError(
            f"{where}: sequence_lens must be ({batch},) integers, got "
            f"{lengths.dtype} {lengths.shape}"
        )
    if (lengths < 0).any() or (lengths > steps).any():
        raise ShapeError(
            f"{where}: sequence_lens {lengths.tolist()} outside [0, {steps}]"
        )
    return lengths.astype(np.int32)
