"""A recurrent layer as an array op (RecurrentOpSpec, ONNX's LSTM, GRU and
RNN): inputs (x, lengths, h0[, c0]), outputs (y, h_n[, c_n]) with a
direction axis."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastlstm.engine.layers import CELL_LAYERS, Layer, RunContext
from fastlstm.engine.lstm import prepare
from fastlstm.engine.reference_cells import ReferenceCell, ReferenceLSTM
from fastlstm.errors import ShapeError
from fastlstm.model_spec import RecurrentOpSpec, ReferenceCellSpec, ReferenceLSTMSpec

__all__ = ["RecurrentOp", "run_direction"]


class RecurrentOp(Layer):
    """Each direction runs on the C core (an LSTMSpec, GRUSpec or
    SimpleRNNSpec) or on the float64 reference (a Reference*Spec); backward
    outputs come back in time order."""

    def __init__(self, spec: RecurrentOpSpec, nan_policy: str = "raise") -> None:
        super().__init__(spec)
        self.cells: list[Any] = [
            _cell(d, nan_policy, spec.time_major) for d in spec.directions
        ]
        self.input_size = self.cells[0].input_size
        self.hidden = self.cells[0].units
        self.state_count = self.cells[0].state_count

    def call(self, inputs: list, masks: list, node: Any, ctx: RunContext) -> tuple:
        S, tm = self.state_count, self.spec.time_major
        X, lengths, *init = (list(inputs) + [None] * 4)[: 2 + S]
        where = self.spec.describe()
        x = self._checked(X, where)
        T, Bn = x.shape[:2] if tm else x.shape[1::-1]
        # the C core reads X in the node's own layout; the float64
        # reference reads it batch-major
        native = prepare(x, Bn, T, tm, None, None)
        if lengths is not None:
            native.lengths = _lengths(lengths, Bn, T, where)
        batch_major: Any = None
        D, H = len(self.cells), self.hidden
        names = ("initial_h", "initial_c")[:S]
        states = [self._state(s, n, D, Bn, where) for n, s in zip(names, init)]
        ys, finals = [], []
        for d, cell in enumerate(self.cells):
            given = [None if s is None else s[d] for s in states]
            state = None
            if any(g is not None for g in given):  # an omitted one is zeros
                state = tuple(
                    np.zeros((Bn, H), np.float32) if g is None else g for g in given
                )
            reference = isinstance(cell, (ReferenceLSTM, ReferenceCell))
            p = native
            if reference:
                batch_major = batch_major or _batch_major_of(native)
                p = batch_major
            y, final = run_direction(cell, p, state)
            if cell.go_backwards:  # processing order back to time order
                y = np.flip(y, axis=0 if p.time_major else 1)
            ys.append(y.transpose(1, 0, 2) if reference and tm else y)
            finals.append(final)
        per_state = [[f[i] for f in finals] for i in range(S)]
        if tm:
            return [_stack(ys, 1), *(_stack(f, 0) for f in per_state)], [None] * (1 + S)
        out = [_stack(ys, 2), *(_stack(f, 1) for f in per_state)]
        return out, [None] * (1 + S)

    def _checked(self, X: Any, where: str) -> np.ndarray:
        """X as a contiguous float32 array, in the node's layout."""
        if X is None:
            raise ShapeError(f"{where}: input X is missing")
        x = np.asarray(X)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = (
                "(seq, batch, input)" if self.spec.time_major else "(batch, seq, input)"
            )
            raise ShapeError(
                f"{where}: X has shape {x.shape}, expected {layout} with "
                f"input={self.input_size}"
            )
        if x.dtype.kind != "f":
            raise ShapeError(f"{where}: X has dtype {x.dtype}; floats expected")
        return np.ascontiguousarray(x, dtype=np.float32)

    def _state(self, s: Any, name: str, D: int, Bn: int, where: str) -> Any:
        if s is None:
            return None
        s = np.asarray(s, dtype=np.float32)
        tm = self.spec.time_major
        want = (D, Bn, self.hidden) if tm else (Bn, D, self.hidden)
        if s.shape != want:
            raise ShapeError(f"{where}: {name} has shape {s.shape}, expected {want}")
        return s if tm else s.transpose(1, 0, 2)


def _cell(spec: Any, nan_policy: str, time_major: bool) -> Any:
    """The engine layer of one direction (reading X in the node's layout),
    or the float64 reference."""
    if isinstance(spec, ReferenceLSTMSpec):
        return ReferenceLSTM(spec)
    if isinstance(spec, ReferenceCellSpec):
        return ReferenceCell(spec)
    layer = CELL_LAYERS[type(spec)]
    return layer.from_spec(spec, time_major=time_major, nan_policy=nan_policy)


def _batch_major_of(p: Any) -> Any:
    """The same call's inputs batch-major (for the float64 reference)."""
    if not p.time_major:
        return p
    x = np.ascontiguousarray(p.x.transpose(1, 0, 2))
    q = prepare(x, p.batch, p.steps, False, None, None)
    q.lengths = p.lengths
    return q


def run_direction(cell: Any, p: Any, state: tuple | None) -> tuple:
    """(outputs in processing order, final states) of one direction."""
    states = cell.make_state(state, p.batch)
    if isinstance(cell, (ReferenceLSTM, ReferenceCell)):
        return cell.run_states(p, states)
    y, _ = cell.run_states(p, states, True)
    return y, states


def _stack(arrays: list, axis: int) -> np.ndarray:
    """np.stack, as a view for one array (one direction: no copy)."""
    return (
        np.expand_dims(arrays[0], axis) if len(arrays) == 1 else np.stack(arrays, axis)
    )


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
