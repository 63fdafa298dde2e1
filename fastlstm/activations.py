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

__all__ = [
    "Activation",
    "parse_activation",
    "NUMPY_ACTIVATIONS",
    "numpy_activation",
    "softmax",
    "GateActivation",
]


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


def kernel_activation(name: str) -> Activation | None:
    """The C core's code for an activation name (canonical spelling), or
    None for activations only NumPy computes (softmax, gelu, swish...)."""
    return _NAMES.get(name)


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


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) over ``axis``, the maximum subtracted first."""
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
    "softmax": softmax,
}


def numpy_activation(name: str, axis: int = -1) -> Callable[[np.ndarray], np.ndarray]:
    """A float32 -> float32 function computing ``name`` in float64 (softmax
    over ``axis``)."""
    fn = NUMPY_ACTIVATIONS[name]
    if name == "softmax" and axis != -1:

        def fn(x: np.ndarray) -> np.ndarray:
            return softmax(x, axis)

    def apply(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.asarray(fn(x.astype(np.float64)), dtype=np.float32)

    return apply


# Activations with parameters (ONNX's recurrent-op set); alpha and beta
# default as ONNX Runtime defaults them when a file gives too few.
ALPHA_DEFAULTS = {
    "affine": 1.0,
    "leakyrelu": 0.01,
    "thresholdedrelu": 1.0,
    "scaledtanh": 1.0,
    "hardsigmoid": 0.2,
    "elu": 1.0,
}
BETA_DEFAULTS = {"affine": 0.0, "scaledtanh": 1.0, "hardsigmoid": 0.5}
GATE_ACTIVATIONS = frozenset(
    {"relu", "tanh", "sigmoid", "softsign", "softplus", *ALPHA_DEFAULTS}
)


def _near(x: float, y: float) -> bool:
    return abs(x - y) <= 1e-7


class GateActivation:
    """An activation of a recurrent cell's gates with parameters: ``name``
    (lower case, one of GATE_ACTIVATIONS), ``alpha``, ``beta``. Calls compute
    it in float64; ``core_name`` is the C core's equivalent, if any."""

    __slots__ = ("name", "alpha", "beta")

    def __init__(self, name: str, alpha: float = 0.0, beta: float = 0.0) -> None:
        self.name, self.alpha, self.beta = name, float(alpha), float(beta)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GateActivation) and (
            (self.name, self.alpha, self.beta) == (other.name, other.alpha, other.beta)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.alpha, self.beta))

    def __repr__(self) -> str:
        return f"GateActivation({self.name!r}, {self.alpha:g}, {self.beta:g})"

    def __reduce__(self) -> tuple:
        return (GateActivation, (self.name, self.alpha, self.beta))

    def __call__(self, v: np.ndarray) -> np.ndarray:
        n, a, b = self.name, self.alpha, self.beta
        with np.errstate(over="ignore"):
            if n in ("sigmoid", "tanh", "relu", "softsign", "softplus"):
                return NUMPY_ACTIVATIONS[n](v)
            if n == "affine":
                return a * v + b
            if n == "leakyrelu":
                return np.where(v >= 0, v, a * v)
            if n == "thresholdedrelu":
                return np.where(v > a, v, 0.0)
            if n == "scaledtanh":
                return a * np.tanh(b * v)
            if n == "hardsigmoid":
                return np.clip(a * v + b, 0.0, 1.0)
            if n == "elu":
                return np.where(v >= 0, v, a * np.expm1(np.minimum(v, 0.0)))
        raise ValueError(f"unknown gate activation {n!r}")

    @property
    def core_name(self) -> str | None:
        """The C core's name for this function, or None."""
        n, a, b = self.name, self.alpha, self.beta
        if n in ("sigmoid", "tanh", "relu", "softsign", "softplus"):
            return n
        if n == "elu" and _near(a, 1.0):
            return "elu"
        if n == "hardsigmoid" and _near(b, 0.5):
            if _near(a, 0.2):
                return "hard_sigmoid_k2"
            if _near(a, 1 / 6):
                return "hard_sigmoid_k3"
        if n == "affine" and _near(a, 1.0) and _near(b, 0.0):
            return "linear"
        if n == "scaledtanh" and _near(a, 1.0) and _near(b, 1.0):
            return "tanh"
        if n == "leakyrelu" and _near(a, 0.0):
            return "relu"
        return None
