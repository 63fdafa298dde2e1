"""Activation names: the C enum of the recurrent cells, and the NumPy
functions of the other layers.

``Activation`` mirrors ``fl_activation`` in src_c/fastlstm.h (and
fastlstm/_core.pxd); tests/test_api.py checks that the values agree.
``NUMPY_ACTIVATIONS`` maps each canonical name to a float64 function.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import numpy as np
from scipy import special

from fastlstm.errors import ConfigError

__all__ = ["Activation", "parse_activation", "NUMPY_ACTIVATIONS", "numpy_activation"]


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


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


# float64 in, float64 out; softmax and log_softmax over the last axis
NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "sigmoid": _sigmoid,
    "hard_sigmoid_k2": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "hard_sigmoid_k3": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "tanh": np.tanh,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "elu": _elu,
    "selu": lambda x: (
        1.0507009873554805
        * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0.0)))
    ),
    "exponential": np.exp,
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0))),
    "log_softmax": lambda x: x - special.logsumexp(x, axis=-1, keepdims=True),
    "softmax": _softmax,
}


def numpy_activation(name: str, axis: int = -1) -> Callable[[np.ndarray], np.ndarray]:
    """A float32 -> float32 function computing ``name`` in float64 (softmax
    over ``axis``)."""
    fn = NUMPY_ACTIVATIONS[name]
    if name == "softmax" and axis != -1:

        def fn(x: np.ndarray) -> np.ndarray:
            return _softmax(x, axis)

    def apply(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.asarray(fn(x.astype(np.float64)), dtype=np.float32)

    return apply
