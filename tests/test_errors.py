"""Bad input gets a clear exception from fastlstm.errors naming what is wrong,
never a crash: weights, call arguments, NaN policy, absurd sizes, streams and
the Bidirectional / Stack wrappers."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

import fastlstm
from fastlstm import LSTM, Bidirectional, Stack
from fastlstm.errors import (
    ConfigError,
    DTypeError,
    FastLSTMError,
    NonFiniteError,
    ShapeError,
    StreamError,
)

BIG = 2**25  # one more bit than the per-dimension limit (2**24)


def weights(I=3, H=4, P=0, peepholes=False, seed=0):
    """Small random canonical weights (float64; the layer converts them)."""
    rng = np.random.default_rng(seed)
    w = {
        "kernel": rng.normal(0, 0.3, (I, 4 * H)),
        "recurrent_kernel": rng.normal(0, 0.3, (P or H, 4 * H)),
        "bias": rng.normal(0, 0.1, 4 * H),
    }
    if peepholes:
        w["peepholes"] = rng.normal(0, 0.1, (3, H))
    if P:
        w["projection"] = rng.normal(0, 0.3, (H, P))
    return w


def make_layer(I=3, H=4, **kw):
    return LSTM(**weights(I, H), **kw)


def seq(B=2, T=5, I=3, seed=1):
    return np.random.default_rng(seed).normal(size=(B, T, I)).astype(np.float32)


def zeros_state(B=2, R=4, H=4):
    return np.zeros((B, R), np.float32), np.zeros((B, H), np.float32)


def esc(value) -> str:
    """A regex matching str(value) literally (shapes, reprs)."""
    return re.escape(str(value))


@pytest.fixture
def peak_mb():
    """Peak MB traced while the test body runs (NumPy reports to tracemalloc)."""
    tracemalloc.start()
    yield lambda: tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()


# -- the exception classes ----------------------------------------------------


def test_errors_subclass_builtins_so_plain_except_works():
    for cls, base in [
        (ShapeError, ValueError),
        (NonFiniteError, ValueError),
        (ConfigError, ValueError),
        (DTypeError, TypeError),
        (StreamError, RuntimeError),
    ]:
        assert issubclass(cls, FastLSTMError) and issubclass(cls, base)
    layer = make_layer()
    with pytest.raises(ValueError, match=r"x must be 3-D"):
        layer(np.zeros((5, 3)))
    with pytest.raises(TypeError, match=r"x has dtype bool"):
        layer(np.zeros((2, 5, 3), bool))
    with pytest.raises(RuntimeError, match=r"cannot stream"):
        make_layer(go_backwards=True).stream(1)
    assert fastlstm.ShapeError is ShapeError  # re-exported at the top level


# -- LSTM construction: shapes --------------------------------------------------


@pytest.mark.parametrize("shape", [(16,), (3, 16, 1), (3, 10), (3, 6), (0, 16), (3, 0)])
def test_kernel_must_be_2d_with_width_divisible_by_4(shape):
    w = weights()
    w["kernel"] = np.zeros(shape)
    with pytest.raises(
        ShapeError,
        match=r"kernel must have shape \(input_size, "
        r"4\*units\) with both >= 1, got " + esc(shape),
    ):
        LSTM(**w)


def test_one_shape_error_lists_every_weight_problem():
    with pytest.raises(ShapeError, match=r"^invalid LSTM weights:") as info:
        LSTM(
            np.zeros((3, 16)),
            np.zeros((5, 16)),
            np.zeros(15),
            peepholes=np.zeros((2, 4)),
        )
    msg = str(info.value)
    assert (
        "recurrent_kernel must have shape (4, 16) for kernel (3, 16), "
        "got (5, 16)" in msg
    )
    assert "bias must have shape (16,) for kernel (3, 16), got (15,)" in msg
    assert "peepholes must have shape (3, 4) for kernel (3, 16), got (2, 4)" in msg


def test_malformed_projection_is_reported_once_with_the_other_problems():
    with pytest.raises(
        ShapeError,
        match=r"projection must have shape "
        r"\(units, proj_size\), got \(4, 2, 1\)",
    ) as info:
        LSTM(
            np.zeros((3, 16)),
            np.zeros((5, 16)),
            np.zeros(15),
            projection=np.zeros((4, 2, 1)),
        )
    msg = str(info.value)
    assert msg.count("projection") == 1
    assert "recurrent_kernel must have shape (4, 16)" in msg
    assert "bias must have shape (16,)" in msg


def test_projection_shapes():
    w = weights(P=2)
    w["recurrent_kernel"] = np.zeros((4, 16))  # rows must be proj_size, not units
    w["projection"] = np.zeros((3, 2))  # rows must be units
    with pytest.raises(
        ShapeError,
        match=r"recurrent_kernel must have shape "
        r"\(2, 16\) \(rows = proj_size\)",
    ) as info:
        LSTM(**w)
    assert "projection must have shape (4, 2) for kernel (3, 16), got (3, 2)" in str(
        info.value
    )


# -- LSTM construction: values and dtypes -------------------------------------


@pytest.mark.parametrize(
    "name", ["kernel", "recurrent_kernel", "bias", "peepholes", "projection"]
)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_name_the_array_and_index(name, bad):
    w = weights(P=2, peepholes=True)
    index = (1,) if w[name].ndim == 1 else (1, 1)
    w[name][index] = bad
    with pytest.raises(
        NonFiniteError,
        match=rf"^{name} holds 1 NaN/inf "
        rf"value\(s\), first at index {esc(index)}",
    ):
        LSTM(**w)


@pytest.mark.parametrize("name", ["kernel", "recurrent_kernel", "bias"])
@pytest.mark.parametrize("dtype", [bool, complex, str, object])
def test_weights_of_a_non_real_dtype_are_refused(name, dtype):
    w = weights()
    w[name] = w[name].astype(dtype)
    with pytest.raises(
        DTypeError,
        match=rf"^{name} has dtype "
        rf"{esc(w[name].dtype)}; a real floating or integer",
    ):
        LSTM(**w)


def test_ragged_weights_are_refused():
    with pytest.raises(DTypeError, match=r"^kernel cannot be read as an array"):
        LSTM([[1.0, 2.0], [3.0]], np.zeros((4, 16)))


@pytest.mark.parametrize(
    "clip, got",
    [
        (0, "positive finite number, got 0.0"),
        (-1.0, "positive finite number, got -1.0"),
        (np.nan, "positive finite number, got nan"),
        (np.inf, "positive finite number, got inf"),
        ("big", "positive number or None, got 'big'"),
        (True, "positive number or None, got True"),
    ],
)
def test_cell_clip_must_be_positive_and_finite(clip, got):
    with pytest.raises(
        ConfigError,
        match=r"^invalid LSTM options:\n  - cell_clip "
        rf"must be a {esc(got)}",
    ):
        make_layer(cell_clip=clip)


def test_proj_clip_needs_a_projection_and_a_positive_value():
    with pytest.raises(
        ConfigError,
        match=r"proj_clip is set but there is no "
        r"projection",
    ):
        make_layer(proj_clip=1.0)
    with pytest.raises(
        ConfigError,
        match=r"proj_clip must be a positive finite "
        r"number, got 0\.0",
    ):
        LSTM(**weights(P=2), proj_clip=0.0)


@pytest.mark.parametrize(
    "flag",
    [
        "go_backwards",
        "return_sequences",
        "return_state",
        "zero_output_for_mask",
        "time_major",
    ],
)
@pytest.mark.parametrize("value", [1, "no", None])
def test_flags_must_be_bool(flag, value):
    with pytest.raises(
        ConfigError,
        match=rf"{flag} must be a bool, got "
        rf"{esc(repr(value))}",
    ):
        make_layer(**{flag: value})
    make_layer(**{flag: np.bool_(False)})  # NumPy booleans are fine


@pytest.mark.parametrize("arg", ["activation", "recurrent_activation"])
def test_unknown_activation_lists_the_supported_names(arg):
    with pytest.raises(
        ConfigError,
        match=rf"^{arg}='swish' is not a supported "
        r"activation; supported: .*hard_sigmoid_k2.*tanh",
    ):
        make_layer(**{arg: "swish"})
    with pytest.raises(
        ConfigError,
        match=rf"^{arg} must be an activation name "
        r"or fastlstm.Activation, got int",
    ):
        make_layer(**{arg: 3})


@pytest.mark.parametrize("arg", ["activation", "recurrent_activation"])
@pytest.mark.parametrize("name", ["hard_sigmoid", " Hard_Sigmoid "])
def test_hard_sigmoid_is_ambiguous(arg, name):
    with pytest.raises(
        ConfigError,
        match=rf"^{arg}='hard_sigmoid' is ambiguous: "
        r"Keras 1/2 .*Keras 3 .*say 'hard_sigmoid_k2' or "
        r"'hard_sigmoid_k3'",
    ):
        make_layer(**{arg: name})
    make_layer(**{arg: "hard_sigmoid_k2"})
    make_layer(**{arg: "hard_sigmoid_k3"})


@pytest.mark.parametrize("policy", ["omit", "RAISE", None])
def test_bad_nan_policy(policy):
    pattern = r"nan_policy must be one of \('raise', 'propagate'\), got " + esc(
        repr(policy)
    )
    with pytest.raises(ConfigError, match=pattern):
        make_layer(nan_policy=policy)
    with pytest.raises(ConfigError, match=pattern):
        LSTM.from_spec(make_layer().spec, nan_policy=policy)


# -- calls: x -------------------------------------------------------------------


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("shape", [(5, 3), (2, 5, 3, 1), (3,), ()])
def test_x_must_be_3d(shape, time_major):
    layout = "(time, batch, features)" if time_major else "(batch, time, features)"
    with pytest.raises(
        ShapeError,
        match=rf"^x must be 3-D {esc(layout)}, got "
        rf"shape {esc(shape)}",
    ):
        make_layer(time_major=time_major)(np.zeros(shape))


@pytest.mark.parametrize("time_major", [False, True])
def test_wrong_feature_count_names_both_numbers(time_major):
    with pytest.raises(
        ShapeError,
        match=r"^x has 4 features per step but the "
        r"layer expects 3: shape \(2, 5, 4\)",
    ):
        make_layer(time_major=time_major)(np.zeros((2, 5, 4)))


@pytest.mark.parametrize("time_major", [False, True])
def test_empty_batch_or_time(time_major):
    layer = make_layer(time_major=time_major)
    no_batch = (5, 0, 3) if time_major else (0, 5, 3)
    no_time = (0, 2, 3) if time_major else (2, 0, 3)
    with pytest.raises(
        ShapeError,
        match=rf"x has batch size 0: shape "
        rf"{esc(no_batch)}",
    ):
        layer(np.zeros(no_batch))
    with pytest.raises(
        ShapeError,
        match=rf"x has 0 time steps: shape "
        rf"{esc(no_time)}",
    ):
        layer(np.zeros(no_time))


def _strided(x):
    """A non-contiguous view holding x's values (every other time step)."""
    big = np.zeros((x.shape[0], 2 * x.shape[1], x.shape[2]), np.float32)
    big[:, ::2] = x
    return big[:, ::2]


def _read_only(x):
    x = x.astype(np.float32)
    x.setflags(write=False)
    return x


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(np.int64),
        lambda x: x.astype(np.int8),
        lambda x: x.astype(np.float64),
        lambda x: x.astype(np.float16),
        lambda x: np.asfortranarray(x, np.float32),
        _strided,
        _read_only,
        lambda x: x.tolist(),
    ],
    ids=[
        "int64",
        "int8",
        "float64",
        "float16",
        "F-ordered",
        "strided",
        "read-only",
        "list",
    ],
)
def test_other_real_inputs_are_accepted_and_give_the_same_result(convert):
    layer = make_layer(return_sequences=True)
    x = np.random.default_rng(2).integers(-3, 4, (2, 5, 3))  # exact in all dtypes
    expected = layer(np.ascontiguousarray(x, np.float32))
    np.testing.assert_array_equal(layer(convert(x)), expected)


@pytest.mark.parametrize("dtype", [bool, complex, str, object])
def test_x_of_a_non_real_dtype_is_refused(dtype):
    x = np.zeros((2, 5, 3), dtype)
    with pytest.raises(
        DTypeError,
        match=rf"^x has dtype {esc(x.dtype)}; "
        r"a real floating or integer array is required",
    ):
        make_layer()(x)


def test_ragged_x_is_refused():
    with pytest.raises(DTypeError, match=r"^x cannot be read as an array"):
        make_layer()([[[1, 2, 3]], [[1, 2]]])


# -- calls: mask and lengths ----------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 2), (2,), (2, 4), (1, 2, 5)])
def test_mask_shape(shape):
    with pytest.raises(
        ShapeError,
        match=r"^mask must have shape \(batch, time\) "
        rf"= \(2, 5\), got {esc(shape)}",
    ):
        make_layer()(seq(), mask=np.ones(shape, bool))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, object, str])
def test_mask_must_be_boolean_or_integer(dtype):
    mask = np.ones((2, 5), dtype)
    with pytest.raises(
        DTypeError,
        match=r"^mask must be boolean \(or 0/1 "
        rf"integers\), got dtype {esc(mask.dtype)}",
    ):
        make_layer()(seq(), mask=mask)


def test_integer_mask_equals_boolean_mask():
    layer, x = make_layer(return_sequences=True), seq()
    mask = np.array([[1, 1, 0, 1, 1], [1, 0, 0, 1, 1]])
    np.testing.assert_array_equal(layer(x, mask=mask), layer(x, mask=mask == 1))


@pytest.mark.parametrize(
    "lengths, error, pattern",
    [
        (
            [3, -1],
            ShapeError,
            r"^lengths\[1\] = -1 is outside \[0, 5\] \(the input "
            r"has 5 time steps\)",
        ),
        ([6, 1], ShapeError, r"^lengths\[0\] = 6 is outside \[0, 5\]"),
        (np.array([2**40, 1]), ShapeError, r"^lengths\[0\] = 1099511627776 is outside"),
        (
            [1, 2, 3],
            ShapeError,
            r"^lengths must have shape \(batch,\) = \(2,\), "
            r"got \(3,\)",
        ),
        (
            [[1, 2]],
            ShapeError,
            r"^lengths must have shape \(batch,\) = \(2,\), "
            r"got \(1, 2\)",
        ),
        ([1.0, 2.0], DTypeError, r"^lengths must be integers, got dtype float64"),
        ([True, True], DTypeError, r"^lengths must be integers, got dtype bool"),
    ],
    ids=["negative", "beyond-T", "huge", "too-long", "2-D", "float", "bool"],
)
def test_bad_lengths(lengths, error, pattern):
    with pytest.raises(error, match=pattern):
        make_layer()(seq(), lengths=lengths)


# -- calls: initial state ------------------------------------------------------


@pytest.mark.parametrize(
    "h_shape, c_shape, pattern",
    [
        (
            (3, 4),
            (2, 4),
            r"initial_state\[0\] \(h\) must have shape \(batch, 4\) = "
            r"\(2, 4\), got \(3, 4\)",
        ),
        (
            (2, 4),
            (1, 4),
            r"initial_state\[1\] \(c\) must have shape \(batch, 4\) = "
            r"\(2, 4\), got \(1, 4\)",
        ),
        (
            (2, 5),
            (2, 4),
            r"initial_state\[0\] \(h\) must have shape \(batch, 4\) = "
            r"\(2, 4\), got \(2, 5\)",
        ),
        ((4,), (2, 4), r"initial_state\[0\] \(h\) must have shape .* got \(4,\)"),
    ],
)
def test_initial_state_shapes(h_shape, c_shape, pattern):
    with pytest.raises(ShapeError, match=pattern):
        make_layer()(seq(), initial_state=(np.zeros(h_shape), np.zeros(c_shape)))


def test_initial_state_width_follows_the_projection():
    layer = LSTM(**weights(P=2))
    with pytest.raises(
        ShapeError,
        match=r"initial_state\[0\] \(h\) must have "
        r"shape \(batch, 2\) = \(2, 2\), got \(2, 4\)",
    ):
        layer(seq(), initial_state=zeros_state(R=4))
    layer(seq(), initial_state=zeros_state(R=2))


@pytest.mark.parametrize(
    "state",
    [
        np.zeros((2, 2, 4)),
        [np.zeros((2, 4))] * 3,
        [np.zeros((2, 4))],
        3,
        "hc",
    ],
    ids=["ndarray", "triple", "single", "int", "str"],
)
def test_initial_state_must_be_a_pair(state):
    with pytest.raises(
        ShapeError,
        match=r"^initial_state must be a pair \(h, c\) "
        r"of arrays",
    ):
        make_layer()(seq(), initial_state=state)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_initial_state(which, bad):
    state = list(zeros_state())
    state[which][1, 2] = bad
    name = ["h", "c"][which]
    with pytest.raises(
        NonFiniteError,
        match=rf"^initial_state\[{which}\] "
        rf"\({name}\) contains NaN or inf",
    ):
        make_layer()(seq(), initial_state=state)
    out = make_layer(nan_policy="propagate")(seq(), initial_state=state)
    assert np.isfinite(out[0]).all()  # row 0 is untouched
    if np.isnan(bad):
        assert np.isnan(out[1]).all()


# -- NaN policy -------------------------------------------------------------------


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_in_x_names_batch_row_and_time_step(time_major, bad):
    x = seq()
    x[1, 3, 2] = bad
    if time_major:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    with pytest.raises(
        NonFiniteError,
        match=r"^x contains NaN or inf at batch "
        r"row 1, time step 3 \(nan_policy='raise'; masked steps "
        r"are not checked; nan_policy='propagate' skips",
    ) as info:
        make_layer(time_major=time_major)(x)
    assert isinstance(info.value, ValueError)


def test_nan_at_a_masked_step_is_not_checked_and_does_not_leak():
    layer = make_layer(return_sequences=True)
    x = seq()
    x[1, 3] = np.nan
    mask = np.ones((2, 5), bool)
    mask[1, 3] = False
    out = layer(x, mask=mask)
    assert np.isfinite(out).all()
    clean = np.nan_to_num(x, nan=0.0)  # a masked step's input is never read
    np.testing.assert_array_equal(out, layer(clean, mask=mask))
    np.testing.assert_array_equal(
        layer(x, lengths=[5, 3]), layer(clean, lengths=[5, 3])
    )
    with pytest.raises(NonFiniteError, match=r"batch row 1, time step 3"):
        layer(x, lengths=[5, 4])  # step 3 of row 1 is valid again


def test_nan_policy_propagate_lets_nan_flow_to_the_outputs():
    x = seq()
    x[1, 3, 0] = np.nan
    out = make_layer(return_sequences=True, nan_policy="propagate")(x)
    assert np.isfinite(out[0]).all() and np.isfinite(out[1, :3]).all()
    assert np.isnan(out[1, 3:]).all()


def test_stream_step_nan_names_the_row():
    stream = make_layer().stream(2)
    x = np.zeros((2, 3))
    x[1, 0] = np.nan
    with pytest.raises(
        NonFiniteError,
        match=r"^x contains NaN or inf at batch "
        r"row 1, time step 0",
    ):
        stream.step(x)
    assert np.isfinite(stream.step(x, mask=[True, False])).all()


# -- absurd sizes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_big",
    [
        lambda: np.lib.stride_tricks.as_strided(
            np.zeros(16, np.float32), (BIG, 16), (0, 4)
        ),
        lambda: np.broadcast_to(np.zeros(16), (BIG, 16)),  # float64: no conversion
    ],
    ids=["as_strided-float32", "broadcast_to-float64"],
)
def test_huge_kernel_is_refused_without_copying(make_big, peak_mb):
    with pytest.raises(
        ShapeError,
        match=rf"kernel shape \({BIG}, 16\) exceeds "
        rf"the size limit of {2**24} per dimension",
    ):
        LSTM(make_big(), np.zeros((4, 16)))
    assert peak_mb() < 16


def test_huge_projection_is_refused_without_copying(peak_mb):
    with pytest.raises(
        ShapeError,
        match=rf"projection shape \(4, {BIG}\) exceeds "
        rf"the size limit of {2**24} per dimension",
    ):
        LSTM(
            np.zeros((3, 16)),
            np.broadcast_to(np.zeros(16), (BIG, 16)),
            projection=np.broadcast_to(np.zeros(1), (4, BIG)),
        )
    assert peak_mb() < 16


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(BIG, 1, 3), (1, BIG, 3)], ids=["huge-first-axis", "huge-second-axis"]
)
def test_huge_x_is_refused_without_copying(shape, dtype, time_major, peak_mb):
    x = np.broadcast_to(np.zeros(3, dtype), shape)
    with pytest.raises(
        ShapeError,
        match=rf"^x shape {esc(shape)} exceeds "
        rf"{2**24} per dimension",
    ):
        make_layer(time_major=time_major)(x)
    assert peak_mb() < 16


def test_huge_step_and_state_are_refused_without_copying(peak_mb):
    stream = make_layer().stream(2)
    with pytest.raises(
        ShapeError,
        match=rf"x must have shape \(batch, features\) "
        rf"= \(2, 3\), got \({BIG}, 3\)",
    ):
        stream.step(np.broadcast_to(np.zeros(3), (BIG, 3)))
    with pytest.raises(
        ShapeError,
        match=rf"state\[0\] \(h\) must have shape "
        rf"\(batch, 4\) = \(2, 4\), got \({BIG}, 4\)",
    ):
        stream.state = (np.broadcast_to(np.zeros(4), (BIG, 4)), np.zeros((2, 4)))
    assert peak_mb() < 16


# -- streams ------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [0, -1, True, "3", 2.0, None, BIG])
def test_stream_batch_size(batch):
    with pytest.raises(
        ShapeError,
        match=r"^batch_size must be an integer >= 1, "
        rf"got {esc(repr(batch))}",
    ):
        make_layer().stream(batch)


@pytest.mark.parametrize("shape", [(2, 1, 3), (3, 3), (2, 4), (3,)])
def test_stream_step_shape(shape):
    stream = make_layer().stream(2)
    with pytest.raises(
        ShapeError,
        match=r"^x must have shape \(batch, features\) "
        rf"= \(2, 3\), got {esc(shape)}",
    ):
        stream.step(np.zeros(shape))
    # a refused call leaves the stream usable and unchanged
    fresh = make_layer().stream(2)
    x = np.ones((2, 3))
    np.testing.assert_array_equal(stream.step(x), fresh.step(x))


def test_stream_step_mask():
    stream = make_layer().stream(2)
    with pytest.raises(
        ShapeError,
        match=r"^mask must have shape .* = \(2,\), "
        r"got \(3,\)",
    ):
        stream.step(np.zeros((2, 3)), mask=np.ones(3, bool))
    with pytest.raises(DTypeError, match=r"^mask must be boolean"):
        stream.step(np.zeros((2, 3)), mask=np.ones(2))


def test_stream_feed_batch_mismatch_and_features():
    stream = make_layer().stream(2)
    with pytest.raises(
        ShapeError,
        match=r"^x has batch size 3 but the stream "
        r"was made for 2",
    ):
        stream.feed(seq(B=3))
    with pytest.raises(
        ShapeError,
        match=r"^x has 4 features per step but the "
        r"layer expects 3",
    ):
        stream.feed(seq(I=4))
    with pytest.raises(ShapeError, match=r"^x has 0 time steps"):
        stream.feed(np.zeros((2, 0, 3)))


def test_streams_that_cannot_exist():
    with pytest.raises(
        StreamError,
        match=r"^a go_backwards layer cannot stream: "
        r"it needs the whole sequence",
    ):
        make_layer(go_backwards=True).stream(2)
    fw = make_layer(return_sequences=True)
    bw = make_layer(return_sequences=True, go_backwards=True)
    with pytest.raises(
        StreamError,
        match=r"^a Bidirectional layer cannot "
        r"stream: its backward half needs the whole sequence",
    ):
        Bidirectional(fw, bw).stream(2)
    with pytest.raises(
        StreamError,
        match=r"^layer 0 is Bidirectional, which "
        r"cannot stream",
    ):
        Stack([Bidirectional(fw, bw)]).stream(2)
    with pytest.raises(StreamError, match=r"^a go_backwards layer cannot stream"):
        Stack([fw, LSTM(**weights(I=4), go_backwards=True)]).stream(2)


@pytest.mark.parametrize(
    "value, error, pattern",
    [
        (
            (np.zeros((3, 4)), np.zeros((2, 4))),
            ShapeError,
            r"^state\[0\] \(h\) must have shape \(batch, 4\) = \(2, 4\), got \(3, 4\)",
        ),
        (
            (np.zeros((2, 4)), np.zeros((2, 5))),
            ShapeError,
            r"^state\[1\] \(c\) must have shape \(batch, 4\) = \(2, 4\), got \(2, 5\)",
        ),
        (np.zeros((2, 2, 4)), ShapeError, r"^state must be a pair \(h, c\) of arrays"),
        (None, ShapeError, r"^state must be a pair \(h, c\) of arrays"),
        (
            (np.zeros((2, 4)), np.full((2, 4), np.nan)),
            NonFiniteError,
            r"^state\[1\] \(c\) contains NaN or inf",
        ),
        (
            (np.zeros((2, 4), complex), np.zeros((2, 4))),
            DTypeError,
            r"^state\[0\] \(h\) has dtype complex128",
        ),
    ],
    ids=["h-batch", "c-width", "ndarray", "None", "nan", "complex"],
)
def test_stream_state_setter(value, error, pattern):
    stream = make_layer().stream(2)
    stream.state = (np.ones((2, 4)), np.ones((2, 4)))
    with pytest.raises(error, match=pattern):
        stream.state = value
    h, c = stream.state  # a refused state leaves the old one in place
    assert (h == 1).all() and (c == 1).all()


@pytest.mark.parametrize(
    "value, got",
    [
        ([zeros_state()], "list of length 1"),
        (None, "NoneType"),
        (3, "int"),
    ],
)
def test_stack_stream_state_needs_one_pair_per_layer(value, got):
    stream = Stack([make_layer(return_sequences=True), make_layer(I=4)]).stream(2)
    with pytest.raises(
        ShapeError,
        match=r"^state must be a list holding one state per layer \(2\): "
        rf"\(h, c\) for an LSTM, h otherwise; got {got}",
    ):
        stream.state = value


# -- Bidirectional -------------------------------------------------------------------


def _bidi_pair(**kw):
    fw_kw = {k[3:]: v for k, v in kw.items() if k.startswith("fw_")}
    bw_kw = {k[3:]: v for k, v in kw.items() if k.startswith("bw_")}
    return (make_layer(**fw_kw), make_layer(**{"go_backwards": True, **bw_kw}))


@pytest.mark.parametrize(
    "kw, merge_mode, pattern",
    [
        (
            {"bw_go_backwards": False},
            "concat",
            r"backward\.go_backwards must differ from forward\.go_backwards",
        ),
        (
            {"fw_go_backwards": True},
            "concat",
            r"backward\.go_backwards must differ from forward\.go_backwards",
        ),
        ({"bw_H": 5}, "sum", r"merge_mode='sum' needs equal output sizes, got 4 and 5"),
        ({"bw_H": 5}, "ave", r"merge_mode='ave' needs equal output sizes, got 4 and 5"),
        ({"fw_H": 2}, "mul", r"merge_mode='mul' needs equal output sizes, got 2 and 4"),
        ({"bw_I": 2}, "concat", r"input_size differs: forward 3, backward 2"),
        (
            {"fw_return_sequences": True},
            "concat",
            r"return_sequences differs: forward True, backward False",
        ),
        (
            {"bw_time_major": True},
            "concat",
            r"time_major differs: forward False, backward True",
        ),
    ],
    ids=[
        "both-forward",
        "both-backward",
        "sum-sizes",
        "ave-sizes",
        "mul-sizes",
        "input-size",
        "return_sequences",
        "time_major",
    ],
)
def test_bidirectional_config(kw, merge_mode, pattern):
    with pytest.raises(ConfigError, match=r"^invalid Bidirectional: .*" + pattern):
        Bidirectional(*_bidi_pair(**kw), merge_mode=merge_mode)


def test_bidirectional_lists_every_problem_and_allows_concat_of_any_sizes():
    with pytest.raises(
        ConfigError,
        match=r"go_backwards must differ.*; "
        r"input_size differs",
    ):
        Bidirectional(*_bidi_pair(bw_go_backwards=False, bw_I=2))
    assert Bidirectional(*_bidi_pair(bw_H=5)).output_size == 9


@pytest.mark.parametrize("mode", ["max", "None", "", 0])
def test_bidirectional_merge_mode(mode):
    with pytest.raises(
        ConfigError,
        match=r"^merge_mode must be one of \('concat', "
        rf"'sum', 'mul', 'ave', None\), got {esc(repr(mode))}",
    ):
        Bidirectional(*_bidi_pair(), merge_mode=mode)


def test_bidirectional_needs_two_recurrent_layers():
    with pytest.raises(
        ConfigError,
        match=r"^Bidirectional's backward must be a fastlstm LSTM, GRU or "
        r"SimpleRNN layer, got str",
    ):
        Bidirectional(make_layer(), "backward")


@pytest.mark.parametrize(
    "state",
    [
        [np.zeros((2, 4))] * 2,
        np.zeros((4, 2, 4)),
        3,
    ],
    ids=["two-arrays", "ndarray", "int"],
)
def test_bidirectional_initial_state_needs_four_arrays(state):
    layer = Bidirectional(*_bidi_pair())
    with pytest.raises(
        ShapeError,
        match=r"^initial_state of a Bidirectional layer must list 4 arrays: "
        r"the forward states, then the backward ones \(\[h_fw, c_fw, h_bw, c_bw\]\)",
    ):
        layer(seq(), initial_state=state)
    with pytest.raises(
        ShapeError,
        match=r"^initial_state\[0\] \(h\) must have "
        r"shape \(batch, 4\) = \(2, 4\), got \(3, 4\)",
    ):
        layer(seq(), initial_state=[np.zeros((3, 4))] * 4)


# -- Stack ---------------------------------------------------------------------------


def _seq_layer(**kw):
    return make_layer(return_sequences=True, **kw)


@pytest.mark.parametrize(
    "layers, pattern",
    [
        (
            [make_layer(), make_layer(I=4)],
            r"layer 0 must have return_sequences=True to feed layer 1",
        ),
        (
            [_seq_layer(), make_layer(I=3)],
            r"layer 1 takes 3 features but layer 0 "
            r"outputs 4",
        ),
        (
            [make_layer(return_state=True)],
            r"layer 0 has return_state=True; use "
            r"Stack\(\.\.\., return_state=True\)",
        ),
        (
            [_seq_layer(), make_layer(I=4, time_major=True)],
            r"layer 1 time_major differs from layer 0",
        ),
        (
            [
                Bidirectional(
                    _seq_layer(), _seq_layer(go_backwards=True), merge_mode=None
                ),
                make_layer(I=4),
            ],
            r"layer 0 is a Bidirectional with merge_mode=None",
        ),
    ],
    ids=[
        "no-return_sequences",
        "sizes",
        "sub-layer-return_state",
        "time_major",
        "merge_mode-None",
    ],
)
def test_stack_config(layers, pattern):
    with pytest.raises(ConfigError, match=r"^invalid Stack:\n  - .*" + pattern):
        Stack(layers)


def test_stack_lists_every_problem():
    with pytest.raises(ConfigError, match=r"invalid Stack") as info:
        Stack([make_layer(), make_layer(I=5, return_state=True)])
    msg = str(info.value)
    for part in [
        "layer 0 must have return_sequences=True",
        "layer 1 has return_state=True",
        "layer 1 takes 5 features but layer 0 outputs 4",
    ]:
        assert part in msg


@pytest.mark.parametrize(
    "layers, pattern",
    [
        ([], r"^a Stack needs at least one layer"),
        (
            [_seq_layer(), "layer"],
            r"^layer 1 is a str; a Stack holds fastlstm LSTM, GRU, SimpleRNN "
            r"and Bidirectional layers",
        ),
        ([make_layer().spec], r"^layer 0 is a LSTMSpec"),
    ],
    ids=["empty", "string", "spec"],
)
def test_stack_layers_must_be_layers(layers, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Stack(layers)


def test_stack_return_state_must_be_bool():
    with pytest.raises(ConfigError, match=r"^return_state must be a bool, got 'yes'"):
        Stack([make_layer()], return_state="yes")


@pytest.mark.parametrize(
    "state, got",
    [
        ([None], "list of length 1"),
        (3, "int"),
        (np.zeros(2), "ndarray"),
    ],
)
def test_stack_initial_state_needs_one_state_per_layer(state, got):
    stack = Stack([_seq_layer(), make_layer(I=4)])
    with pytest.raises(
        ShapeError,
        match=r"^initial_state must be a list holding "
        rf"one state per layer \(2\), got {got}",
    ):
        stack(seq(), initial_state=state)
    with pytest.raises(
        ShapeError,
        match=r"^initial_state\[1\]\[0\] \(h\) must "
        r"have shape \(batch, 4\) = \(2, 4\), got \(3, 4\)",
    ):
        stack(seq(), initial_state=[None, (np.zeros((3, 4)), np.zeros((2, 4)))])


def test_stack_reports_nan_in_x_and_bad_features():
    stack = Stack([_seq_layer(), make_layer(I=4)])
    x = seq()
    x[0, 2, 1] = np.nan
    with pytest.raises(NonFiniteError, match=r"batch row 0, time step 2"):
        stack(x)
    with pytest.raises(
        ShapeError,
        match=r"x has 4 features per step but the "
        r"layer expects 3",
    ):
        stack(seq(I=4))


def test_absurd_total_size_is_refused_before_allocating():
    """Each dimension is legal, their product is not: a ShapeError naming the
    array and its size, not NumPy's MemoryError."""
    layer = make_layer(I=3, H=4)
    x = np.broadcast_to(np.float32(0), (1 << 16, 1 << 16, 3))
    with pytest.raises(fastlstm.ShapeError, match=r"x of shape .* elements"):
        layer(x)
    big = np.broadcast_to(np.float32(0), (1 << 20, 1 << 20))
    with pytest.raises(fastlstm.ShapeError, match=r"kernel of shape"):
        fastlstm.LSTM(big, np.zeros((4, 16)))


@pytest.mark.parametrize("clip", [1e300, 1e-50])
def test_clip_not_representable_in_float32(clip):
    with pytest.raises(
        fastlstm.ConfigError, match="not representable as a positive float32"
    ):
        make_layer(cell_clip=clip)
