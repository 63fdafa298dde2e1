"""TF1 checkpoints (tensor bundle, ``.npz`` or a dict of variables) -> the
canonical graph of their LSTM cells: one direction (a cell or a
MultiRNNCell) or a fw/bw pair, run like ``dynamic_rnn``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fastlstm.errors import ConfigError, ModelFormatError
from fastlstm.loaders import read_npz, sniff, tf1_prefix
from fastlstm.loaders.tf1_cell import (
    cell_spec,
    find_cells,
    is_stack_scope,
    structure_of,
)
from fastlstm.loaders.tf1_checkpoint import CheckpointReader
from fastlstm.model_spec import (
    BidirectionalSpec,
    ModelSpec,
    RecurrentSpec,
    recurrent_chain,
)
from fastlstm.spec import LSTMSpec

__all__ = ["read_tf1", "cells_graph"]


def _variable_source(source: Any) -> tuple[list[str], Any, str]:
    """(names, get(name) -> array, where) for a path or a mapping."""
    if isinstance(source, Mapping):
        flat: dict[str, np.ndarray] = {}
        for k, v in source.items():
            if hasattr(v, "numpy") and not isinstance(v, np.ndarray):
                v = v.numpy()  # a tf.Variable / EagerTensor
            flat[str(k)] = np.asarray(v)
        return list(flat), flat.__getitem__, "<variables>"
    path = os.fspath(source)
    prefix = tf1_prefix(path)
    if prefix is not None:
        reader = CheckpointReader(prefix)
        return reader.names, reader.get, prefix
    if os.path.isfile(path) and sniff(path) == "zip":
        arrays = read_npz(path)
        return list(arrays), arrays.__getitem__, path
    raise ModelFormatError(
        f"{path}: not a TF checkpoint (no {path}.index) nor an .npz of variables"
    )


# What a TF2 object-based checkpoint (tf.train.Checkpoint, Keras
# save_weights in the TF format) names its variables and object graph.
OBJECT_CHECKPOINT_MARKS = (
    "/.ATTRIBUTES/VARIABLE_VALUE",
    "_CHECKPOINTABLE_OBJECT_GRAPH",
)


def _refuse_object_checkpoint(names: Any, where: str) -> None:
    """A TF2 object checkpoint keys variables by object path, not by the
    TF1 cell scopes this reader reads: say what it is and what to do."""
    if any(m in n for n in names for m in OBJECT_CHECKPOINT_MARKS):
        raise ModelFormatError(
            f"{where}: a TF2 object-based checkpoint (tf.train.Checkpoint, or "
            "Keras save_weights in the TensorFlow format): it keys variables by "
            "object path and holds no architecture. Save the Keras model with "
            "model.save('model.keras') (or 'model.h5'), or its weights with "
            "model.save_weights('model.weights.h5') and load that with config=; "
            "fastlstm reads TF1 checkpoints of LSTM cells"
        )


def read_tf1(
    source: Any,
    *,
    scope: str | None = None,
    forget_bias: float | Mapping = 1.0,
    cell_clip: float | Mapping | None = None,
    proj_clip: float | Mapping | None = None,
    activation: str | Mapping = "tanh",
    time_major: bool = False,
) -> ModelSpec:
    """The graph of the LSTM cells in a TF1 checkpoint (see from_tf1)."""
    if not isinstance(time_major, (bool, np.bool_)):
        raise ConfigError(f"time_major must be a bool, got {time_major!r}")
    names, get, where = _variable_source(source)
    _refuse_object_checkpoint(names, where)
    try:
        cells = find_cells(names)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{where}: {exc}") from None
    structure = structure_of(cells, scope, where)
    if proj_clip is not None and not isinstance(proj_clip, Mapping):
        if all(
            c.projection is None for c in structure.forward + (structure.backward or ())
        ):
            raise ConfigError(
                f"{where}: proj_clip is set but no cell has a projection "
                "(projection/kernel)"
            )
    opts = dict(
        forget_bias=forget_bias,
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        activation=activation,
    )
    fw = [cell_spec(c, get, where, **opts) for c in structure.forward]
    bw = None
    if structure.backward is not None:
        bw = [cell_spec(c, get, where, **opts) for c in structure.backward]
    multi = (
        is_stack_scope(structure.forward[-1].scope),
        structure.backward is not None and is_stack_scope(structure.backward[-1].scope),
    )
    return cells_graph(fw, bw, multi, bool(time_major), structure.scopes, where)


def cells_graph(
    forward: Sequence[LSTMSpec],
    backward: Sequence[LSTMSpec] | None,
    multi: tuple[bool, bool],
    time_major: bool,
    scopes: Sequence[str] = (),
    source: str = "",
) -> ModelSpec:
    """The graph of one direction of cells, or of a fw/bw pair (outputs not
    merged). ``multi``: whether each direction is a MultiRNNCell, whose
    state is a tuple of per-cell states."""
    fw = _direction("rnn", forward, False, time_major)
    if backward is None:
        layer: RecurrentSpec | BidirectionalSpec = fw
    else:
        layer = BidirectionalSpec(
            name="bidirectional_rnn",
            class_name="bidirectional_dynamic_rnn",
            forward=dataclasses.replace(fw, name="fw"),
            backward=_direction("bw", backward, True, time_major),
            merge_mode=None,
        )
    return recurrent_chain(
        [layer],
        name="dynamic_rnn",
        source=source,
        source_format="TF1 checkpoint",
        conventions={"calls": "tf1", "multi": tuple(multi), "scopes": list(scopes)},
    )


def _direction(
    name: str, cells: Sequence[LSTMSpec], backward: bool, time_major: bool
) -> RecurrentSpec:
    cells = tuple(
        dataclasses.replace(
            c, go_backwards=backward, return_sequences=True, return_state=False
        )
        for c in cells
    )
    return RecurrentSpec(
        name=name,
        class_name="MultiRNNCell" if len(cells) > 1 else "LSTMCell",
        cells=cells,
        return_sequences=True,
        return_state=True,
        go_backwards=backward,
        time_major=time_major,
    )
