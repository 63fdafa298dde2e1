"""fastlstm: fast, faithful CPU inference for trained LSTMs."""

from __future__ import annotations

try:
    from fastlstm import _core  # noqa: F401
except ImportError as exc:
    from fastlstm._build_check import import_error

    raise import_error(exc, __path__[0]) from None

from fastlstm._threadpoolctl import register as _register_threadpoolctl
from fastlstm.activations import Activation
from fastlstm.engine.gru_rnn import GRU, HiddenStateStream, SimpleRNN
from fastlstm.engine.lstm import LSTM, LSTMStream
from fastlstm.engine.recurrent import Bidirectional, Stack, StackStream
from fastlstm.errors import (
    ConfigError,
    DTypeError,
    FastLSTMError,
    ModelFormatError,
    NonFiniteError,
    PrecisionWarning,
    ShapeError,
    StreamError,
    UnsupportedLayerError,
)
from fastlstm.frontends.keras import Model, ModelStream
from fastlstm.frontends.onnx import OnnxModel, from_onnx
from fastlstm.frontends.tf1 import TF1LSTM, TF1LSTMStream, from_tf1
from fastlstm.frontends.torch import (
    TorchGRU,
    TorchGRUCell,
    TorchLSTM,
    TorchLSTMCell,
    TorchLSTMStream,
    TorchRNN,
    TorchRNNCell,
    TorchStream,
    from_torch,
)
from fastlstm.loading import from_keras, load, load_spec, read_state_dict
from fastlstm.model_spec import ModelSpec
from fastlstm.spec import GRUSpec, LSTMSpec, SimpleRNNSpec
from fastlstm.thread_budget import get_num_threads, set_num_threads

_register_threadpoolctl()

__version__ = "0.1.0"

__all__ = [
    "load",
    "load_spec",
    "read_state_dict",
    "from_keras",
    "from_torch",
    "from_tf1",
    "from_onnx",
    "Model",
    "ModelStream",
    "ModelSpec",
    "LSTM",
    "LSTMStream",
    "Bidirectional",
    "Stack",
    "StackStream",
    "LSTMSpec",
    "GRU",
    "SimpleRNN",
    "HiddenStateStream",
    "GRUSpec",
    "SimpleRNNSpec",
    "TorchLSTM",
    "TorchLSTMCell",
    "TorchLSTMStream",
    "TorchGRU",
    "TorchRNN",
    "TorchGRUCell",
    "TorchRNNCell",
    "TorchStream",
    "TF1LSTM",
    "TF1LSTMStream",
    "OnnxModel",
    "Activation",
    "FastLSTMError",
    "ModelFormatError",
    "UnsupportedLayerError",
    "ShapeError",
    "NonFiniteError",
    "PrecisionWarning",
    "ConfigError",
    "DTypeError",
    "StreamError",
    "get_num_threads",
    "set_num_threads",
    "__version__",
]
