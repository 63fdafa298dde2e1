"""Model: runs a ModelSpec graph (what loaders build) with Keras semantics."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm._core import StreamGuard
from fastlstm.errors import DTypeError, FastLSTMError, ShapeError, StreamError
from fastlstm.keras_layers import (
    BidirectionalLayer,
    Carry,
    InputLayer,
    KerasFlavor,
    Layer,
    Recurrent,
    RunContext,
    build_layer,
)
from fastlstm.spec import ModelSpec, check_elements

__all__ = ["Model", "ModelStream"]

Inputs = Any  # one array, a list of arrays, or a dict name -> array


class Model:
    """A whole model (Sequential or functional graph), Keras semantics.

    ``predict(x)`` returns what Keras' ``predict`` returns: one array, or a
    list for several outputs. Stateless models are safe to share between
    threads; stateful ones (``stateful=True`` layers) keep per-row state
    across calls until ``reset_states()``.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.flavor = KerasFlavor.from_version(spec.keras_version, spec.source)
        self._layers: dict[str, Layer] = {}
        for ls in spec.layers:
            self._layers[ls.name] = build_layer(ls, self.flavor)
        used = {n.layer for n in spec.nodes}
        self._carries = {name: Carry([]) for name in self._stateful_names(used)}
        self._time_major = any(
            getattr(self._layers[n], "time_major", False)
            for n in used
            if isinstance(self._layers[n], Recurrent)
        )
        self._shapes: tuple[list, list] | None = None

    def __reduce__(self) -> tuple:
        """Pickles the spec (config and NumPy weights), never C pointers; the
        unpickled model is rebuilt from it. Like a Keras file, the state of
        stateful layers is not pickled: the copy starts from zeros."""
        return (Model, (self.spec,))

    def _stateful_names(self, used: set) -> list[str]:
        names = []
        for name in used:
            layer = self._layers[name]
            if isinstance(layer, Recurrent) and layer.stateful:
                names.append(name)
            elif isinstance(layer, BidirectionalLayer) and layer.stateful:
                names += [layer.forward.name, layer.backward.name]
        return names

    # -- description -----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def layers(self) -> list[Layer]:
        return list(self._layers.values())

    @property
    def input_names(self) -> list[str]:
        return [r.layer for r in self.spec.inputs]

    @property
    def inputs(self) -> list[tuple]:
        """Declared shape of each input; None where any size is accepted."""
        return [tuple(s) if s is not None else None for s in self.spec.input_shapes]

    @property
    def outputs(self) -> list[tuple]:
        """Shape of each output; None where it depends on the input."""
        return self._infer_shapes()[1]

    def count_params(self) -> int:
        return sum(layer.param_count() for layer in self._layers.values())

    def __repr__(self) -> str:
        return (
            f"<fastlstm.Model {self.name!r}: {len(self._layers)} layers, "
            f"{self.count_params()} parameters, from {self.spec.source_format}>"
        )

    # -- inference ---------------------------------------------------------------
    @_inputs.reports_memory("the model's inputs, outputs or intermediate arrays")
    def predict(self, x: Inputs, batch_size: int | None = None) -> Any:
        """Runs the model; splits the batch into ``batch_size`` pieces if given
        (stateful layers carry state from piece to piece, as in Keras)."""
        arrays = self._input_arrays(x)
        n = arrays[0].shape[1 if self._time_major else 0]
        if batch_size is not None:
            batch_size = _inputs.batch_size_input(batch_size)
        if batch_size is None or batch_size >= n or self._time_major:
            outs = self._run(arrays, RunContext(self._carries))
        else:
            parts = [
                self._run(
                    [a[s : s + batch_size] for a in arrays], RunContext(self._carries)
                )
                for s in range(0, n, batch_size)
            ]
            outs = [
                np.concatenate([p[i] for p in parts], axis=0)
                for i in range(len(parts[0]))
            ]
        return self._structured(outs)

    def _structured(self, outs: list) -> Any:
        """Outputs nested as Keras returns them; a single output unwrapped."""
        structure = self.spec.output_structure

        def nest(st):
            return outs[st] if isinstance(st, int) else [nest(s) for s in st]

        result = outs if structure is None else nest(structure)
        if isinstance(result, list) and len(result) == 1:
            return result[0]
        return result

    __call__ = predict

    def reset_states(self) -> None:
        """Forgets the state of stateful layers (zeros at the next call)."""
        for carry in self._carries.values():
            carry.states.clear()

    @_inputs.reports_memory("the stream's state")
    def stream(self, batch_size: int) -> ModelStream:
        """Step-by-step streaming through the model (recurrent state kept)."""
        return ModelStream(self, batch_size)

    def _input_arrays(self, x: Inputs, streaming: bool = False) -> list[np.ndarray]:
        """Checked input arrays. A stream feeds pieces of the sequence, so
        there the declared time length (axis 1 of 3-D inputs) is not
        enforced."""
        names = self.input_names
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise ShapeError(
                    f"inputs by name: missing {missing}, unknown {extra}; "
                    f"the model's inputs are {names}"
                )
            items = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(names) > 1:
            items = list(x)
        else:
            items = [x]
        if len(items) != len(names):
            raise ShapeError(
                f"the model takes {len(names)} inputs {names}, got {len(items)}"
            )
        arrays = []
        for name, item, shape in zip(names, items, self.spec.input_shapes):
            try:
                arr = np.asarray(item)
            except Exception as exc:  # ragged lists and other oddities
                raise DTypeError(
                    f"input {name!r} cannot be read as an array: {exc}"
                ) from exc
            check_elements(arr.shape, f"input {name!r}")
            if arr.dtype.kind not in "fiub":
                raise ShapeError(
                    f"input {name!r} has dtype {arr.dtype}; numbers expected"
                )
            if shape is not None:
                free = {0, 1} if streaming and len(shape) == 3 else {0}
                if arr.ndim != len(shape) or any(
                    d is not None and k not in free and d != s
                    for k, (d, s) in enumerate(zip(shape, arr.shape))
                ):
                    raise ShapeError(
                        f"input {name!r} has shape {arr.shape} but the model "
                        f"expects {tuple(shape)} (None = any size)"
                    )
            if arr.size == 0:
                raise ShapeError(f"input {name!r} is empty: shape {arr.shape}")
            arrays.append(arr)
        batches = {a.shape[0] for a in arrays} if not self._time_major else set()
        if len(batches) > 1:
            raise ShapeError(f"inputs have different batch sizes: {sorted(batches)}")
        return arrays

    def _run(
        self, arrays: list[np.ndarray], ctx: RunContext, record: dict | None = None
    ) -> list[np.ndarray]:
        """Evaluates the graph; ``record`` (if given) collects each node's
        output shapes."""
        values: dict[tuple, tuple] = {}
        for ref, arr in zip(self.spec.inputs, arrays):
            values[(ref.layer, ref.node, ref.tensor)] = (arr, None)
        for node in self.spec.nodes:
            layer = self._layers[node.layer]
            if isinstance(layer, InputLayer):
                if (node.layer, 0, 0) not in values:
                    raise ShapeError(f"input layer {node.layer!r} got no value")
                continue
            got = [values[(r.layer, r.node, r.tensor)] for r in node.inputs]
            xs = [v[0] for v in got]
            ms = [v[1] for v in got] if self.spec.implicit_masks else [None] * len(got)
            if node.mask is not None:
                mask = values[(node.mask.layer, node.mask.node, node.mask.tensor)][0]
                ms = [np.asarray(mask, bool)] + ms[1:]
            if node.initial_state:
                xs += [
                    values[(r.layer, r.node, r.tensor)][0] for r in node.initial_state
                ]
            try:
                outs, masks = layer.call(xs, ms, node, ctx)
            except FastLSTMError as exc:
                if f"{node.layer!r}" in str(exc):
                    raise
                raise type(exc)(
                    f"layer {node.layer!r} ({layer.class_name}): {exc}"
                ) from None
            for i, (o, m) in enumerate(zip(outs, masks)):
                values[(node.layer, node.index, i)] = (o, m)
            if record is not None:
                record[(node.layer, node.index)] = [np.shape(o) for o in outs]
        if record is not None:
            for ref, a in zip(self.spec.inputs, arrays):
                record[(ref.layer, 0)] = [a.shape]
        return [values[(r.layer, r.node, r.tensor)][0] for r in self.spec.outputs]

    # -- summary -------------------------------------------------------------
    def _infer_shapes(self) -> tuple[list, list]:
        """(per-node output shapes, model output shapes) from two dry runs that
        differ in time length: sizes that change are shown as None."""
        if self._shapes is not None:
            return self._shapes
        runs = []
        for t in (2, 3):
            arrays = []
            for shape in self.spec.input_shapes:
                dims = list(shape) if shape is not None else [None, None, 1]
                dims = [1] + [t if d is None else d for d in dims[1:]]
                arrays.append(np.ones(dims, np.float32))
            recorded: dict = {}
            ctx = RunContext({name: Carry([]) for name in self._carries})
            try:
                outs = self._run(arrays, ctx, recorded)
            except FastLSTMError:
                self._shapes = ({}, [None] * len(self.spec.outputs))
                return self._shapes
            runs.append((recorded, [o.shape for o in outs]))

        def merge(a, b):
            if a is None or b is None or len(a) != len(b):
                return None
            return (None,) + tuple(x if x == y else None for x, y in zip(a[1:], b[1:]))

        per_node = {
            k: [merge(a, b) for a, b in zip(v, runs[1][0][k])]
            for k, v in runs[0][0].items()
        }
        outs = [merge(a, b) for a, b in zip(runs[0][1], runs[1][1])]
        self._shapes = (per_node, outs)
        return self._shapes

    def summary(self, print_fn: Callable[[str], Any] | None = None) -> str:
        """Prints (and returns) a Keras-style table of layers, output shapes
        and parameter counts."""
        per_node, _ = self._infer_shapes()
        rows = []
        for node in self.spec.nodes:
            layer = self._layers[node.layer]
            shapes = per_node.get((node.layer, node.index))
            if shapes is None:
                text = "?"
            elif len(shapes) == 1:
                text = _fmt_shape(shapes[0])
            else:
                text = "[" + ", ".join(_fmt_shape(s) for s in shapes) + "]"
            label = node.layer + ("" if node.index == 0 else f"[{node.index}]")
            rows.append(
                (
                    f"{label} ({layer.class_name})",
                    text,
                    str(layer.param_count()) if node.index == 0 else "0",
                )
            )
        width = [
            max(28, *(len(r[0]) + 1 for r in rows)),
            max(26, *(len(r[1]) + 1 for r in rows)),
            12,
        ]
        out = io.StringIO()
        line = "_" * sum(width)
        out.write(f'Model: "{self.name}"\n{line}\n')
        out.write(f"{'Layer (type)':<{width[0]}}{'Output Shape':<{width[1]}}Param #\n")
        out.write("=" * sum(width) + "\n")
        for i, (a, b, c) in enumerate(rows):
            out.write(f"{a:<{width[0]}}{b:<{width[1]}}{c}\n")
            out.write(("=" if i == len(rows) - 1 else "_") * sum(width) + "\n")
        total = self.count_params()
        out.write(
            f"Total params: {total:,}\nTrainable params: {total:,}\n"
            "Non-trainable params: 0\n"
        )
        text = out.getvalue()
        (print_fn or print)(text.rstrip("\n"))
        return text


def _fmt_shape(shape) -> str:
    if shape is None:
        return "?"
    return (
        "("
        + ", ".join("None" if d is None else str(d) for d in shape)
        + ("," if len(shape) == 1 else "")
        + ")"
    )


class ModelStream:
    """Feeds a model step by step (or chunk by chunk) keeping recurrent state.

    Needs every layer on the path to work one step at a time: recurrent
    layers that run forward, and per-step layers (Dense, Activation,
    Embedding, Masking, merges...). Bidirectional and go_backwards layers, and
    Flatten/Reshape/RepeatVector, need the whole sequence and are refused.
    """

    def __init__(self, model: Model, batch_size: int) -> None:
        for node in model.spec.nodes:
            layer = model._layers[node.layer]
            if not layer.supports_streaming:
                raise StreamError(
                    f"layer {layer.name!r} ({layer.class_name}) cannot stream: it "
                    "needs the whole sequence before its first output"
                )
        if model._time_major:
            raise StreamError("time-major models cannot stream")
        self._model = model
        self._batch = _inputs.batch_size_input(batch_size)
        names = [
            n for n, layer in model._layers.items() if isinstance(layer, Recurrent)
        ]
        self._ctx = RunContext({n: Carry([]) for n in names})
        # held for a whole step or chunk through every layer
        self._guard = StreamGuard()

    batch_size = property(lambda self: self._batch)

    def __reduce_ex__(self, protocol: object) -> tuple:
        from fastlstm.lstm import refuse_pickle

        refuse_pickle(self)

    def reset(self) -> None:
        with self._guard:
            for carry in self._ctx.carries.values():
                carry.states.clear()

    def _run_flat(self, x: Inputs) -> list:
        """Runs a chunk (batch, time, ...) per input; returns the outputs."""
        arrays = self._model._input_arrays(x, streaming=True)
        if arrays[0].shape[0] != self._batch:
            raise ShapeError(
                f"batch size {arrays[0].shape[0]} but the stream was made "
                f"for {self._batch}"
            )
        return self._model._run(arrays, self._ctx)

    def feed(self, x: Inputs) -> Any:
        """Runs a chunk (batch, time, ...) per input; returns the outputs."""
        with self._guard:
            return self._model._structured(self._run_flat(x))

    def step(self, x: Inputs) -> Any:
        """Runs one time step: each input (batch, ...) without the time axis."""

        with self._guard:
            return self._step(x)

    def _step(self, x: Inputs) -> Any:
        def add_time(a):
            return np.asarray(a)[:, None]

        if isinstance(x, dict):
            xs: Any = {k: add_time(v) for k, v in x.items()}
        elif isinstance(x, (list, tuple)) and len(self._model.input_names) > 1:
            xs = [add_time(v) for v in x]
        else:
            xs = add_time(x)
        flat = self._run_flat(xs)
        flat = [o[:, 0] if o.ndim >= 3 and o.shape[1] == 1 else o for o in flat]
        return self._model._structured(flat)
