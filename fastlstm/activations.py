"""Activation names and their C enum values.

``Activation`` mirrors ``fl_activation`` in src_c/fastlstm.h (and
fastlstm/_core.pxd); tests/test_api.py checks that the values agree.
"""

from __future__ import annotations

import enum

from fastlstm.errors import ConfigError

__all__ = ["Activation", "parse_activation"]


class Activation(enum.IntEnum):
    TANH = 0
    SIGMOID = 1
    HARD_SIGMOID_K2 = 2  # Keras 1/2, tf.keras: clip(0.2 x + 0.5, 0, 1)
    HARD_SIGMOID_K3 = 3  # Keras 3: clip(x / 6 + 0.5, 0, 1)
    RELU = 4
    LINEAR = 5
    SOFTSIGN = 6
    ELU = 7
    SELU = 8
    SOFTPLUS = 9
    EXPONENTIAL = 10


_NAMES = {
    "tanh": Activation.TANH,
    "sigmoid": Activation.SIGMOID,
    "hard_sigmoid_k2": Activation.HARD_SIGMOID_K2,
    "hard_sigmoid_keras2": Activation.HARD_SIGMOID_K2,
    "hard_sigmoid_k3": Activation.HARD_SIGMOID_K3,
    "hard_sigmoid_keras3": Activation.HARD_SIGMOID_K3,
    "relu": Activation.RELU,
    "linear": Activation.LINEAR,
    "softsign": Activation.SOFTSIGN,
    "elu": Activation.ELU,
    "selu": Activation.SELU,
    "softplus": Activation.SOFTPLUS,
    "exponential": Activation.EXPONENTIAL,
}


def parse_activation(value: str | Activation, argument: str) -> Activation:
    """Maps a name (Keras spelling) or an Activation to an Activation.

    ``argument`` names the parameter in error messages.
    """
    if isinstance(value, Activation):
        return value
    if not isinstance(value, str):
        raise ConfigError(
            f"{argument} must be an activation name or fastlstm.Activation, "
            f"got {type(value).__name__}"
        )
    key = value.strip().lower()
    if key == "hard_sigmoid":
        raise ConfigError(
            f"{argument}='hard_sigmoid' is ambiguous: Keras 1/2 and tf.keras "
            "compute clip(0.2*x + 0.5, 0, 1), Keras 3 computes "
            "clip(x/6 + 0.5, 0, 1); say 'hard_sigmoid_k2' or 'hard_sigmoid_k3'"
        )
    if key not in _NAMES:
        raise ConfigError(
            f"{argument}={value!r} is not a supported activation; supported: "
            + ", ".join(sorted(_NAMES))
        )
    return _NAMES[key]
