"""GRU and simple RNN layers and their stateful streams: recurrent layers
whose state is h alone, run by the C core's fl_layer (PackedLayer)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm._core import CHUNK_AUTO, PackedLayer
from fastlstm.activations import Activation
from fastlstm.engine.lstm import (
    Output,
    Prepared,
    StreamBase,
    output_buffers,
    prepare_call,
)
from fastlstm.engine.threads import ThreadChoice, check_threads
from fastlstm.errors import ConfigError, NonFiniteError, ShapeError, StreamError
from fastlstm.spec import GRUSpec, SimpleRNNSpec

__all__ = ["GRU", "SimpleRNN", "HiddenStateStream", "one_state"]

ArrayLike = Any

# From here on (a GRU of 210+ units, a simple RNN of 363+), 2 threads ran
# 1.3-1.9x faster than one at batch 1 and 16 (figures in
# benchmarks/results/gru_threads_2026-12-06.md).
CALL_THREADS_MIN_BYTES = 512 << 10


def one_state(value: Any, name: str) -> Any:
    """The h of an initial state given as h itself or as [h]."""
    if _inputs.is_sequence(value, 1):
        return value[0]
    if isinstance(value, (list, tuple)):
        raise ShapeError(f"{name} must be one array h (or a list [h])")
    return value


class _HiddenStateLayer(ThreadChoice):
    """What GRU and SimpleRNN share: a spec, a packed C layer, Keras-style
    calls (return_sequences, return_state, masks, lengths), threads and
    streams. Subclasses name their spec class and C kind."""

    spec_class: type = GRUSpec
    packed_kind = "gru"
    state_count = 1  # h; an LSTM has 2 (h, c)

    @classmethod
    def from_spec(
        cls,
        spec: Any,
        *,
        time_major: bool = False,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> Any:
        """Builds a layer from a validated spec (what loaders make)."""
        if not isinstance(spec, cls.spec_class):
            raise TypeError(
                f"spec must be a {cls.spec_class.__name__}, got {type(spec).__name__}"
            )
        layer = cls.__new__(cls)
        layer._setup(spec, time_major, nan_policy, threads)
        return layer

    @_inputs.reports_memory("the layer's weights")
    def _setup(
        self, spec: Any, time_major: bool, nan_policy: str, threads: int | None
    ) -> None:
        self._threads = check_threads(threads)
        if not isinstance(time_major, (bool, np.bool_)):
            raise ConfigError(f"time_major must be a bool, got {time_major!r}")
        self._spec = spec
        self._time_major = bool(time_major)
        self._nan_policy = _inputs.check_nan_policy(nan_policy)
        self._packed = PackedLayer(
            self.packed_kind,
            spec.kernel,
            spec.recurrent_kernel,
            spec.bias,
            spec.recurrent_bias,
            int(spec.activation),
            int(getattr(spec, "recurrent_activation", Activation.SIGMOID)),
            bool(getattr(spec, "reset_after", True)),
        )
        self._I, self._H = spec.input_size, spec.units

    def __reduce__(self) -> tuple:
        """Pickles the spec and options; unpickling packs the weights again."""
        return (
            _rebuild,
            (type(self), self._spec, self._time_major, self._nan_policy, self._threads),
        )

    spec = property(lambda self: self._spec)
    input_size = property(lambda self: self._I)
    units = property(lambda self: self._H)
    output_size = property(lambda self: self._H, doc="Width of h and of the outputs.")
    go_backwards = property(lambda self: self._spec.go_backwards)
    return_sequences = property(lambda self: self._spec.return_sequences)
    return_state = property(lambda self: self._spec.return_state)
    zero_output_for_mask = property(lambda self: self._spec.zero_output_for_mask)
    time_major = property(lambda self: self._time_major)
    nan_policy = property(lambda self: self._nan_policy)

    def __repr__(self) -> str:
        s = self._spec
        extras = ", go_backwards" if s.go_backwards else ""
        return (
            f"{type(self).__name__}(input_size={s.input_size}, units={s.units}"
            f"{extras}{self._repr_options()})"
        )

    def _repr_options(self) -> str:
        return f", activation={self._spec.activation.name.lower()}"

    # -- threads (ThreadChoice) ------------------------------------------------
    def _weight_bytes(self) -> int:
        """Bytes of the kernel and recurrent kernel ([Wx; Wh], float32)."""
        return 4 * self._spec.gates * self._H * (self._I + self._H)

    def _auto_call_threads(self, batch: int, steps: int) -> bool:
        """2 threads once the recurrent weights reach CALL_THREADS_MIN_BYTES
        and the call has 16 rows x steps: then each core keeping its part of
        them in its own cache repays the thread start and a barrier per
        step."""
        rec_bytes = 4 * self._spec.gates * self._H * self._H
        return rec_bytes >= CALL_THREADS_MIN_BYTES and batch * steps >= 16

    def _splits_stream(self, batch: int) -> bool:
        return True  # every batch: the parts split units, not rows

    @_inputs.reports_memory("the call's inputs, outputs or workspace")
    def __call__(
        self,
        x: ArrayLike,
        initial_state: ArrayLike | None = None,
        mask: ArrayLike | None = None,
        lengths: ArrayLike | None = None,
    ) -> Output:
        """Keras semantics: the last output (batch, units), or every output
        with ``return_sequences``; with ``return_state`` ``[output, h]``.
        ``initial_state`` is h (or [h])."""
        p = prepare_call(x, self.input_size, self._time_major, mask, lengths)
        (h,) = self.make_state(initial_state, p.batch)
        seq, last = self.run_states(p, (h,), self._spec.return_sequences)
        out = seq if self._spec.return_sequences else last
        return [out, h] if self._spec.return_state else out

    def make_state(
        self, initial_state: Any, batch: int, name: str = "initial_state"
    ) -> tuple[np.ndarray]:
        """(h,): zeros, or a checked copy of the given h (or [h])."""
        if initial_state is None:
            return (np.zeros((batch, self._H), np.float32),)
        h0 = one_state(initial_state, name)
        return (_inputs.state_input(h0, batch, self._H, name, self._nan_policy),)

    def run_states(
        self,
        p: Prepared,
        states: tuple,
        sequences: bool,
        seen: np.ndarray | None = None,
        y_last: np.ndarray | None = None,
        pool: Any = None,
    ) -> tuple[Any, Any]:
        """Runs the kernel, updating states[0] (h) and seen in place (its
        threads on `pool`'s workers, when given). Returns the output
        sequence (processing order) or None, and the last output or
        None."""
        (h,) = states
        y, y_last = output_buffers(p, self._H, sequences, y_last)
        try:
            self._packed.forward(
                p.x,
                not p.time_major,
                h,
                seen=seen,
                y=y,
                y_last=y_last,
                mask=p.mask,
                lengths=p.lengths,
                reverse=self._spec.go_backwards,
                zero_output=self._spec.zero_output_for_mask,
                check_finite=self._nan_policy == "raise",
                chunk_steps=CHUNK_AUTO,
                threads=self._threads_for(p.batch, p.steps),
                pool=pool,
            )
        except NonFiniteError:
            _inputs.raise_nonfinite(p.x, p.valid(), p.time_major, p.name)
        return y, y_last

    @_inputs.reports_memory("the stream's state and workspace")
    def stream(self, batch_size: int) -> HiddenStateStream:
        """A stateful stream over this layer for ``batch_size`` rows."""
        return HiddenStateStream(self, batch_size)


class GRU(_HiddenStateLayer):
    """One GRU layer, float32, Keras call semantics.

    Weights in the canonical layout (``fastlstm.GRUSpec``): ``kernel``
    (input_size, 3*units), ``recurrent_kernel`` (units, 3*units), ``bias``
    and ``recurrent_bias`` (3*units,), gate blocks z, r, n. ``reset_after``
    selects where the reset gate applies (True: PyTorch, Keras'
    default since TF 2)."""

    spec_class = GRUSpec
    packed_kind = "gru"

    def __init__(
        self,
        kernel: ArrayLike,
        recurrent_kernel: ArrayLike,
        bias: ArrayLike | None = None,
        recurrent_bias: ArrayLike | None = None,
        *,
        activation: str | Activation = "tanh",
        recurrent_activation: str | Activation = "sigmoid",
        reset_after: bool = True,
        go_backwards: bool = False,
        return_sequences: bool = False,
        return_state: bool = False,
        zero_output_for_mask: bool = False,
        time_major: bool = False,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> None:
        spec = GRUSpec.create(
            kernel,
            recurrent_kernel,
            bias,
            recurrent_bias,
            activation=activation,
            recurrent_activation=recurrent_activation,
            reset_after=reset_after,
            go_backwards=go_backwards,
            return_sequences=return_sequences,
            return_state=return_state,
            zero_output_for_mask=zero_output_for_mask,
        )
        self._setup(spec, time_major, nan_policy, threads)

    reset_after = property(lambda self: self._spec.reset_after)

    def _repr_options(self) -> str:
        s = self._spec
        return (
            f", reset_after={s.reset_after}, activation={s.activation.name.lower()}, "
            f"recurrent_activation={s.recurrent_activation.name.lower()}"
        )


class SimpleRNN(_HiddenStateLayer):
    """One simple (Elman) RNN layer, float32, Keras call semantics:
    h' = act(x @ kernel + bias + h @ recurrent_kernel + recurrent_bias)."""

    spec_class = SimpleRNNSpec
    packed_kind = "simple"

    def __init__(
        self,
        kernel: ArrayLike,
        recurrent_kernel: ArrayLike,
        bias: ArrayLike | None = None,
        recurrent_bias: ArrayLike | None = None,
        *,
        activation: str | Activation = "tanh",
        go_backwards: bool = False,
        return_sequences: bool = False,
        return_state: bool = False,
        zero_output_for_mask: bool = False,
        time_major: bool = False,
        nan_policy: str = "raise",
        threads: int | None = None,
    ) -> None:
        spec = SimpleRNNSpec.create(
            kernel,
            recurrent_kernel,
            bias,
            recurrent_bias,
            activation=activation,
            go_backwards=go_backwards,
            return_sequences=return_sequences,
            return_state=return_state,
            zero_output_for_mask=zero_output_for_mask,
        )
        self._setup(spec, time_major, nan_policy, threads)


def _rebuild(
    cls: type, spec: Any, time_major: bool, nan_policy: str, threads: int | None
) -> Any:
    """Unpickles a GRU or SimpleRNN (see __reduce__)."""
    return cls.from_spec(
        spec, time_major=time_major, nan_policy=nan_policy, threads=threads
    )


class HiddenStateStream(StreamBase):
    """Stateful inference over one GRU or SimpleRNN layer, as LSTMStream:
    ``step(x_t, mask=None, out=None)``, ``feed(x)``, ``reset()`` and
    ``state`` (h, (batch, units)). One stream per thread."""

    def __init__(self, layer: _HiddenStateLayer, batch_size: int) -> None:
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
        """Zeroes h (and forgets which rows have seen a valid step)."""
        with self.guard:
            self._h.fill(0.0)
            self._seen.fill(0)

    @property
    def state(self) -> np.ndarray:
        """A copy of h, (batch, units)."""
        with self.guard:
            return self._h.copy()

    @state.setter
    def state(self, value: ArrayLike) -> None:
        with self.guard:
            h0 = one_state(value, "state")
            self._h[...] = _inputs.state_input(
                h0, self._batch, self._layer.units, "state", self._layer.nan_policy
            )
            # as with initial_state=: masked steps before the first valid one
            # output zeros, not the state set here
            self._seen.fill(0)

    def feed(self, x: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
        """Runs a chunk of steps and returns the output of every step."""
        with self.guard:
            p = self._feed_prepared(x, mask)
            y, _ = self._layer.run_states(
                p, (self._h,), True, seen=self._seen, pool=self._pool
            )
        return y
