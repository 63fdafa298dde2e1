"""Pins the public API: exported names, signatures, and that the Python
mirrors of the C enums hold the C values."""

from __future__ import annotations

import inspect

import fastlstm
from fastlstm import _core
from fastlstm.activations import Activation


def test_all_is_pinned():
    assert sorted(fastlstm.__all__) == sorted(
        [
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
    )
    for name in fastlstm.__all__:
        assert hasattr(fastlstm, name), name


def test_activation_enum_mirrors_c():
    assert {a.name: int(a) for a in Activation} == _core.ACTIVATION_VALUES


def test_lstm_signature():
    sig = inspect.signature(fastlstm.LSTM)
    assert list(sig.parameters)[:3] == ["kernel", "recurrent_kernel", "bias"]
    kw = {n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert kw == {
        "activation",
        "recurrent_activation",
        "peepholes",
        "projection",
        "cell_clip",
        "proj_clip",
        "go_backwards",
        "return_sequences",
        "return_state",
        "zero_output_for_mask",
        "time_major",
        "nan_policy",
        "threads",
    }
    call = inspect.signature(fastlstm.LSTM.__call__)
    assert list(call.parameters) == ["self", "x", "initial_state", "mask", "lengths"]


def test_stream_methods():
    for cls in (fastlstm.LSTMStream, fastlstm.StackStream):
        for name in ("step", "feed", "reset", "state", "batch_size"):
            assert hasattr(cls, name), (cls, name)


def test_errors_subclass_builtins():
    assert issubclass(fastlstm.ShapeError, ValueError)
    assert issubclass(fastlstm.NonFiniteError, ValueError)
    assert issubclass(fastlstm.ModelFormatError, ValueError)
    assert issubclass(fastlstm.UnsupportedLayerError, NotImplementedError)
    assert issubclass(fastlstm.DTypeError, TypeError)
    assert issubclass(fastlstm.StreamError, RuntimeError)
    for name in (
        "ShapeError",
        "NonFiniteError",
        "ConfigError",
        "DTypeError",
        "StreamError",
        "ModelFormatError",
        "UnsupportedLayerError",
    ):
        assert issubclass(getattr(fastlstm, name), fastlstm.FastLSTMError)


def test_status_messages_exist():
    for status in range(7):
        assert len(_core.status_message(status)) > 1


def test_habit_names_are_pinned():
    """The names users of Keras, PyTorch and ONNX Runtime reach for."""
    params = inspect.signature(fastlstm.Model.predict).parameters
    assert list(params) == ["self", "x", "batch_size", "verbose", "steps", "callbacks"]
    call = inspect.signature(fastlstm.Model.__call__).parameters
    assert list(call) == ["self", "x", "training", "mask"]
    get_layer = inspect.signature(fastlstm.Model.get_layer).parameters
    assert list(get_layer) == ["self", "name", "index"]
    for name in (
        "predict_on_batch",
        "get_weights",
        "layers",
        "input_shape",
        "output_shape",
        "summary",
        "count_params",
        "reset_states",
        "stream",
    ):
        assert hasattr(fastlstm.Model, name), name
    for cls in (fastlstm.ModelStream, fastlstm.TorchStream, fastlstm.TF1LSTMStream):
        for name in ("step", "feed", "reset", "state"):
            assert hasattr(cls, name), (cls, name)
    for name in ("run", "get_inputs", "get_outputs"):
        assert hasattr(fastlstm.OnnxModel, name), name
    load = inspect.signature(fastlstm.load).parameters
    assert "threads" in load and "batch_first" in load and "config" in load
    assert list(inspect.signature(fastlstm.set_num_threads).parameters) == ["n"]
