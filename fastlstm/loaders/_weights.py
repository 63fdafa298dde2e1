"""Attaching weights read from a file to a config's layers."""

from __future__ import annotations

import dataclasses

from fastlstm.errors import ModelFormatError
from fastlstm.loaders.keras_layers import OPTIONALLY_WEIGHTED, WEIGHTED_CLASSES
from fastlstm.model_spec import ModelSpec


def attach_weights(spec: ModelSpec, saved: dict[str, list], source: str) -> ModelSpec:
    """Gives each weighted layer its arrays: by layer name when every name
    matches (full-model files), else in order (what Keras does for weights
    files whose layer names differ from the config's)."""
    weighted = [
        ls
        for ls in spec.layers
        if ls.class_name in WEIGHTED_CLASSES
        # a layer whose weights are optional and absent (an Attention
        # without use_scale) takes none
        and not (ls.class_name in OPTIONALLY_WEIGHTED and ls.name not in saved)
    ]
    names = [ls.name for ls in weighted]
    if all(n in saved for n in names):
        chosen = {n: saved[n] for n in names}
    elif len(saved) == len(weighted):
        chosen = dict(zip(names, saved.values()))
    else:
        missing = [n for n in names if n not in saved]
        raise ModelFormatError(
            f"{source}: the file holds weights for {len(saved)} layers "
            f"({', '.join(saved) or 'none'}) but the model has {len(weighted)} layers "
            f"with weights; not found by name: {', '.join(missing)}"
        )
    layers = tuple(
        dataclasses.replace(ls, weights=tuple(chosen[ls.name]))
        if ls.name in chosen
        else ls
        for ls in spec.layers
    )
    return dataclasses.replace(spec, layers=layers)
