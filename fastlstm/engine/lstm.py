"""The public LSTM layer and its stateful stream."""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from fastlstm import _inputs
from fastlstm._core import CHUNK_AUTO, PackedLSTM, StreamCore
from fastlstm.activations import Activation
from fastlstm.engine.threads import ThreadChoice, check_threads
from fastlstm.errors import ConfigError, NonFiniteError, ShapeError, StreamError
from fastlstm.spec import LSTMSpec, check_elements

__all__ = ["LSTM", "LSTMStream", "StreamBase", "output_buffers"]

ArrayLike = Any
Output = Union[np.ndarray, list]


class LSTM(ThreadChoice):
    """One LSTM layer, Keras semantics, float32.

    Weights use the canonical layout (see ``fastlstm.spec``): ``kernel``
    (input_size, 4*units), ``recurrent_kernel`` (units or proj_size,
    4*units), ``bias`` (4*units,), gate blocks in the order i, f, g, o.

    Calling ``layer(x)`` with x of shape (batch, time, features) (or
    (time, batch, features) with ``time_major=True``) returns the outputs as
    Keras does: the last output (batch, R), or all outputs (batch, time, R)
    with ``return_sequences``; with ``return_state`` a list ``[output, h, c]``.
    """

    @_inputs.reports_memory("the LSTM's weights")
    def __init__(
        self,
        kernel: ArrayLike,
        recurrent_kernel: ArrayLike,
        bias: ArrayLike | None = None,
        *,
        activation: str | Activation = "tanh",
        recurrent_activation: str | Activation = "sigmoid",
        peepholes: ArrayLike | None = None,
        projection: ArrayLike | None = None,
        cell_clip: float | None = None,
        proj_clip: float | None = None,
        go_backwards: bool = False,
        return_sequences: bool = False,
        return_state: bool = False,
        zero_output_for_mask: bool = False,
        time_major: bool = False,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> None:
        spec = LSTMSpec.create(
            kernel,
            recurrent_kernel,
            bias,
            peepholes=peepholes,
            projection=projection,
            activation=activation,
            recurrent_activation=recurrent_activation,
            cell_clip=cell_clip,
            proj_clip=proj_clip,
            go_backwards=go_backwards,
            return_sequences=return_sequences,
            return_state=return_state,
            zero_output_for_mask=zero_output_for_mask,
        )
        self._setup(spec, time_major, nan_policy, threads)

    @classmethod
    def from_spec(
        cls,
        spec: LSTMSpec,
        *,
        time_major: bool = False,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> LSTM:
        """Builds a layer from a validated ``LSTMSpec`` (what loaders make)."""
        if not isinstance(spec, LSTMSpec):
            raise TypeError(f"spec must be an LSTMSpec, got {type(spec).__name__}")
        layer = cls.__new__(cls)
        layer._setup(spec, time_major, nan_policy, threads)
        return layer

    def _setup(
        self, spec: LSTMSpec, time_major: bool, nan_policy: str, threads: int | None
    ) -> None:
        self._threads = check_threads(threads)
        if not isinstance(time_major, (bool, np.bool_)):
            raise ConfigError(f"time_major must be a bool, got {time_major!r}")
        self._spec = spec
        self._time_major = bool(time_major)
        self._nan_policy = _inputs.check_nan_policy(nan_policy)
        self._packed = PackedLSTM(
            spec.kernel,
            spec.recurrent_kernel,
            spec.bias,
            spec.peepholes,
            spec.projection,
            int(spec.activation),
            int(spec.recurrent_activation),
            spec.cell_clip,
            spec.proj_clip,
        )
        # sizes as plain ints: every call reads them (spec's are computed)
        self._I, self._H = spec.input_size, spec.units
        self._P, self._R = spec.proj_size, spec.output_size

    def __reduce__(self) -> tuple:
        """Pickles the spec (NumPy weights) and options, never the packed C
        weights: unpickling packs them again, so outputs are bit-identical."""
        return (
            _rebuild_lstm,
            (self._spec, self._time_major, self._nan_policy, self._threads),
        )

    # -- description ---------------------------------------------------------
    spec = property(lambda self: self._spec, doc="The layer's LSTMSpec.")
    input_size = property(lambda self: self._I)
    units = property(lambda self: self._H)
    proj_size = property(lambda self: self._P)
    output_size = property(
        lambda self: self._R, doc="Width of h and of each output step."
    )
    go_backwards = property(lambda self: self._spec.go_backwards)
    return_sequences = property(lambda self: self._spec.return_sequences)
    return_state = property(lambda self: self._spec.return_state)
    zero_output_for_mask = property(lambda self: self._spec.zero_output_for_mask)
    time_major = property(lambda self: self._time_major)
    nan_policy = property(lambda self: self._nan_policy)

    def __repr__(self) -> str:
        s = self._spec
        extras = [f"proj_size={s.proj_size}"] if s.proj_size else []
        if s.peepholes is not None:
            extras.append("peepholes")
        if s.go_backwards:
            extras.append("go_backwards")
        return (
            f"LSTM(input_size={s.input_size}, units={s.units}"
            + "".join(", " + e for e in extras)
            + f", activation={s.activation.name.lower()}, "
            f"recurrent_activation={s.recurrent_activation.name.lower()})"
        )

    # -- stateless inference -------------------------------------------------
    @_inputs.reports_memory("the call's inputs, outputs or workspace")
    def __call__(
        self,
        x: ArrayLike,
        initial_state: tuple[ArrayLike, ArrayLike] | None = None,
        mask: ArrayLike | None = None,
        lengths: ArrayLike | None = None,
    ) -> Output:
        p = prepare_call(x, self.input_size, self._time_major, mask, lengths)
        h, c = self.make_state(initial_state, p.batch)
        seq, last = self.run_prepared(p, h, c, self._spec.return_sequences)
        out = seq if self._spec.return_sequences else last
        return [out, h, c] if self._spec.return_state else out

    def make_state(
        self, initial_state: Any, batch: int, name: str = "initial_state"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fresh (h, c) arrays: zeros, or checked copies of a given pair."""
        R, H = self._R, self._H
        if initial_state is None:
            return (np.zeros((batch, R), np.float32), np.zeros((batch, H), np.float32))
        h0, c0 = _inputs.pair_input(initial_state, name)
        return (
            _inputs.state_input(h0, batch, R, f"{name}[0] (h)", self._nan_policy),
            _inputs.state_input(c0, batch, H, f"{name}[1] (c)", self._nan_policy),
        )

    state_count = 2  # (h, c)

    def run_states(
        self,
        p: Prepared,
        states: tuple,
        sequences: bool,
        seen: np.ndarray | None = None,
        y_last: np.ndarray | None = None,
    ) -> tuple[Any, Any]:
        """run_prepared with the states as one tuple (h, c): the call every
        recurrent layer kind offers."""
        h, c = states
        return self.run_prepared(p, h, c, sequences, seen=seen, y_last=y_last)

    def run_prepared(
        self,
        p: Prepared,
        h: np.ndarray,
        c: np.ndarray,
        sequences: bool,
        seen: np.ndarray | None = None,
        work: np.ndarray | None = None,
        y_last: np.ndarray | None = None,
        pool: Any = None,
    ) -> tuple[Any, Any]:
        """Runs the kernel; updates h, c (and seen) in place. Returns the
        output sequence (layout of x, processing order) or None, and the
        last output or None."""
        y, y_last = output_buffers(p, self._R, sequences, y_last)
        try:
            self._packed.forward(
                p.x,
                not p.time_major,
                h,
                c,
                seen=seen,
                y=y,
                y_last=y_last,
                mask=p.mask,
                lengths=p.lengths,
                reverse=self._spec.go_backwards,
                zero_output=self._spec.zero_output_for_mask,
                check_finite=self._nan_policy == "raise",
                chunk_steps=CHUNK_AUTO,
                work=work,
                threads=self._threads_for(p.batch, p.steps),
                pool=pool,
            )
        except NonFiniteError:
            _inputs.raise_nonfinite(p.x, p.valid(), p.time_major, p.name)
        return y, y_last

    def _weight_bytes(self) -> int:
        """Bytes of the kernel and recurrent kernel ([Wx; Wh], float32)."""
        return 16 * self._H * (self._I + self._R)

    def _auto_call_threads(self, batch: int, steps: int) -> bool:
        """Only batch 1 without projection splits (each core keeps its share
        of the recurrent weights in its own cache); 2 threads where that
        pays (units >= 256, >= 16 steps), so small layers never get
        slower."""
        return batch == 1 and not self._P and self._H >= 256 and steps >= 16

    def _splits_stream(self, batch: int) -> bool:
        return batch == 1 and not self._P

    # -- stateful inference --------------------------------------------------
    @_inputs.reports_memory("the stream's state and workspace")
    def stream(self, batch_size: int) -> LSTMStream:
        """A stateful stream over this layer for ``batch_size`` rows."""
        return LSTMStream(self, batch_size)


def _rebuild_lstm(
    spec: LSTMSpec, time_major: bool, nan_policy: str, threads: int | None
) -> LSTM:
    """Unpickles an LSTM (see LSTM.__reduce__)."""
    return LSTM.from_spec(
        spec, time_major=time_major, nan_policy=nan_policy, threads=threads
    )


def refuse_pickle(obj: object) -> None:
    """Raises the TypeError every stream gives to pickle."""
    raise TypeError(
        f"{type(obj).__name__} cannot be pickled: a stream holds running state "
        "tied to this process. Pickle the model and create a new stream from it "
        "(copy the state across with stream.state if needed)"
    )


class Prepared:
    """Validated call inputs in the layout the kernel reads."""

    __slots__ = ("x", "batch", "steps", "mask", "lengths", "time_major", "name")

    def __init__(
        self,
        x: np.ndarray,
        batch: int,
        steps: int,
        mask: np.ndarray | None,
        lengths: np.ndarray | None,
        time_major: bool,
        name: str = "x",
    ) -> None:
        self.x, self.batch, self.steps = x, batch, steps
        self.mask, self.lengths, self.time_major = mask, lengths, time_major
        self.name = name  # what x is, for error messages

    def with_input(self, x: np.ndarray, name: str) -> Prepared:
        """The same call's mask and lengths over another input (the output of
        the previous layer or cell, same batch and steps)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return Prepared(
            x, self.batch, self.steps, self.mask, self.lengths, self.time_major, name
        )

    def flipped(self, x: np.ndarray) -> np.ndarray:
        """x reversed along the time axis (processing order <-> time order)."""
        return np.ascontiguousarray(np.flip(x, axis=0 if self.time_major else 1))

    def valid(self) -> np.ndarray | None:
        """Boolean (same layout as x's first two axes) of the steps that run."""
        if self.mask is None and self.lengths is None:
            return None
        shape = self.x.shape[:2]
        valid = np.ones(shape, bool) if self.mask is None else self.mask.astype(bool)
        if self.lengths is not None:
            t = np.arange(self.steps)
            inside = t[None, :] < self.lengths[:, None]  # (batch, time)
            valid &= inside.T if self.time_major else inside
        return valid


def output_buffers(
    p: Prepared, width: int, sequences: bool, y_last: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(y, y_last) a recurrent kernel writes: every step's outputs (x's
    layout) when ``sequences``, else the last step's (the caller's, if
    given)."""
    if sequences:
        check_elements(p.x.shape[:2] + (width,), "the output sequence")
        return np.empty(p.x.shape[:2] + (width,), np.float32), y_last
    if y_last is None:
        y_last = np.empty((p.batch, width), np.float32)
    return None, y_last


def prepare_call(
    x: Any, input_size: int, time_major: bool, mask: Any, lengths: Any
) -> Prepared:
    """Checks and converts a sequence call's x, mask and lengths."""
    xs, B, T = _inputs.sequence_input(x, input_size, time_major)
    return prepare(xs, B, T, time_major, mask, lengths)


def prepare(
    x: np.ndarray,
    B: int,
    T: int,
    time_major: bool,
    mask: Any,
    lengths: Any,
    lengths_name: str = "lengths",
) -> Prepared:
    m = None
    if mask is not None:
        m = _inputs.mask_input(mask, (T, B) if time_major else (B, T), time_major)
    ln = None
    if lengths is not None:
        ln = _inputs.lengths_input(lengths, B, T, lengths_name)
    return Prepared(x, B, T, m, ln, time_major)


class StreamBase(StreamCore):
    """What every layer's stream shares around StreamCore's C step: the
    layer, the batch size, pickling refused, and the slow paths of
    StreamCore.step (conversions and error messages)."""

    _layer: Any
    _batch: int

    layer = property(lambda self: self._layer)
    batch_size = property(lambda self: self._batch)

    def __reduce_ex__(self, protocol: object) -> tuple:
        refuse_pickle(self)

    def _step_input(self, x: ArrayLike) -> np.ndarray:
        return _inputs.step_input(x, self._layer.input_size, self._batch)

    def _step_mask(self, mask: ArrayLike) -> np.ndarray:
        return _inputs.mask_input(mask, (self._batch,), False)

    def _raise_nonfinite(self, x: np.ndarray, mask: ArrayLike | None) -> None:
        valid = None
        if mask is not None:
            valid = self._step_mask(mask).astype(bool).reshape(self._batch, 1)
        _inputs.raise_nonfinite(x.reshape(self._batch, 1, -1), valid, False)

    def _feed_prepared(self, x: ArrayLike, mask: ArrayLike | None) -> Prepared:
        """A chunk of steps checked against the stream's layer and batch."""
        layer = self._layer
        xs, B, T = _inputs.sequence_input(x, layer.input_size, layer.time_major)
        if B != self._batch:
            raise ShapeError(
                f"x has batch size {B} but the stream was made for {self._batch}"
            )
        return prepare(xs, B, T, layer.time_major, mask, None)


class LSTMStream(StreamBase):
    """Stateful inference over one LSTM layer: feed a sequence in pieces.

    ``step(x_t, mask=None, out=None)`` takes one step (batch, features) and
    returns (batch, R) (written into ``out`` if given: no allocation);
    ``feed(x)`` takes a chunk (batch, time, features) (time-major if the
    layer is) and returns every step's output. Feeding a sequence in chunks
    of any sizes gives the outputs of one stateless call. A stream holds
    mutable state: use one per thread (concurrent use raises StreamError).
    ``step`` is implemented in fastlstm._core.StreamCore.
    """

    def __init__(self, layer: LSTM, batch_size: int) -> None:
        if layer.go_backwards:
            raise StreamError(
                "a go_backwards layer cannot stream: it needs the whole "
                "sequence before its first step"
            )
        self._layer = layer
        self._batch = _inputs.batch_size_input(batch_size)
        self._init_core(
            layer._packed,
            self._batch,
            layer.zero_output_for_mask,
            layer.nan_policy == "raise",
            layer._stream_threads(self._batch),
        )

    def reset(self) -> None:
        """Zeroes h and c (and forgets which rows have seen a valid step)."""
        with self.guard:
            self._h.fill(0.0)
            self._c.fill(0.0)
            self._seen.fill(0)

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (h, c): (batch, R) and (batch, units)."""
        with self.guard:
            return self._h.copy(), self._c.copy()

    @state.setter
    def state(self, value: tuple[ArrayLike, ArrayLike]) -> None:
        with self.guard:
            h0, c0 = _inputs.pair_input(value, "state")
            policy = self._layer.nan_policy
            h = _inputs.state_input(
                h0, self._batch, self._layer.output_size, "state[0] (h)", policy
            )
            c = _inputs.state_input(
                c0, self._batch, self._layer.units, "state[1] (c)", policy
            )
            self._h[...] = h
            self._c[...] = c
            # as with initial_state=: masked steps before the first valid one
            # output zeros, not the state set here
            self._seen.fill(0)

    def feed(self, x: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
        """Runs a chunk of steps and returns the output of every step."""
        with self.guard:
            p = self._feed_prepared(x, mask)
            y, _ = self._layer.run_prepared(
                p, self._h, self._c, True, seen=self._seen, pool=self._pool
            )
        return y
