"""Models pickle as weights (NumPy arrays + options), never as C pointers: the
unpickled copy repacks its weights and computes bit-identical outputs, so
models can be shipped to process pools and distributed engines. Streams
hold running state and refuse to pickle with a clear TypeError."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
from _helpers import random_weights
from test_load_keras import CASES as KERAS_CASES
from test_load_keras import case_info, inputs_of, load_case

import fastlstm

FIXTURES = Path(__file__).parent / "fixtures"
TORCH_CASES = sorted(
    p.parent.name
    for p in (FIXTURES / "torch").glob("*/case.json")
    if list(p.parent.glob("model.*"))
)
TF1_CASES = sorted(p.parent.name for p in (FIXTURES / "tf1").glob("*/model.ckpt.index"))


def roundtrip(obj):
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def assert_same(a, b) -> None:
    """Bit-identical nested outputs (lists, tuples, arrays)."""
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.tobytes() == b.tobytes()


def layer(rng, I=5, H=8, **kw):
    w = random_weights(
        rng,
        I,
        H,
        P=kw.pop("P", 0),
        peepholes=kw.pop("peepholes", False),
    )
    return fastlstm.LSTM(**w, **kw)


LSTM_OPTIONS = {
    "plain": {},
    "sequences_state": dict(return_sequences=True, return_state=True),
    "projection_peepholes": dict(P=3, peepholes=True, return_sequences=True),
    "clips_backwards": dict(cell_clip=0.5, go_backwards=True, return_sequences=True),
    "time_major_threads": dict(time_major=True, threads=2, return_sequences=True),
    "propagate_hard_sigmoid": dict(
        nan_policy="propagate", recurrent_activation="hard_sigmoid_keras3"
    ),
}


@pytest.mark.parametrize("name", list(LSTM_OPTIONS))
def test_lstm_roundtrip_is_bit_identical(rng, name):
    kw = dict(LSTM_OPTIONS[name])
    lay = layer(rng, **kw)
    copy = roundtrip(lay)
    assert type(copy) is fastlstm.LSTM and copy is not lay
    for attr in ("time_major", "nan_policy", "go_backwards", "output_size"):
        assert getattr(copy, attr) == getattr(lay, attr)
    assert copy._threads == lay._threads
    x = rng.normal(size=(3, 11, 5)).astype(np.float32)
    assert_same(lay(x), copy(x))
    lengths = np.array([11, 4, 1]) if not lay.time_major else None
    if lengths is not None:
        assert_same(lay(x, lengths=lengths), copy(x, lengths=lengths))


def test_lstm_pickle_holds_arrays_not_pointers(rng):
    lay = layer(rng)
    data = pickle.dumps(lay)
    assert b"PackedLSTM" not in data and b"fastlstm._core" not in data
    # a second pickle of the copy is the same bytes: nothing process-bound
    assert pickle.dumps(roundtrip(lay)) == data


def test_stack_and_bidirectional_roundtrip(rng):
    f = layer(rng, return_sequences=True)
    b = layer(rng, return_sequences=True, go_backwards=True)
    bi = fastlstm.Bidirectional(f, b, merge_mode="concat")
    top = layer(rng, I=16, H=4)
    stack = fastlstm.Stack([bi, top], return_state=True)
    x = rng.normal(size=(2, 7, 5)).astype(np.float32)
    assert_same(bi(x), roundtrip(bi)(x))
    copy = roundtrip(stack)
    assert_same(stack(x), copy(x))
    assert copy.return_state and copy.layers[0].merge_mode == "concat"


@pytest.mark.parametrize("case", KERAS_CASES)
def test_keras_model_roundtrip(case):
    meta, ref = case_info(case)
    model = load_case(case)
    copy = roundtrip(model)
    assert isinstance(copy, fastlstm.Model) and copy.name == model.name
    if meta.get("stateful"):
        xs = [ref[a] for a in meta["inputs"][0]["arrays"]]
        first = model.predict(xs[0])
        model.predict(xs[1])  # model now carries state...
        fresh = roundtrip(model)  # ...which is not pickled (as in Keras files)
        assert_same(fresh.predict(xs[0]), first)
        return
    xs = inputs_of(meta, ref)
    x = xs[0] if len(xs) == 1 else xs
    assert_same(model.predict(x), copy.predict(x))


@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_model_roundtrip(case):
    folder = FIXTURES / "torch" / case
    opts = json.loads((folder / "case.json").read_text()).get("loader_options", {})
    model = fastlstm.load(
        next(folder.glob("model.*")), batch_first=opts.get("batch_first", False)
    )
    copy = roundtrip(model)
    assert type(copy) is type(model) and repr(copy) == repr(model)
    ref = np.load(folder / "ref.npz")
    x = ref["x"].astype(np.float32)
    if isinstance(model, fastlstm.TorchLSTMCell):
        x = x[0] if x.ndim == 3 else x
    assert_same(model(x), copy(x))


@pytest.mark.parametrize("case", TF1_CASES)
def test_tf1_model_roundtrip(case):
    folder = FIXTURES / "tf1" / case
    model = fastlstm.load(folder / "model.ckpt")
    copy = roundtrip(model)
    assert isinstance(copy, fastlstm.TF1LSTM) and copy.scopes == model.scopes
    x = np.load(folder / "ref.npz")["x"]
    lengths = np.arange(x.shape[0]) % x.shape[1] + 1
    assert_same(model(x), copy(x))
    assert_same(model(x, sequence_length=lengths), copy(x, sequence_length=lengths))


def test_onnx_model_roundtrip():
    pytest.importorskip("onnx")
    folder = FIXTURES / "onnx" / "single_lstm_node_bidirectional"
    model = fastlstm.load(folder / "model.onnx")
    copy = roundtrip(model)
    x = np.load(folder / "ref.npz")["X"]
    assert_same(model(x), copy(x))


def streams(rng):
    lay = layer(rng)
    yield "LSTMStream", lay.stream(2)
    yield "StackStream", fastlstm.Stack([layer(rng, return_sequences=True)]).stream(2)
    torch = fastlstm.load(
        FIXTURES / "torch" / "lstm_basic" / "model.pt", batch_first=False
    )
    yield "TorchStream", torch.stream(2)
    tf1 = fastlstm.load(FIXTURES / "tf1" / "basic_lstm_cell" / "model.ckpt")
    yield "TF1LSTMStream", tf1.stream(2)
    yield "ModelStream", load_case("k2_masking_lstm_h5").stream(2)


def test_streams_refuse_to_pickle_clearly(rng):
    for name, stream in streams(rng):
        with pytest.raises(TypeError, match=f"{name} cannot be pickled.*new stream"):
            pickle.dumps(stream)


def _spawn_pool():
    ctx = multiprocessing.get_context("spawn")  # a fresh process: no shared memory
    return concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx)


def test_models_run_in_a_process_pool(rng):
    lay = layer(rng, return_sequences=True, P=3)
    x = rng.normal(size=(4, 9, 5)).astype(np.float32)
    keras = load_case("k2_stacked_embedding")
    meta, ref = case_info("k2_stacked_embedding")
    kx = inputs_of(meta, ref)[0]
    torch = fastlstm.load(
        FIXTURES / "torch" / "lstm_3layer_bidir_proj" / "model.pt", batch_first=False
    )
    tx = np.load(FIXTURES / "torch" / "lstm_3layer_bidir_proj" / "ref.npz")["x"]
    with _spawn_pool() as pool:
        got = [
            pool.submit(lay, x),
            pool.submit(keras.predict, kx),
            pool.submit(torch, tx),
            pool.submit(roundtrip, lay),  # and back again
        ]
        got = [g.result(timeout=120) for g in got]
    assert_same(got[0], lay(x))
    assert_same(got[1], keras.predict(kx))
    assert_same(got[2], torch(tx))
    assert_same(got[3](x), lay(x))
