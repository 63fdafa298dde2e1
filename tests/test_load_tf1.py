"""TF1 rnn_cell LSTMs: checkpoints (tensor bundles read without TensorFlow),
.npz and dicts of variables, run like dynamic_rnn / bidirectional_dynamic_rnn.

Fixtures: tests/fixtures/tf1/<case>/ (made by
tests/fixtures/make_tf1_fixtures.py with tf.compat.v1): the
checkpoint, variables.npz, ref.npz and case.json. Crafted bundles come from
tests/tf_bundle.py; the live test runs TensorFlow in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32, UNDER_SANITIZER
from tf_bundle import write_bundle

import fastlstm
from fastlstm.frontends.tf1 import LSTMStateTuple, from_tf1
from fastlstm.loaders.tf1_checkpoint import CheckpointReader, snappy_decompress

FIXTURES = Path(__file__).parent / "fixtures" / "tf1"
CASES = sorted(p.parent.name for p in FIXTURES.glob("*/case.json"))
OPTIONS = ("scope", "forget_bias", "cell_clip", "proj_clip", "activation", "time_major")


def outputs_by_name(model, out, state) -> dict:
    """The fixtures' array names for a model's (outputs, state)."""
    if model.bidirectional:
        (of, ob), (sf, sb) = out, state
        return {
            "output_fw": of,
            "output_bw": ob,
            "c_n_fw": sf.c,
            "h_n_fw": sf.h,
            "c_n_bw": sb.c,
            "h_n_bw": sb.h,
        }
    if isinstance(state, LSTMStateTuple):
        return {"output": out, "c_n": state.c, "h_n": state.h}
    got = {"output": out}
    for k, s in enumerate(state):
        got[f"c_n_l{k}"], got[f"h_n_l{k}"] = s.c, s.h
    return got


@pytest.mark.parametrize(
    "source", ["model.ckpt", "model.ckpt.index", "variables.npz", "folder"]
)
@pytest.mark.parametrize("name", CASES)
def test_fixture_matches_tf(name, source):
    folder = FIXTURES / name
    meta = json.loads((folder / "case.json").read_text())
    ref = dict(np.load(folder / "ref.npz"))
    opts = {k: v for k, v in meta["loader_options"].items() if k in OPTIONS}
    path = folder if source == "folder" else folder / source
    model = fastlstm.load(path, **opts)
    assert isinstance(model, fastlstm.TF1LSTM)
    lengths = ref["lengths"].astype(np.int32) if "lengths" in ref else None
    init = LSTMStateTuple(ref["c0"], ref["h0"]) if "c0" in ref else None
    out, state = model(ref["x"], sequence_length=lengths, initial_state=init)
    got = outputs_by_name(model, out, state)
    assert set(got) == {o["array"] for o in meta["outputs"]}
    for key, value in got.items():
        assert value.shape == ref[key].shape, key
        err = float(np.abs(value - ref[key]).max())
        assert err <= TOL_F32, f"{name} {key}: max |fastlstm - TF| = {err:.3g}"


def test_fixture_index_read_exactly():
    if "lstm_cell_peep_clip_proj" not in CASES:
        pytest.skip("tf1 fixtures not generated yet")
    folder = FIXTURES / "lstm_cell_peep_clip_proj"
    reader = CheckpointReader(folder / "model.ckpt")
    npz = np.load(folder / "variables.npz")
    assert sorted(reader.names) == sorted(npz.files)
    for n in npz.files:
        assert np.array_equal(reader.get(n), npz[n]), n


def test_fixture_without_forget_bias_differs():
    if "lstm_cell_peep_clip_proj" not in CASES:
        pytest.skip("tf1 fixtures not generated yet")
    folder = FIXTURES / "lstm_cell_peep_clip_proj"
    ref = dict(np.load(folder / "ref.npz"))
    model = fastlstm.load(folder / "model.ckpt", cell_clip=3.0, proj_clip=2.0)
    out, _ = model(ref["x"], initial_state=(ref["c0"], ref["h0"]))
    assert np.abs(out - ref["output"]).max() > 1e-3  # forget_bias 1.0 != 0.5


# --- an independent NumPy dynamic_rnn, written from TF's equations -----------


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def tf_cell_run(
    x,
    v,
    scope,
    fb=1.0,
    c0=None,
    h0=None,
    lengths=None,
    reverse=False,
    cell_clip=None,
    proj_clip=None,
):
    """dynamic_rnn over (B, T, I) for the cell at ``scope`` in ``v``."""
    k, b = v[f"{scope}/kernel"].astype(np.float64), v[f"{scope}/bias"]
    H = k.shape[1] // 4
    proj = v.get(f"{scope}/projection/kernel")
    R = H if proj is None else proj.shape[1]
    B, T, _ = x.shape
    c = np.zeros((B, H)) if c0 is None else c0.astype(np.float64)
    m = np.zeros((B, R)) if h0 is None else h0.astype(np.float64)
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    if reverse:  # reverse_sequence over each row's valid prefix
        x = x.copy()
        for r, n in enumerate(lens):
            x[r, :n] = x[r, :n][::-1]
    out = np.zeros((B, T, R))
    peep = f"{scope}/w_i_diag" in v
    for t in range(T):
        z = np.concatenate([x[:, t], m], 1) @ k + b
        i, j, f, o = np.split(z, 4, axis=1)
        if peep:
            i = i + v[f"{scope}/w_i_diag"] * c
            f = f + v[f"{scope}/w_f_diag"] * c
        cn = sigmoid(f + fb) * c + sigmoid(i) * np.tanh(j)
        if cell_clip is not None:
            cn = np.clip(cn, -cell_clip, cell_clip)
        if peep:
            o = o + v[f"{scope}/w_o_diag"] * cn
        mn = sigmoid(o) * np.tanh(cn)
        if proj is not None:
            mn = mn @ proj
            if proj_clip is not None:
                mn = np.clip(mn, -proj_clip, proj_clip)
        valid = (t < lens)[:, None]
        c, m = np.where(valid, cn, c), np.where(valid, mn, m)
        out[:, t] = np.where(valid, mn, 0.0)
    if reverse:
        for r, n in enumerate(lens):
            out[r, :n] = out[r, :n][::-1]
    return out, LSTMStateTuple(c, m)


def cell_vars(rng, scope, I, H, P=0, peep=False) -> dict:
    R = P or H
    v = {
        f"{scope}/kernel": rng.normal(0, 0.5, (I + R, 4 * H)).astype(np.float32),
        f"{scope}/bias": rng.normal(0, 0.3, 4 * H).astype(np.float32),
    }
    if peep:
        for g in "ifo":
            v[f"{scope}/w_{g}_diag"] = rng.normal(0, 0.3, H).astype(np.float32)
    if P:
        v[f"{scope}/projection/kernel"] = rng.normal(0, 0.6, (H, P)).astype(np.float32)
    return v


def close(a, b) -> bool:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= TOL_F32


def test_peephole_projection_clip_vs_numpy(rng):
    v = cell_vars(rng, "rnn/lstm_cell", 3, 6, P=4, peep=True)
    x = rng.normal(0, 2, (3, 7, 3)).astype(np.float32)
    c0 = rng.normal(0, 2, (3, 6)).astype(np.float32)
    h0 = rng.normal(0, 1, (3, 4)).astype(np.float32)
    lengths = np.array([7, 0, 4])
    opts = dict(cell_clip=1.5, proj_clip=0.5)
    model = from_tf1(v, forget_bias=0.25, **opts)
    out, st = model(x, lengths, (c0, h0))
    want_out, want_st = tf_cell_run(
        x, v, "rnn/lstm_cell", 0.25, c0, h0, lengths, **opts
    )
    assert close(out, want_out) and close(st.c, want_st.c) and close(st.h, want_st.h)
    assert np.abs(out).max() <= 0.5 + 1e-6
    assert close(st.h[1], h0[1]) and close(st.c[1], c0[1])  # length 0 keeps state


def test_bidirectional_multi_rnn_stacks_with_lengths(rng):
    v = {}
    for d, sizes in (("fw", (5, 4)), ("bw", (3, 6))):
        I = 3
        for k, H in enumerate(sizes):
            v.update(
                cell_vars(
                    rng,
                    f"bidirectional_rnn/{d}/multi_rnn_cell/cell_{k}/lstm_cell",
                    I,
                    H,
                )
            )
            I = H
    x = rng.normal(size=(4, 6, 3)).astype(np.float32)
    lengths = np.array([6, 2, 5, 1])
    model = fastlstm.load(v)
    assert model.bidirectional and model.output_size == (4, 6)
    (of, ob), (sf, sb) = model(x, sequence_length=lengths)
    assert isinstance(sf, tuple) and len(sf) == 2 and isinstance(sf[0], LSTMStateTuple)
    for d, out, st in (("fw", of, sf), ("bw", ob, sb)):
        y = x
        for k in range(2):
            scope = f"bidirectional_rnn/{d}/multi_rnn_cell/cell_{k}/lstm_cell"
            y, s = tf_cell_run(y, v, scope, lengths=lengths, reverse=d == "bw")
            assert close(st[k].c, s.c) and close(st[k].h, s.h)
        assert close(out, y)
    assert not of[1, 2:].any() and not ob[1, 2:].any()


def test_multi_rnn_cell_time_major_and_initial_state(rng):
    v = {**cell_vars(rng, "rnn/multi_rnn_cell/cell_0/lstm_cell", 2, 4)}
    v.update(cell_vars(rng, "rnn/multi_rnn_cell/cell_1/lstm_cell", 4, 3, P=2))
    x = rng.normal(size=(3, 5, 2)).astype(np.float32)
    init = tuple(
        LSTMStateTuple(rng.normal(size=(3, H)), rng.normal(size=(3, R)))
        for H, R in ((4, 4), (3, 2))
    )
    model = from_tf1(v, time_major=True)
    out, st = model(x.transpose(1, 0, 2), initial_state=init)
    y0, s0 = tf_cell_run(
        x, v, "rnn/multi_rnn_cell/cell_0/lstm_cell", c0=init[0].c, h0=init[0].h
    )
    y1, s1 = tf_cell_run(
        y0, v, "rnn/multi_rnn_cell/cell_1/lstm_cell", c0=init[1].c, h0=init[1].h
    )
    assert out.shape == (5, 3, 2) and close(out, y1.transpose(1, 0, 2))
    assert close(st[1].h, s1.h) and close(st[0].c, s0.c)
    with pytest.raises(fastlstm.ShapeError, match="tuple of 2 LSTMStateTuple"):
        model(x.transpose(1, 0, 2), initial_state=init[0])
    s = model.stream(3)
    parts = [s.feed(p) for p in np.split(x.transpose(1, 0, 2), [1, 4], axis=0)]
    assert close(
        np.concatenate(parts),
        fastlstm.load(v, time_major=True)(x.transpose(1, 0, 2))[0],
    )
    assert isinstance(s.state, tuple) and len(s.state) == 2
    s.state = init
    s.reset()
    assert not s.state[0].c.any()


def test_old_variable_names_and_sharded_kernel(rng):
    v = cell_vars(rng, "rnn/lstm_cell", 3, 4, peep=True)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    want, _ = tf_cell_run(x, v, "rnn/lstm_cell")
    k = v["rnn/lstm_cell/kernel"]
    old = {
        "RNN/LSTMCell/W_0": k,
        "RNN/LSTMCell/B": v["rnn/lstm_cell/bias"],
        "RNN/LSTMCell/W_I_diag": v["rnn/lstm_cell/w_i_diag"],
        "RNN/LSTMCell/W_F_diag": v["rnn/lstm_cell/w_f_diag"],
        "RNN/LSTMCell/W_O_diag": v["rnn/lstm_cell/w_o_diag"],
    }
    assert close(from_tf1(old)(x)[0], want)
    sharded = {n: a for n, a in v.items() if not n.endswith("/kernel")}
    sharded["rnn/lstm_cell/kernel/part_0"] = k[:3]
    sharded["rnn/lstm_cell/kernel/part_1"] = k[3:]
    assert close(from_tf1(sharded)(x)[0], want)
    basic = {
        "rnn/basic_lstm_cell/weights": k,
        "rnn/basic_lstm_cell/biases": v["rnn/lstm_cell/bias"],
    }
    no_peep = {n: a for n, a in v.items() if "diag" not in n}
    assert close(from_tf1(basic)(x)[0], tf_cell_run(x, no_peep, "rnn/lstm_cell")[0])


def test_scopes_listed_when_ambiguous(rng):
    v = {**cell_vars(rng, "encoder/rnn/lstm_cell", 3, 4)}
    v.update(cell_vars(rng, "decoder/rnn/lstm_cell", 4, 5))
    v["global_step"] = np.array(10, np.int64)
    v["encoder/rnn/lstm_cell/kernel/Adam"] = v["encoder/rnn/lstm_cell/kernel"]
    with pytest.raises(
        fastlstm.ModelFormatError,
        match=r"several LSTM cells .*: decoder/rnn/lstm_cell, encoder/rnn/lstm_cell; "
        r"choose with scope=",
    ):
        from_tf1(v)
    assert from_tf1(v, scope="encoder").input_size == 3
    assert from_tf1(v, scope="decoder/rnn/lstm_cell").input_size == 4
    with pytest.raises(
        fastlstm.ModelFormatError, match="no LSTM cell under scope 'rnn2'"
    ):
        from_tf1(v, scope="rnn2")


def test_per_scope_options_and_activation(rng):
    v = {**cell_vars(rng, "rnn/multi_rnn_cell/cell_0/lstm_cell", 2, 3)}
    v.update(cell_vars(rng, "rnn/multi_rnn_cell/cell_1/lstm_cell", 3, 3))
    x = rng.normal(size=(2, 4, 2)).astype(np.float32)
    fb = {
        "rnn/multi_rnn_cell/cell_0/lstm_cell": 0.0,
        "rnn/multi_rnn_cell/cell_1/lstm_cell": 2.0,
    }
    out, _ = from_tf1(v, forget_bias=fb)(x)
    y0, _ = tf_cell_run(x, v, "rnn/multi_rnn_cell/cell_0/lstm_cell", 0.0)
    y1, _ = tf_cell_run(y0, v, "rnn/multi_rnn_cell/cell_1/lstm_cell", 2.0)
    assert close(out, y1)
    relu = from_tf1(v, activation="relu")
    assert relu.layers[0][0].spec.activation == fastlstm.Activation.RELU


@pytest.mark.parametrize(
    "edit, opts, exc, match",
    [
        (None, {"proj_clip": 1.0}, fastlstm.ConfigError, "no cell has a projection"),
        (
            None,
            {"activation": "gelu"},
            fastlstm.ConfigError,
            "not a supported activation",
        ),
        (
            None,
            {"forget_bias": "x"},
            fastlstm.ConfigError,
            "forget_bias must be a number",
        ),
        (
            None,
            {"cell_clip": -1.0},
            fastlstm.ConfigError,
            "cell_clip must be a positive",
        ),
        (
            lambda v: v.pop("s/w_f_diag"),
            {},
            fastlstm.ModelFormatError,
            "only some peephole",
        ),
        (
            lambda v: v.__setitem__("s/bias", np.ones(7, np.float32)),
            {},
            fastlstm.ModelFormatError,
            r"'s/bias' has shape \(7,\), expected \(16,\)",
        ),
        (
            lambda v: v.__setitem__("s/kernel", np.ones((4, 16), np.float32)),
            {},
            fastlstm.ModelFormatError,
            "no room for the input",
        ),
        (
            lambda v: v.__setitem__("s/kernel", np.ones((7, 15), np.float32)),
            {},
            fastlstm.ModelFormatError,
            "must be 4 \\* num_units",
        ),
        (
            lambda v: v.clear(),
            {},
            fastlstm.ModelFormatError,
            "no TF1 LSTM cell variables",
        ),
    ],
)
def test_bad_variables_and_options(rng, edit, opts, exc, match):
    v = cell_vars(rng, "s", 3, 4, peep=True)
    if edit:
        edit(v)
    with pytest.raises(exc, match=match):
        from_tf1(v, **opts)


def test_bidirectional_cannot_stream(rng):
    v = {**cell_vars(rng, "bidirectional_rnn/fw/lstm_cell", 2, 3)}
    v.update(cell_vars(rng, "bidirectional_rnn/bw/lstm_cell", 2, 3))
    model = from_tf1(v)
    with pytest.raises(fastlstm.StreamError, match="bidirectional model cannot stream"):
        model.stream(1)
    with pytest.raises(fastlstm.ShapeError, match=r"\(state_fw, state_bw\)"):
        model(np.zeros((1, 2, 2)), initial_state=np.zeros(3))


# --- the tensor bundle reader ------------------------------------------------------


def test_bundle_load_via_prefix(tmp_path, rng):
    v = cell_vars(rng, "rnn/lstm_cell", 3, 4, P=2, peep=True)
    v["global_step"] = np.array(7, np.int64)
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    want, _ = tf_cell_run(x, v, "rnn/lstm_cell")
    for kw in ({}, {"big_endian": True}, {"compress": True}):
        prefix = tmp_path / f"m{len(kw)}{list(kw)}.ckpt"
        write_bundle(
            prefix,
            {**v, "rnn/lstm_cell/bias": v["rnn/lstm_cell/bias"].astype(np.float64)},
            **kw,
        )
        model = fastlstm.load(prefix)
        assert close(model(x)[0], want)
        reader = CheckpointReader(prefix)
        assert reader.get("global_step").shape == ()
        assert reader.get("global_step") == 7


def test_checkpoint_state_file(tmp_path, rng):
    v = cell_vars(rng, "rnn/lstm_cell", 3, 4)
    write_bundle(tmp_path / "model.ckpt-100", v)
    write_bundle(tmp_path / "model.ckpt-200", v)
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt-200"\n'
        'all_model_checkpoint_paths: "model.ckpt-100"\n'
    )
    assert fastlstm.load(tmp_path).input_size == 3
    (tmp_path / "checkpoint").unlink()
    with pytest.raises(fastlstm.ModelFormatError, match="exactly one .index"):
        fastlstm.load(tmp_path)  # two .index files, no state file: ambiguous


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"corrupt_block": True}, "checksum mismatch in the block"),
        ({"bad_crc": "s/bias"}, r"'s/bias': checksum mismatch"),
        ({"sliced": "s/kernel"}, "partitioned slices"),
        ({"magic": 1234}, "bad table magic"),
        ({"num_shards": 2}, r"data-00001-of-00002|data-00000-of-00002"),
    ],
)
def test_corrupt_bundles(tmp_path, rng, kw, match):
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, cell_vars(rng, "s", 3, 4), **kw)
    if kw.get("num_shards"):
        os.rename(f"{prefix}.data-00000-of-00002", f"{prefix}.data-00001-of-00002")
    exc = (
        fastlstm.UnsupportedLayerError if "sliced" in kw else fastlstm.ModelFormatError
    )
    with pytest.raises(exc, match=match):
        from_tf1(prefix)


def test_truncated_data_and_index(tmp_path, rng):
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, cell_vars(rng, "s", 3, 4))
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-9])
    with pytest.raises(fastlstm.ModelFormatError, match="truncated"):
        from_tf1(prefix)
    index = Path(f"{prefix}.index")
    raw = index.read_bytes()
    for cut in (10, 60, len(raw) // 2):
        index.write_bytes(raw[:cut] + raw[-48:])
        with pytest.raises(fastlstm.ModelFormatError, match=r"m\.ckpt\.index"):
            from_tf1(prefix)


def test_snappy_copies():
    # "abcd" literal, copy(len 8, offset 4) via a 1-byte-offset copy, then a
    # 2-byte-offset copy of length 3 at offset 10
    stream = (
        bytes([15, 3 << 2])
        + b"abcd"
        + bytes([(4 << 2) | 1, 4])
        + bytes([(2 << 2) | 2, 10, 0])
    )
    assert snappy_decompress(stream, "t") == b"abcdabcdabcdcda"
    with pytest.raises(fastlstm.ModelFormatError, match="bad snappy copy offset"):
        snappy_decompress(bytes([8, (4 << 2) | 1, 9]), "t")
    with pytest.raises(fastlstm.ModelFormatError, match="not 9"):
        snappy_decompress(bytes([9, 3 << 2]) + b"abcd", "t")


# --- live TensorFlow (in a subprocess: tf.compat.v1 cells need legacy Keras) -----

LIVE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    out_dir = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 4)).astype(np.float32)
    lens = np.array([6, 2, 4], np.int32)
    with tf.Graph().as_default():
        xp = tf1.placeholder(tf.float32, x.shape)
        lp = tf1.placeholder(tf.int32, (3,))
        cells = tf1.nn.rnn_cell
        fw = cells.MultiRNNCell([
            cells.LSTMCell(5, use_peepholes=True, num_proj=3, forget_bias=0.7),
            cells.LSTMCell(4, forget_bias=0.7)])
        bw = cells.LSTMCell(6, forget_bias=0.7)
        (of, ob), (sf, sb) = tf1.nn.bidirectional_dynamic_rnn(
            fw, bw, xp, sequence_length=lp, dtype=tf.float32)
        with tf1.Session() as s:
            s.run(tf1.global_variables_initializer())
            res = s.run([of, ob, sf[1].c, sf[1].h, sb.c, sb.h], {xp: x, lp: lens})
            tf1.train.Saver().save(s, os.path.join(out_dir, "model.ckpt"))
    np.savez(os.path.join(out_dir, "ref.npz"), x=x, lens=lens, of=res[0], ob=res[1],
             c1=res[2], h1=res[3], cb=res[4], hb=res[5])
    """
)


def test_live_tensorflow_checkpoint(tmp_path):
    if UNDER_SANITIZER:  # TensorFlow's own libraries do not run under it
        pytest.skip("TensorFlow under a preloaded sanitizer")
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = tmp_path / "make.py"
    script.write_text(LIVE_SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True
    )
    if run.returncode:
        pytest.skip(f"TF1 cells unavailable: {run.stderr.decode()[-300:]}")
    ref = dict(np.load(tmp_path / "ref.npz"))
    model = fastlstm.load(tmp_path / "model.ckpt", forget_bias=0.7)
    (of, ob), (sf, sb) = model(ref["x"], sequence_length=ref["lens"])
    got = {"of": of, "ob": ob, "c1": sf[1].c, "h1": sf[1].h, "cb": sb.c, "hb": sb.h}
    for key, value in got.items():
        assert close(value, ref[key]), key


def test_checkpoint_state_with_absolute_path_from_elsewhere(tmp_path, rng):
    """TF's Saver writes absolute paths into the state file: a folder moved
    elsewhere still loads, by the prefix's base name inside the folder."""
    v = cell_vars(rng, "rnn/lstm_cell", 3, 4)
    write_bundle(tmp_path / "model.ckpt-5", v)
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "/old/machine/train/model.ckpt-5"\n'
    )
    model = fastlstm.load(tmp_path)
    assert model.input_size == 3
    x = rng.normal(0, 1, (2, 6, 3)).astype(np.float32)
    moved = fastlstm.load(tmp_path / "model.ckpt-5")
    np.testing.assert_array_equal(model(x)[0], moved(x)[0])
