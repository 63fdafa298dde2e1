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

    def __init__(
        self,
        spec: RecurrentOpSpec,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> None:
        super().__init__(spec)
        self.cells: list[Any] = [
            _cell(d, nan_policy, spec.time_major, threads) for d in spec.directions
        ]
        self.input_size = self.cells[0].input_size
        self.hidden = self.cells[0].units
        self.state_count = self.cells[0].state_count
        self._where = spec.describe()

    def call(self, inputs: list, masks: list, node: Any, ctx: RunContext) -> tuple:
        tm, S = self.spec.time_major, self.state_count
        ys, per_state = self._directions(inputs, tm)
        if tm:
            return [_stack(ys, 1), *(_stack(f, 0) for f in per_state)], [None] * (1 + S)
        out = [_stack(ys, 2), *(_stack(f, 1) for f in per_state)]
        return out, [None] * (1 + S)

    def call_batch_major(self, inputs: list) -> list:
        """The node's outputs for X given batch-major (B, T, I) whatever its
        layout, one direction: the output sequence as (B, T, H), what a
        time-major node's Y becomes through Squeeze and a Transpose
        (exporters write that pair after it); the final states as call()
        gives them."""
        ys, per_state = self._directions(inputs, False)
        axis = 0 if self.spec.time_major else 1
        return [ys[0], *(_stack(f, axis) for f in per_state)]

    def _directions(self, inputs: list, x_time_major: bool) -> tuple[list, list]:
        """Every direction's outputs in time order, in X's layout, and the
        final states by state ([h of each direction], [c of each])."""
        S = self.state_count
        X, lengths, *init = (list(inputs) + [None] * 4)[: 2 + S]
        x = self._checked(X, x_time_major)
        T, Bn = x.shape[:2] if x_time_major else x.shape[1::-1]
        # the C core reads X in its own layout; the float64 reference reads
        # it batch-major
        native = prepare(x, Bn, T, x_time_major, None, None)
        if lengths is not None:
            native.lengths = _lengths(lengths, Bn, T, self._where)
        batch_major: Any = None
        D = len(self.cells)
        names = ("initial_h", "initial_c")[:S]
        states = [self._state(s, n, D, Bn) for n, s in zip(names, init)]
        ys, finals = [], []
        for d, cell in enumerate(self.cells):
            reference = isinstance(cell, (ReferenceLSTM, ReferenceCell))
            p = native
            if reference:
                batch_major = batch_major or _batch_major_of(native)
                p = batch_major
            y, final = run_direction(cell, p, self._direction_state(states, d, Bn))
            if cell.go_backwards:  # processing order back to time order
                y = np.flip(y, axis=0 if p.time_major else 1)
            ys.append(y.transpose(1, 0, 2) if reference and x_time_major else y)
            finals.append(final)
        return ys, [[f[i] for f in finals] for i in range(S)]

    def _checked(self, X: Any, time_major: bool) -> np.ndarray:
        """X as a contiguous float32 array, in the given layout."""
        if X is None:
            raise ShapeError(f"{self._where}: input X is missing")
        x = np.asarray(X)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = "(seq, batch, input)" if time_major else "(batch, seq, input)"
            raise ShapeError(
                f"{self._where}: X has shape {x.shape}, expected {layout} with "
                f"input={self.input_size}"
            )
        if x.dtype.kind != "f":
            raise ShapeError(f"{self._where}: X has dtype {x.dtype}; floats expected")
        return np.ascontiguousarray(x, dtype=np.float32)

    def _state(self, s: Any, name: str, D: int, Bn: int) -> Any:
        """An initial state input as (D, batch, hidden) float32, or None."""
        if s is None:
            return None
        s = np.asarray(s, dtype=np.float32)
        tm = self.spec.time_major
        want = (D, Bn, self.hidden) if tm else (Bn, D, self.hidden)
        if s.shape != want:
            raise ShapeError(
                f"{self._where}: {name} has shape {s.shape}, expected {want}"
            )
        return s if tm else s.transpose(1, 0, 2)

    def _direction_state(self, states: list, d: int, Bn: int) -> tuple | None:
        """Direction d's initial states as fresh (batch, hidden) float32
        arrays (the kernel updates them in place), an omitted one zeros; or
        None when the node gives none."""
        if all(s is None for s in states):
            return None
        return tuple(
            np.zeros((Bn, self.hidden), np.float32)
            if s is None
            else np.array(s[d], np.float32, order="C")
            for s in states
        )


def _cell(spec: Any, nan_policy: str, time_major: bool, threads: int | None) -> Any:
    """The engine layer of one direction (reading X in the node's layout),
    or the float64 reference."""
    if isinstance(spec, ReferenceLSTMSpec):
        return ReferenceLSTM(spec)
    if isinstance(spec, ReferenceCellSpec):
        return ReferenceCell(spec)
    layer = CELL_LAYERS[type(spec)]
    return layer.from_spec(
        spec, time_major=time_major, nan_policy=nan_policy, threads=threads
    )


def _batch_major_of(p: Any) -> Any:
    """The same call's inputs batch-major (for the float64 reference)."""
    if not p.time_major:
        return p
    x = np.ascontiguousarray(p.x.transpose(1, 0, 2))
    q = prepare(x, p.batch, p.steps, False, None, None)
    q.lengths = p.lengths
    return q


def run_direction(cell: Any, p: Any, state: tuple | None) -> tuple:
    """(outputs in processing order, final states) of one direction; state:
    fresh float32 arrays of the right shapes, or None (zeros)."""
    if isinstance(cell, (ReferenceLSTM, ReferenceCell)):
        return cell.run_states(p, cell.make_state(state, p.batch))
    states = cell.make_state(None, p.batch) if state is None else state
    y, _ = cell.run_states(p, states, True)
    return y, states


def _stack(arrays: list, axis: int) -> np.ndarray:
    """np.stack, as a view for one array (one direction: no copy)."""
    if len(arrays) > 1:
        return np.stack(arrays, axis)
    return arrays[0][(slice(None),) * axis + (None,)]


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
