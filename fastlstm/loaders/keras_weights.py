"""The canonical layout back to Keras': ``get_weights()`` arrays in the
order and shapes Keras' own ``get_weights`` / ``set_weights`` use (Keras 2
and 3), for the layers whose canonical form keeps everything Keras stored.
The inverse of keras_layers.py's conversions."""

from __future__ import annotations

import numpy as np

from fastlstm.errors import ConfigError
from fastlstm.model_spec import (
    BidirectionalSpec,
    DenseSpec,
    EmbeddingSpec,
    LayerSpec,
    RecurrentSpec,
)
from fastlstm.spec import GRUSpec, LSTMSpec, SimpleRNNSpec

__all__ = ["keras_weights"]


def keras_weights(spec: LayerSpec) -> list[np.ndarray]:
    """The layer's weights as Keras lists them ([] for a layer without)."""
    if isinstance(spec, DenseSpec):
        return [spec.kernel] + ([] if spec.bias is None else [spec.bias])
    if isinstance(spec, EmbeddingSpec):
        return [spec.table]
    if isinstance(spec, RecurrentSpec):
        return [w for cell in spec.cells for w in _cell(cell)]
    if isinstance(spec, BidirectionalSpec):
        return keras_weights(spec.forward) + keras_weights(spec.backward)
    if not getattr(type(spec), "weighted", False):
        return []
    raise ConfigError(
        f"get_weights: layer {spec.name!r} ({spec.class_name}) is kept in a "
        "folded form (its Keras arrays are combined at load), so its own "
        "arrays cannot be given back"
    )


def _cell(cell: object) -> list[np.ndarray]:
    if isinstance(cell, LSTMSpec):
        if cell.peepholes is not None or cell.projection is not None:
            raise ConfigError(
                "get_weights: a peephole or projected LSTM cell has no Keras layout"
            )
        bias = [] if cell.bias is None else [cell.bias]
        return [cell.kernel, cell.recurrent_kernel, *bias]
    if isinstance(cell, GRUSpec):
        b, rb = cell.bias, cell.recurrent_bias
        if b is None and rb is None:
            return [cell.kernel, cell.recurrent_kernel]
        b = np.zeros(cell.kernel.shape[1], np.float32) if b is None else b
        if cell.reset_after:  # Keras stores input and recurrent biases: (2, 3H)
            rb = np.zeros_like(b) if rb is None else rb
            return [cell.kernel, cell.recurrent_kernel, np.stack([b, rb])]
        return [cell.kernel, cell.recurrent_kernel, b]
    if isinstance(cell, SimpleRNNSpec):
        b = cell.bias
        if b is None and cell.recurrent_bias is None:
            return [cell.kernel, cell.recurrent_kernel]
        total = sum(x for x in (b, cell.recurrent_bias) if x is not None)
        return [cell.kernel, cell.recurrent_kernel, np.asarray(total, np.float32)]
    raise ConfigError(f"get_weights: no Keras layout for {type(cell).__name__}")
