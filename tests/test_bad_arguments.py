"""A generated matrix of bad arguments over the public API.

Every public callable (constructors, calls, streams, loaders) gets a
generated list of wrong values for each argument: wrong types, ranks,
feature sizes, dtypes, NaN/inf, empty and huge arrays, negative and absurd
sizes. Each case must raise a FastLSTMError (or, for a value of a plainly
wrong Python type, a TypeError/ValueError) with a non-empty message: never a
crash, never another exception type, never a silent answer. Non-contiguous,
Fortran-ordered, read-only, float64/float16/integer and list inputs must
work and equal the float32 C-contiguous result bit for bit. A stream keeps
its model alive: it works after the last user reference to the model is
dropped.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import UNDER_SANITIZER, random_weights

import fastlstm
from fastlstm.errors import FastLSTMError

FIXTURES = Path(__file__).parent / "fixtures"
I, H, B, T = 3, 4, 2, 5
RNG = np.random.default_rng(7)
W = random_weights(RNG, I, H)
X = RNG.normal(size=(B, T, I)).astype(np.float32)
X_T = X[:, 0]  # one step (B, I)
BIG = 1 << 40

# Errors a value of a plainly wrong Python type may raise besides
# FastLSTMError (str where an array goes, dict, object(), None...).
PLAIN = (FastLSTMError, TypeError, ValueError)
STRICT = (FastLSTMError,)


class Nasty:
    """An object whose conversions raise odd exceptions."""

    def __array__(self, *a, **k):
        raise RuntimeError("no array for you")

    def __len__(self):
        raise RuntimeError("no len either")

    def __index__(self):
        raise RuntimeError("nor an index")


def huge(shape: tuple) -> np.ndarray:
    return np.broadcast_to(np.float32(0), shape)  # no memory allocated


def bad_arrays(shape: tuple, *, nan: bool = True) -> list[tuple[str, Any, tuple]]:
    """(id, value, allowed exception classes) for an argument that must be a
    float array of ``shape`` (the last axis being the feature size)."""
    good = np.zeros(shape, np.float32)
    cases = [
        ("str", "abc", PLAIN),
        ("bytes", b"\x00\x01", PLAIN),
        ("dict", {"a": 1}, PLAIN),
        ("object", object(), PLAIN),
        ("nasty", Nasty(), PLAIN),
        ("ragged", [[1.0, 2.0], [3.0]], PLAIN),
        ("scalar", 1.0, STRICT),
        ("ndim_minus_1", good[..., 0], STRICT),
        ("ndim_plus_1", good[..., None], STRICT),
        (
            "features_plus_1",
            np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32),
            STRICT,
        ),
        ("features_0", np.zeros(shape[:-1] + (0,), np.float32), STRICT),
        ("bool", good.astype(bool), STRICT),
        ("complex", good.astype(np.complex64), STRICT),
        ("object_dtype", good.astype(object), STRICT),
        ("str_dtype", good.astype(str), STRICT),
        ("datetime", np.zeros(shape, "datetime64[s]"), STRICT),
        ("huge_first", huge((BIG,) + shape[1:]), STRICT),
        ("huge_last", huge(shape[:-1] + (BIG,)), STRICT),
        ("huge_all", huge(tuple(1 << 20 for _ in shape)), STRICT),
    ]
    for k in range(len(shape) - 1):
        empty = list(shape)
        empty[k] = 0
        cases.append((f"empty_axis{k}", np.zeros(empty, np.float32), STRICT))
    if nan:
        for name, v in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
            a = good.copy()
            a.flat[a.size // 2] = v
            cases.append((name, a, STRICT))
    return cases


BAD_SIZES = [
    ("zero", 0),
    ("negative", -1),
    ("huge", 1 << 62),
    ("float", 2.0),
    ("nan", float("nan")),
    ("str", "2"),
    ("none", None),
    ("bool", True),
    ("array", np.array([2])),
    ("nasty", Nasty()),
]


# --- the objects under test --------------------------------------------------
def lstm(**kw) -> fastlstm.LSTM:
    return fastlstm.LSTM(**W, **kw)


def torch_model() -> Any:
    return fastlstm.load(
        FIXTURES / "torch" / "lstm_basic" / "model.pt", batch_first=False
    )


def torch_cell() -> Any:
    return fastlstm.load(FIXTURES / "torch" / "lstmcell" / "model.pt")


def tf1_model() -> Any:
    return fastlstm.load(FIXTURES / "tf1" / "basic_lstm_cell" / "model.ckpt")


def keras_model() -> Any:
    return fastlstm.load(FIXTURES / "keras" / "k2_masking_lstm_h5" / "model.h5")


def stack() -> fastlstm.Stack:
    return fastlstm.Stack([lstm(return_sequences=True), lstm_on(H)])


def lstm_on(n: int, **kw) -> fastlstm.LSTM:
    w = random_weights(np.random.default_rng(3), n, H)
    return fastlstm.LSTM(**w, **kw)


def bidir() -> fastlstm.Bidirectional:
    return fastlstm.Bidirectional(lstm(), lstm(go_backwards=True))


# --- the matrix --------------------------------------------------------------
CASES: dict[str, tuple[Callable[[], Any], tuple]] = {}


def add(target: str, arg: str, values: list, call: Callable[[Any], Any]) -> None:
    for vid, value, allowed in values:
        CASES[f"{target}-{arg}-{vid}"] = (lambda v=value: call(v), allowed)


def opt(values: list) -> list:
    """Drops None (a valid value of an optional argument)."""
    return [c for c in values if c[1] is not None]


def plain_values(*extra: tuple) -> list:
    """Wrong values for a scalar option."""
    return [
        ("str", "nope", PLAIN),
        ("dict", {}, PLAIN),
        ("object", object(), PLAIN),
        ("array", np.zeros(3), PLAIN),
        *extra,
    ]


# LSTM constructor: weights and options
for name, shape in (
    ("kernel", (I, 4 * H)),
    ("recurrent_kernel", (H, 4 * H)),
    ("bias", (4 * H,)),
    ("peepholes", (3, H)),
    ("projection", (H, 2)),
):
    values = bad_arrays(shape)
    if name in ("bias", "peepholes", "projection"):
        values = opt(values)
    if len(shape) == 1:  # 1-D: features_0 == empty, ndim-1 == scalar
        values = [v for v in values if v[0] != "ndim_minus_1"]

    def make(v, name=name):
        kw = dict(W, **{name: v})
        return fastlstm.LSTM(**kw)

    add("LSTM", name, values, make)
for name, values in {
    "activation": plain_values(("none", None, PLAIN), ("int", 3, PLAIN)),
    "recurrent_activation": plain_values(("none", None, PLAIN), ("int", 99, PLAIN)),
    "cell_clip": plain_values(
        ("negative", -1.0, PLAIN),
        ("zero", 0.0, PLAIN),
        ("nan", float("nan"), PLAIN),
        ("inf", float("inf"), PLAIN),
        ("huge", 1e300, PLAIN),
    ),
    "proj_clip": plain_values(("no_projection", 1.0, PLAIN)),
    "return_sequences": plain_values(("int", 1, PLAIN), ("none", None, PLAIN)),
    "go_backwards": plain_values(("int", 0, PLAIN), ("none", None, PLAIN)),
    "time_major": plain_values(("int", 1, PLAIN), ("none", None, PLAIN)),
    "nan_policy": plain_values(("none", None, PLAIN), ("omit", "omit", PLAIN)),
    "threads": plain_values(
        ("zero", 0, PLAIN),
        ("negative", -2, PLAIN),
        ("too_many", 1000, PLAIN),
        ("float", 2.0, PLAIN),
        ("bool", True, PLAIN),
    ),
}.items():
    add("LSTM", name, values, lambda v, name=name: fastlstm.LSTM(**W, **{name: v}))
add(
    "LSTM.from_spec",
    "spec",
    plain_values(("none", None, PLAIN)),
    fastlstm.LSTM.from_spec,
)

# layer(x, initial_state, mask, lengths), batch-major and time-major
for tm in (False, True):
    lay = lstm(time_major=tm, return_sequences=True)
    tag = "LSTM()tm" if tm else "LSTM()"
    xshape = (T, B, I) if tm else (B, T, I)
    x0 = np.zeros(xshape, np.float32)
    add(
        tag,
        "x",
        bad_arrays(xshape) + [("none", None, PLAIN)],
        lambda v, lay=lay: lay(v),
    )
    mshape = (T, B) if tm else (B, T)
    add(
        tag,
        "mask",
        [
            ("float", np.ones(mshape), STRICT),
            ("shape", np.ones(mshape[::-1], bool), STRICT),
            ("scalar", True, STRICT),
            ("str", "yes", PLAIN),
            ("object", object(), PLAIN),
            ("complex", np.ones(mshape, complex), STRICT),
        ],
        lambda v, lay=lay, x0=x0: lay(x0, mask=v),
    )
    add(
        tag,
        "lengths",
        [
            ("float", np.full(B, 2.0), STRICT),
            ("negative", np.full(B, -1), STRICT),
            ("too_long", np.full(B, T + 1), STRICT),
            ("huge", np.full(B, 1 << 40), STRICT),
            ("shape", np.full(B + 1, 1), STRICT),
            ("scalar", 3, STRICT),
            ("str", "3", PLAIN),
            ("bool", np.ones(B, bool), STRICT),
        ],
        lambda v, lay=lay, x0=x0: lay(x0, lengths=v),
    )
    state_values = [
        (f"h_{i}", (v, np.zeros((B, H), np.float32)), a)
        for i, v, a in opt(bad_arrays((B, H)))
    ]
    state_values += [
        (f"c_{i}", (np.zeros((B, H), np.float32), v), a)
        for i, v, a in opt(bad_arrays((B, H)))
    ]
    state_values += [
        ("one_array", np.zeros((B, H), np.float32), STRICT),
        ("triple", (np.zeros((B, H)),) * 3, STRICT),
        ("str", "hc", PLAIN),
        ("dict", {"h": 0, "c": 0}, PLAIN),
        ("batch", (np.zeros((B + 1, H)), np.zeros((B + 1, H))), STRICT),
    ]
    add(
        tag,
        "initial_state",
        state_values,
        lambda v, lay=lay, x0=x0: lay(x0, initial_state=v),
    )

# streams
LAYER = lstm()
add(
    "LSTM.stream",
    "batch_size",
    BAD_SIZES and [(i, v, PLAIN) for i, v in BAD_SIZES],
    LAYER.stream,
)
add(
    "LSTMStream.step",
    "x",
    bad_arrays((B, I)) + [("none", None, PLAIN), ("3d", X, STRICT)],
    lambda v: LAYER.stream(B).step(v),
)
add(
    "LSTMStream.step",
    "mask",
    [
        ("float", np.ones(B), STRICT),
        ("shape", np.ones(B + 1, bool), STRICT),
        ("str", "m", PLAIN),
    ],
    lambda v: LAYER.stream(B).step(X_T, mask=v),
)
add(
    "LSTMStream.step",
    "out",
    [
        ("float64", np.empty((B, H)), PLAIN),
        ("shape", np.empty((B, H + 1), np.float32), PLAIN),
        ("fortran", np.empty((H, B), np.float32).T, PLAIN),
        ("readonly", np.zeros((B, H), np.float32).copy().view().__array__(), PLAIN),
        ("list", [[0.0] * H] * B, PLAIN),
        ("str", "out", PLAIN),
    ],
    lambda v: LAYER.stream(B).step(X_T, out=v),
)
CASES["LSTMStream.step-out-readonly"] = (
    lambda: LAYER.stream(B).step(X_T, out=_readonly(np.zeros((B, H), np.float32))),
    PLAIN,
)
add(
    "LSTMStream.feed",
    "x",
    bad_arrays((B, T, I))
    + [("none", None, PLAIN), ("batch", np.zeros((B + 1, T, I)), STRICT)],
    lambda v: LAYER.stream(B).feed(v),
)
add(
    "LSTMStream.state",
    "value",
    [(f"h_{i}", (v, np.zeros((B, H))), a) for i, v, a in bad_arrays((B, H))]
    + [
        ("none", None, PLAIN),
        ("str", "s", PLAIN),
        ("single", np.zeros((B, H)), STRICT),
    ],
    lambda v: setattr(LAYER.stream(B), "state", v),
)

# Stack and Bidirectional
add(
    "Stack",
    "layers",
    [
        ("empty", [], STRICT),
        ("none", None, PLAIN),
        ("ints", [1, 2], PLAIN),
        ("str", "ab", PLAIN),
        ("mismatch", [lstm(), lstm()], STRICT),
    ],
    fastlstm.Stack,
)
add(
    "Stack",
    "return_state",
    [("str", "yes", PLAIN), ("int", 1, PLAIN)],
    lambda v: fastlstm.Stack([lstm()], return_state=v),
)
STACK = stack()
add("Stack()", "x", bad_arrays((B, T, I)) + [("none", None, PLAIN)], STACK)
add(
    "Stack()",
    "initial_state",
    [
        ("wrong_len", [None], STRICT),
        ("str", "s", PLAIN),
        ("bad_pair", [(1, 2), None], PLAIN),
    ],
    lambda v: STACK(X, initial_state=v),
)
add("Stack.stream", "batch_size", [(i, v, PLAIN) for i, v in BAD_SIZES], STACK.stream)
add("StackStream.step", "x", bad_arrays((B, I)), lambda v: STACK.stream(B).step(v))
add(
    "Bidirectional",
    "forward",
    [("none", None, PLAIN), ("str", "f", PLAIN), ("same_direction", lstm(), STRICT)],
    lambda v: fastlstm.Bidirectional(v, lstm()),
)
add(
    "Bidirectional",
    "merge_mode",
    plain_values(("int", 1, PLAIN)),
    lambda v: fastlstm.Bidirectional(lstm(), lstm(go_backwards=True), merge_mode=v),
)
BI = bidir()
add("Bidirectional()", "x", bad_arrays((B, T, I)) + [("none", None, PLAIN)], BI)
add(
    "Bidirectional()",
    "initial_state",
    [("pair", (X_T, X_T), STRICT), ("str", "s", PLAIN)],
    lambda v: BI(X, initial_state=v),
)
add("Bidirectional.stream", "batch_size", [("any", 2, STRICT)], BI.stream)

# Keras Model
MODEL = keras_model()
MX = (B, 8, 4)
# Model inputs accept bool (Keras casts it; boolean model inputs exist) and
# an empty batch (an empty result, as Keras gives: test_keras_habits.py)
MODEL_BAD_X = [c for c in bad_arrays(MX) if c[0] not in ("bool", "empty_axis0")]
add(
    "Model.predict",
    "x",
    MODEL_BAD_X
    + [
        ("none", None, PLAIN),
        ("list2", [np.zeros(MX)] * 2, STRICT),
        ("dict_wrong", {"nope": np.zeros(MX)}, STRICT),
    ],
    MODEL.predict,
)
add(
    "Model.predict",
    "batch_size",
    [(i, v, PLAIN) for i, v in BAD_SIZES if v is not None],
    lambda v: MODEL.predict(np.zeros(MX, np.float32), batch_size=v),
)
add("Model.stream", "batch_size", [(i, v, PLAIN) for i, v in BAD_SIZES], MODEL.stream)

# PyTorch- and TF1-shaped models
TORCH = torch_model()
TI, TH = TORCH.input_size, TORCH.hidden_size
add(
    "TorchLSTM()",
    "x",
    bad_arrays((T, B, TI))
    + [("none", None, PLAIN), ("4d", np.zeros((1, T, B, TI)), STRICT)],
    TORCH,
)
add(
    "TorchLSTM()",
    "hx",
    [
        (f"h_{i}", (v, np.zeros((1, B, TH))), a)
        for i, v, a in opt(bad_arrays((1, B, TH)))
    ]
    + [("one_array", np.zeros((1, B, TH)), STRICT), ("str", "hx", PLAIN)],
    lambda v: TORCH(np.zeros((T, B, TI), np.float32), v),
)
add(
    "TorchLSTM()",
    "lengths",
    [
        ("float", np.full(B, 2.0), STRICT),
        ("negative", np.full(B, -1), STRICT),
        ("too_long", np.full(B, T + 1), STRICT),
        ("shape", np.ones(B + 1, int), STRICT),
        ("str", "x", PLAIN),
    ],
    lambda v: TORCH(np.zeros((T, B, TI), np.float32), lengths=v),
)
add(
    "TorchLSTM.stream",
    "batch_size",
    [(i, v, PLAIN) for i, v in BAD_SIZES],
    TORCH.stream,
)
CELL = torch_cell()
add(
    "TorchLSTMCell()",
    "x",
    opt(bad_arrays((B, CELL.input_size)))
    + [("3d", np.zeros((1, B, CELL.input_size)), STRICT)],
    CELL,
)
add(
    "TorchLSTMCell()",
    "hx",
    [
        (f"h_{i}", (v, np.zeros((B, CELL.hidden_size))), a)
        for i, v, a in opt(bad_arrays((B, CELL.hidden_size)))
    ]
    + [("str", "hx", PLAIN)],
    lambda v: CELL(np.zeros((B, CELL.input_size), np.float32), v),
)
TF1 = tf1_model()
FI = TF1.input_size
add("TF1LSTM()", "x", bad_arrays((B, T, FI)) + [("none", None, PLAIN)], TF1)
add(
    "TF1LSTM()",
    "sequence_length",
    [
        ("float", np.full(B, 2.0), STRICT),
        ("negative", np.full(B, -1), STRICT),
        ("too_long", np.full(B, T + 1), STRICT),
        ("str", "x", PLAIN),
    ],
    lambda v: TF1(np.zeros((B, T, FI), np.float32), sequence_length=v),
)
add(
    "TF1LSTM()",
    "initial_state",
    [
        ("one_array", np.zeros((B, 5)), STRICT),
        ("str", "s", PLAIN),
        ("triple", (0, 0, 0), STRICT),
        ("bad_c", (np.full((B, 5), np.nan), np.zeros((B, 5))), STRICT),
    ],
    lambda v: TF1(np.zeros((B, T, FI), np.float32), initial_state=v),
)

# fastlstm.load(path, options)
TORCH_PT = FIXTURES / "torch" / "lstm_basic" / "model.pt"
WEIGHTS_H5 = FIXTURES / "keras" / "k2_masking_lstm_weights_h5" / "model_weights.h5"
add(
    "load",
    "path",
    [
        ("missing", "/nonexistent/model.h5", STRICT),
        ("directory", str(FIXTURES), STRICT),
        ("none", None, PLAIN),
        ("int", 123, PLAIN),
        ("object", object(), PLAIN),
        ("empty_str", "", STRICT),
        ("nul", "model\x00.h5", PLAIN),
        ("dict_empty", {}, STRICT),
        ("dict_junk", {"a": "b"}, STRICT),
        ("dict_arrays", {"w": np.zeros(3)}, STRICT),
    ],
    fastlstm.load,
)
for name, value, path in [
    ("config-str", "{not json", WEIGHTS_H5),
    ("config-int", 123, WEIGHTS_H5),
    ("config-dict", {}, WEIGHTS_H5),
    ("config-missing_file", "/nonexistent/arch.json", WEIGHTS_H5),
    (
        "config-wrong_model",
        {"class_name": "Sequential", "config": {"layers": []}},
        WEIGHTS_H5,
    ),
    ("keras_version-junk", "x.y", WEIGHTS_H5),
    ("prefix-int", 5, TORCH_PT),
    ("prefix-missing", "nope.", TORCH_PT),
    ("batch_first-str", "yes", TORCH_PT),
    ("scope-keras", "x", WEIGHTS_H5),
    ("forget_bias-torch", 1.0, TORCH_PT),
    ("forget_bias-str", "x", FIXTURES / "tf1" / "basic_lstm_cell" / "model.ckpt"),
    ("activation-unknown", "nope", FIXTURES / "tf1" / "basic_lstm_cell" / "model.ckpt"),
    ("scope-unknown", "nope", FIXTURES / "tf1" / "basic_lstm_cell" / "model.ckpt"),
    ("cell_clip-negative", -1.0, FIXTURES / "tf1" / "basic_lstm_cell" / "model.ckpt"),
    ("time_major-str", "yes", FIXTURES / "tf1" / "basic_lstm_cell" / "model.ckpt"),
]:
    option = name.split("-")[0]
    kwargs = {option: value}
    if path == WEIGHTS_H5 and option != "config":
        kwargs["config"] = WEIGHTS_H5.parent / "arch.json"
    CASES[f"load-{name}"] = (lambda p=path, kw=kwargs: fastlstm.load(p, **kw), PLAIN)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# What a FastLSTMError's message must say, where it names the argument by
# another word than its parameter name (regular expressions by case prefix).
KEYWORDS = {
    "LSTMStream.state-value": r"\bstate\b",
    "Model.predict-x": r"\binputs?\b",
    "load-path": r"model|file|folder|path|variables",
    "load-config": r"config|layer",
    "LSTM-projection": r"proj",
    "Stack-layers": r"layer",
    "Bidirectional-forward": r"LSTM layers|forward",
    "Bidirectional.stream-batch_size": r"cannot stream",
}


def keyword_of(case: str) -> str:
    for prefix, keyword in KEYWORDS.items():
        if case.startswith(prefix):
            return keyword
    return re.escape(case.split("-")[1])


@pytest.mark.parametrize("case", list(CASES))
def test_bad_argument_raises_a_clear_error(case):
    call, allowed = CASES[case]
    with pytest.raises(Exception) as info:
        result = call()
        pytest.fail(f"{case}: no error, returned {type(result).__name__}")
    exc = info.value
    assert isinstance(exc, allowed), (
        f"{case}: raised {type(exc).__module__}.{type(exc).__name__}: {exc}"
    )
    assert str(exc).strip(), f"{case}: empty message from {type(exc).__name__}"
    if isinstance(exc, FastLSTMError):  # names what was wrong
        assert re.search(keyword_of(case), str(exc)), f"{case}: {exc}"


# --- variants of a valid input must work and give the same bits ------------
def variants(base: np.ndarray) -> dict[str, Any]:
    big = np.zeros(base.shape[:-1] + (base.shape[-1] * 2,), np.float32)
    big[..., ::2] = base
    f16 = base.astype(np.float16).astype(np.float32)
    return {
        "float32": (base, base),
        "strided": (big[..., ::2], base),
        "fortran": (np.asfortranarray(base), base),
        "reversed_view": (base[::-1][::-1], base),
        "readonly": (_readonly(base.copy()), base),
        "float64": (base.astype(np.float64), base),
        "float16": (f16.astype(np.float16), f16),
        "int32": (np.round(base * 3).astype(np.int32), np.round(base * 3)),
        "uint8": (
            np.abs(np.round(base * 3)).astype(np.uint8),
            np.abs(np.round(base * 3)),
        ),
        "list": (base.tolist(), base),
        "broadcast": (
            np.broadcast_to(base[:1], base.shape),
            np.ascontiguousarray(np.broadcast_to(base[:1], base.shape)),
        ),
    }


def same(a, b) -> None:
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


VALID_TARGETS = {
    "LSTM()": (
        lambda: lstm(return_sequences=True, return_state=True),
        (B, T, I),
        lambda m, x: m(x),
    ),
    "LSTM()-initial_h": (lstm, (B, H), lambda m, h: m(X, initial_state=(h, h))),
    "LSTMStream.step": (lstm, (B, I), lambda m, x: m.stream(B).step(x)),
    "LSTMStream.feed": (lstm, (B, T, I), lambda m, x: m.stream(B).feed(x)),
    "Stack()": (stack, (B, T, I), lambda m, x: m(x)),
    "Bidirectional()": (bidir, (B, T, I), lambda m, x: m(x)),
    "Model.predict": (keras_model, MX, lambda m, x: m.predict(x)),
    "TorchLSTM()": (torch_model, (T, B, TI), lambda m, x: m(x)),
    "TorchLSTMCell()": (torch_cell, (B, CELL.input_size), lambda m, x: m(x)),
    "TF1LSTM()": (tf1_model, (B, T, FI), lambda m, x: m(x)),
}
VARIANT_NAMES = list(variants(np.zeros((2, 2), np.float32)))


@pytest.mark.parametrize("variant", VARIANT_NAMES)
@pytest.mark.parametrize("target", list(VALID_TARGETS))
def test_valid_input_variants_work_and_match(target, variant):
    make, shape, run = VALID_TARGETS[target]
    model = make()
    base = np.random.default_rng(11).normal(size=shape).astype(np.float32)
    value, equivalent = variants(base)[variant]
    want = run(model, np.ascontiguousarray(equivalent, dtype=np.float32))
    same(run(model, value), want)
    if isinstance(value, np.ndarray):
        assert value.flags.writeable == (variant not in ("readonly", "broadcast"))


# --- a stream outlives every other reference to its model -------------------
def _stream_factories() -> dict[str, Callable[[], tuple[Any, Any]]]:
    def seq(model, x):
        return model, x

    return {
        "LSTM": lambda: seq(lstm(), X_T),
        "Stack": lambda: seq(stack(), X_T),
        "Model": lambda: seq(keras_model(), np.zeros((B, 8, 4), np.float32)),
        "TorchLSTM": lambda: seq(torch_model(), np.zeros((B, TI), np.float32)),
        "TF1LSTM": lambda: seq(tf1_model(), np.zeros((B, FI), np.float32)),
    }


@pytest.mark.parametrize("kind", list(_stream_factories()))
def test_stream_works_after_its_model_is_deleted(kind):
    model, x = _stream_factories()[kind]()
    if kind == "Model":  # fixed-length model: feed whole chunks
        want = model.stream(B).feed(x)
        stream = model.stream(B)
        del model
        gc.collect()
        same(stream.feed(x), want)
        return
    want = model.stream(B).step(x)
    stream = model.stream(B)
    del model
    gc.collect()
    same(stream.step(x), want)
    stream.reset()
    same(stream.step(x), want)


_TOO_LARGE = """
import resource, numpy as np, fastlstm
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
k = np.broadcast_to(np.float32(0), (2**15, 2**17))
for make in (
    lambda: fastlstm.LSTM(k, k),
    lambda: fastlstm.LSTM(np.zeros((3, 4096), np.float32),
                          np.zeros((1024, 4096), np.float32)).stream(2**24),
):
    try:
        make()
        print("made")
    except fastlstm.ShapeError as exc:
        print("ShapeError:", exc)
"""


@pytest.mark.skipif(UNDER_SANITIZER, reason="needs an address-space limit")
def test_sizes_that_do_not_fit_in_memory_name_the_size():
    """A broadcast kernel of 2^32 elements and a stream of batch 2^24 pass
    the size limits but cannot be allocated (here, under a 6 GiB address
    space limit): a ShapeError giving NumPy's size, not a MemoryError."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _TOO_LARGE], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(out) == 2, out
    assert "not enough memory for the LSTM's weights" in out[0] and "GiB" in out[0]
    assert "not enough memory for the stream's state" in out[1]
    assert "64.0 GiB" in out[1]
