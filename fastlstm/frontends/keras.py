"""Keras-shaped model: ``predict``, ``summary``, ``reset_states`` and
streams over a ModelSpec graph run by the engine."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from fastlstm import _inputs
from fastlstm.engine.graph import Graph
from fastlstm.engine.layers import Layer
from fastlstm.engine.model_stream import ModelStream
from fastlstm.errors import (
    ConfigError,
    FastLSTMError,
    PrecisionWarning,
    ShapeError,
)
from fastlstm.loaders.keras_weights import keras_weights
from fastlstm.model_spec import ModelSpec

__all__ = ["LayerView", "Model", "ModelStream"]  # ModelStream: engine.model_stream

Inputs = Any  # one array, a list of arrays, or a dict name -> array


class Model:
    """A whole model (Sequential or functional graph), Keras semantics.

    ``predict(x)`` returns what Keras' ``predict`` returns: one array, or a
    list for several outputs. Stateless models are safe to share between
    threads; stateful ones (``stateful=True`` layers) keep per-row state
    across calls until ``reset_states()``.
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None) -> None:
        self.spec = spec
        self._graph = Graph(spec, threads=threads)
        self._ctx = self._graph.context()
        self._shapes: tuple[dict, list] | None = None
        note = self.precision_note
        if note:
            warnings.warn(f"{spec.source or 'model'}: {note}", PrecisionWarning, 2)

    @property
    def precision_note(self) -> str:
        """What fastlstm computes in, for a model saved under a Keras
        mixed-precision policy ('' otherwise)."""
        policy = self.spec.conventions.get("mixed_precision")
        if not policy:
            return ""
        half = policy.split("_", 1)[-1]
        return (
            f"saved under the {policy} policy, runs in float32: outputs differ "
            f"from Keras' {half} outputs by about {half} rounding"
        )

    def __reduce__(self) -> tuple:
        """Pickles the spec (config and NumPy weights), never C pointers; the
        unpickled model is rebuilt from it. Like a Keras file, the state of
        stateful layers is not pickled: the copy starts from zeros."""
        return (_rebuild, (self.spec, self.threads))

    threads = property(
        lambda self: self._graph.threads,
        doc="The threads= option (None: automatic, see fastlstm.get_num_threads).",
    )

    # -- description -----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def layers(self) -> list[LayerView]:
        """The layers in the model's order, as Keras lists them."""
        return [LayerView(layer) for layer in self._graph.layers.values()]

    def get_layer(self, name: str | None = None, index: int | None = None) -> LayerView:
        """Keras' ``get_layer``: by name, or by index into ``layers``."""
        if (name is None) == (index is None):
            raise ConfigError("get_layer: give name= or index=, one of them")
        layers = self.layers
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, int):
                raise ConfigError(f"get_layer: index must be an integer, got {index!r}")
            if not -len(layers) <= index < len(layers):
                raise ConfigError(
                    f"get_layer: index {index} out of range for {len(layers)} layers"
                )
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ConfigError(
            f"get_layer: no layer named {name!r}; the layers are "
            f"{[layer.name for layer in layers]}"
        )

    def get_weights(self) -> list[np.ndarray]:
        """Keras' ``get_weights``: every layer's arrays in Keras' order and
        shapes (copies), which Keras' ``set_weights`` takes back."""
        return [w for layer in self.layers for w in layer.get_weights()]

    @property
    def input_names(self) -> list[str]:
        return self._graph.input_names

    @property
    def inputs(self) -> list[tuple]:
        """Declared shape of each input; None where any size is accepted."""
        return [tuple(s) if s is not None else None for s in self.spec.input_shapes]

    @property
    def outputs(self) -> list[tuple]:
        """Shape of each output; None where it depends on the input."""
        return self._infer_shapes()[1]

    @property
    def input_shape(self) -> Any:
        """Keras' ``input_shape``: the input's shape (None = any size), a
        list of them for several inputs."""
        shapes = self.inputs
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self) -> Any:
        """Keras' ``output_shape``, likewise."""
        shapes = self.outputs
        return shapes[0] if len(shapes) == 1 else shapes

    def count_params(self) -> int:
        return sum(layer.param_count() for layer in self._graph.layers.values())

    def __repr__(self) -> str:
        return (
            f"<fastlstm.Model {self.name!r}: {len(self._graph.layers)} layers, "
            f"{self.count_params()} parameters, from {self.spec.source_format}>"
        )

    # -- inference ---------------------------------------------------------------
    @_inputs.reports_memory("the model's inputs, outputs or intermediate arrays")
    def predict(
        self,
        x: Inputs,
        batch_size: int | None = None,
        verbose: Any = "auto",
        steps: int | None = None,
        callbacks: Any = None,
    ) -> Any:
        """Runs the model, as Keras' ``predict``: splits the batch into
        ``batch_size`` pieces if given (stateful layers carry state from
        piece to piece, as in Keras); ``steps`` runs only the first
        ``steps`` pieces (of ``batch_size``, default 32, rows). ``verbose``
        and ``callbacks`` are accepted and ignored (nothing to report, no
        training loop to call back into). An empty batch gives empty
        outputs of the right shapes."""
        graph = self._graph
        arrays = graph.input_arrays(x, empty_batch=True)
        if batch_size is not None:
            batch_size = _inputs.batch_size_input(batch_size)
        if steps is not None:
            steps = _inputs.batch_size_input(steps, "steps")
            rows = steps * (batch_size or 32)
            arrays = [a[:rows] for a in arrays] if not graph.time_major else arrays
        return graph.structured(self._run(arrays, batch_size))

    def _run(self, arrays: list, batch_size: int | None, masks: Any = None) -> list:
        graph = self._graph
        n = arrays[0].shape[1 if graph.time_major else 0]
        if n == 0:  # Keras gives empty outputs: shapes from a one-row run
            one = [np.zeros((1,) + a.shape[1:], a.dtype) for a in arrays]
            return [o[:0] for o in graph.run(one, graph.context([]))]
        if batch_size is None or batch_size >= n or graph.time_major or masks:
            return graph.run(arrays, self._ctx, masks=masks)
        parts = [
            graph.run([a[s : s + batch_size] for a in arrays], self._ctx)
            for s in range(0, n, batch_size)
        ]
        return [
            np.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0]))
        ]

    def predict_on_batch(self, x: Inputs) -> Any:
        """Keras' ``predict_on_batch``: the whole batch in one call."""
        return self.predict(x)

    @_inputs.reports_memory("the model's inputs, outputs or intermediate arrays")
    def __call__(self, x: Inputs, training: Any = False, mask: Any = None) -> Any:
        """Keras' ``model(x, training=False, mask=None)``: ``mask`` (one per
        input, (batch, time) booleans) is the inputs' own mask, which the
        first layers take as Keras gives it them. fastlstm runs inference
        only: ``training=True`` is refused."""
        if training not in (False, None, 0):
            raise ConfigError(
                "training=True: fastlstm runs inference only (dropout and other "
                "training behaviour are not applied); call with training=False"
            )
        graph = self._graph
        arrays = graph.input_arrays(x, empty_batch=True)
        return graph.structured(
            self._run(arrays, None, self._input_masks(mask, arrays))
        )

    def _input_masks(self, mask: Any, arrays: list) -> list | None:
        """The masks of ``model(x, mask=...)``, one per input, checked."""
        if mask is None:
            return None
        if not self.spec.implicit_masks:
            raise ConfigError(
                "mask=: this model's file records every mask its layers take "
                "(a Keras 3 functional model), so a mask given at the call has "
                "no layer to go to; put a Masking layer in the model, or pass "
                "lengths through a mask input"
            )
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask]
        if len(masks) != len(arrays):
            raise ShapeError(f"mask: one per input ({len(arrays)}), got {len(masks)}")
        tm = self._graph.time_major
        out = []
        for m, a in zip(masks, arrays):
            if m is None:
                out.append(None)
                continue
            if a.ndim < 2:
                raise ShapeError(f"mask given for an input of shape {a.shape}")
            out.append(_inputs.mask_input(m, a.shape[:2], tm).astype(bool))
        return out

    def reset_states(self) -> None:
        """Forgets the state of stateful layers (zeros at the next call)."""
        for carry in self._ctx.carries.values():
            carry.clear()

    @_inputs.reports_memory("the stream's state")
    def stream(self, batch_size: int) -> ModelStream:
        """Step-by-step streaming through the model (recurrent state kept)."""
        return ModelStream(self._graph, batch_size)

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
            try:
                outs = self._graph.run(arrays, self._graph.context(), recorded)
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
            layer = self._graph.layers[node.layer]
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
        if self.precision_note:
            out.write(f"Precision: {self.precision_note}\n")
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


class LayerView:
    """One layer of a Model as Keras code expects it: ``name``,
    ``class_name``, ``get_weights()`` (Keras' order and shapes) and
    ``count_params()``; ``spec`` is its canonical form."""

    def __init__(self, layer: Layer) -> None:
        self._layer = layer
        self.name, self.class_name, self.spec = layer.name, layer.class_name, layer.spec

    def get_weights(self) -> list[np.ndarray]:
        return [np.array(w, copy=True) for w in keras_weights(self.spec)]

    def count_params(self) -> int:
        return self._layer.param_count()

    def __repr__(self) -> str:
        return f"<{self.class_name} {self.name!r}>"


def _rebuild(spec: ModelSpec, threads: int | None) -> Model:
    """Unpickles a Model (see Model.__reduce__)."""
    return Model(spec, threads=threads)
