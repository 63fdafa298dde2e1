"""fastlstm: fast, faithful CPU inference for trained LSTMs."""

from __future__ import annotations

try:
    from fastlstm import _core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "fastlstm's compiled extension (fastlstm._core) is not built or cannot "
        "be loaded. Install the package with `pip install .` (or "
        "`pip install -e .` for development) from the source checkout; if you "
        "run Python from inside the checkout after a non-editable install, the "
        "source folder shadows the installed package: change directory. "
        f"Underlying error: {exc}"
    ) from None

from fastlstm.activations import Activation
from fastlstm.composite import Bidirectional, Stack, StackStream
from fastlstm.errors import (
    ConfigError,
    DTypeError,
    FastLSTMError,
    ModelFormatError,
    NonFiniteError,
    ShapeError,
    StreamError,
    UnsupportedLayerError,
)
from fastlstm.loaders import from_keras, load, load_spec
from fastlstm.lstm import LSTM, LSTMStream
from fastlstm.model import Model, ModelStream
from fastlstm.spec import LSTMSpec, ModelSpec

__version__ = "0.1.0"

__all__ = [
    "load",
    "load_spec",
    "from_keras",
    "Model",
    "ModelStream",
    "ModelSpec",
    "LSTM",
    "LSTMStream",
    "Bidirectional",
    "Stack",
    "StackStream",
    "LSTMSpec",
    "Activation",
    "FastLSTMError",
    "ModelFormatError",
    "UnsupportedLayerError",
    "ShapeError",
    "NonFiniteError",
    "ConfigError",
    "DTypeError",
    "StreamError",
    "__version__",
]
