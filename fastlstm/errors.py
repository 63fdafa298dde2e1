"""The exceptions fastlstm raises. Each subclasses a builtin so that
``except ValueError`` (or TypeError, ...) keeps working in user code."""

from __future__ import annotations

__all__ = [
    "FastLSTMError",
    "ModelFormatError",
    "UnsupportedLayerError",
    "ShapeError",
    "NonFiniteError",
    "ConfigError",
    "DTypeError",
    "StreamError",
]


class FastLSTMError(Exception):
    """Base class of every error fastlstm raises on purpose."""


class ModelFormatError(FastLSTMError, ValueError):
    """A model file is corrupt, truncated, of an unknown format or unsafe."""


class UnsupportedLayerError(FastLSTMError, NotImplementedError):
    """A model uses a layer class or option that fastlstm does not run."""


class ShapeError(FastLSTMError, ValueError):
    """An array has the wrong rank or size, or sizes are too large."""


class NonFiniteError(FastLSTMError, ValueError):
    """NaN or infinity where a finite number is required."""


class ConfigError(FastLSTMError, ValueError):
    """An option has an invalid value (unknown activation, bad merge mode)."""


class DTypeError(FastLSTMError, TypeError):
    """An array has a dtype that cannot be converted without surprise."""


class StreamError(FastLSTMError, RuntimeError):
    """A stream is used in a way that would corrupt it (or cannot stream)."""


class PrecisionWarning(UserWarning):
    """A model saved for lower precision (a Keras mixed_float16 /
    mixed_bfloat16 policy) runs in float32 here: its outputs differ from the
    framework's by about the half-precision rounding."""
