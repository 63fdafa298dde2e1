"""PyTorch state_dicts: torch.save files read without torch, converted to
TorchLSTM / TorchLSTMCell, compared with what torch computed.

Fixtures: tests/fixtures/torch/<case>/ (tests/fixtures/make_torch_fixtures.py,
real torch): model file, ref.npz, case.json. Files written by hand here
(tests/torch_files.py) cover what torch cannot easily be made to write
(big-endian, storage views, old rebuild functions); the live tests need
torch and are skipped without it.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32, import_framework
from torch_files import (
    Storages,
    Tensor,
    lstm_state_dict,
    torch_reference,
    write_legacy,
    write_zip,
)

import fastlstm
from fastlstm.loaders.torch_pickle import load_torch_file

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
CASES = sorted(p.parent.name for p in FIXTURES.glob("*/case.json"))


def case_info(name: str) -> tuple[dict, dict, Path]:
    folder = FIXTURES / name
    meta = json.loads((folder / "case.json").read_text())
    return meta, dict(np.load(folder / "ref.npz")), folder


def worst(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max()) if got.size else 0.0


# --- fixtures made by real torch ----------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_fixture_matches_torch(name):
    meta, ref, folder = case_info(name)
    opts = meta.get("loader_options", {})
    path = folder / meta["files"]["model"]
    kw = {}
    if opts.get("prefix"):
        kw["prefix"] = opts["prefix"]
    kw["batch_first"] = opts.get("batch_first", False)  # not in the file
    model = fastlstm.load(path, **kw)
    if opts.get("module") == "LSTMCell":
        assert isinstance(model, fastlstm.TorchLSTMCell)
        h, c = ref["h0"], ref["c0"]
        hs, cs = [], []
        for t in range(ref["x"].shape[0]):
            h, c = model(ref["x"][t], (h, c))
            hs.append(h)
            cs.append(c)
        assert worst(np.stack(hs), ref["h_seq"]) <= TOL_F32
        assert worst(np.stack(cs), ref["c_seq"]) <= TOL_F32
        return
    assert isinstance(model, fastlstm.TorchLSTM)
    m = meta["model"]
    assert (model.num_layers, model.bidirectional) == (
        m["num_layers"],
        m["bidirectional"],
    )
    assert (model.proj_size, model.bias, model.hidden_size) == (
        m["proj_size"],
        m["bias"],
        m["hidden_size"],
    )
    hx = (ref["h0"], ref["c0"]) if "h0" in ref else None
    lengths = ref["lengths"].astype(np.int64) if "lengths" in ref else None
    out, (h_n, c_n) = model(ref["x"], hx, lengths=lengths)
    err = max(worst(out, ref["output"]), worst(h_n, ref["h_n"]), worst(c_n, ref["c_n"]))
    assert err <= TOL_F32, f"{name}: max |fastlstm - torch| = {err:.3g}"


@pytest.mark.parametrize(
    "name", [c for c in CASES if c.startswith("checkpoint")] or ["<none>"]
)
def test_fixture_checkpoint_prefix_autodetected(name):
    if name == "<none>":
        pytest.skip("torch fixtures not generated yet")
    meta, ref, folder = case_info(name)
    path = folder / meta["files"]["model"]
    model = fastlstm.load(path, batch_first=True)  # one LSTM: no prefix needed
    out, _ = model(ref["x"])
    assert worst(out, ref["output"]) <= TOL_F32
    full = ".".join(meta["loader_options"]["container_keys"]) + "."
    model = fastlstm.load(
        path, prefix=full + meta["loader_options"]["prefix"], batch_first=False
    )
    assert model.num_layers == 2
    with pytest.raises(
        fastlstm.ModelFormatError, match="no recurrent weights under prefix"
    ):
        fastlstm.load(path, prefix="decoder.", batch_first=False)


def test_fixture_shared_storage_holds_nan_gaps():
    if "shared_storage" not in CASES:
        pytest.skip("torch fixtures not generated yet")
    meta, _, folder = case_info("shared_storage")
    sd = load_torch_file(folder / "model.pt")
    for key, view in meta["tensor_views"].items():
        assert list(sd[key].shape) == view["size"]
        assert np.isfinite(sd[key]).all(), key


# --- files written by hand -------------------------------------------------------


def _write_sd(path, sd: dict, writer=write_zip, bf16: bool = False, **kw) -> None:
    st = Storages()
    obj = collections.OrderedDict((k, st.add(v, bf16=bf16)) for k, v in sd.items())
    writer(path, obj, st, **kw)


CONFIGS = [
    dict(input_size=3, hidden_size=4),
    dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True),
    dict(input_size=2, hidden_size=6, num_layers=3, proj_size=3),
    dict(input_size=4, hidden_size=3, num_layers=2, bidirectional=True, proj_size=2),
    dict(input_size=3, hidden_size=4, num_layers=2, bias=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("writer", [write_zip, write_legacy])
def test_handmade_file_round_trip(tmp_path, rng, cfg, writer):
    sd = lstm_state_dict(rng, **cfg)
    path = tmp_path / "lstm.pt"
    _write_sd(path, sd, writer)
    back = load_torch_file(path)
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].dtype == np.float32 and np.array_equal(back[k], sd[k]), k
    model = fastlstm.load(path, batch_first=False)
    D = 2 if cfg.get("bidirectional") else 1
    L = cfg.get("num_layers", 1)
    assert (model.num_layers, model.bidirectional, model.proj_size, model.bias) == (
        L,
        D == 2,
        cfg.get("proj_size", 0),
        cfg.get("bias", True),
    )
    H, R = cfg["hidden_size"], cfg.get("proj_size") or cfg["hidden_size"]
    x = rng.normal(size=(7, 3, cfg["input_size"])).astype(np.float32)
    h0 = rng.normal(size=(D * L, 3, R)).astype(np.float32)
    c0 = rng.normal(size=(D * L, 3, H)).astype(np.float32)
    lengths = np.array([7, 2, 5])
    out, (h, c) = model(x, (h0, c0), lengths=lengths)
    want = torch_reference(sd, x, L, D == 2, h0, c0, lengths)
    assert out.shape == (7, 3, D * R) and h.shape == (D * L, 3, R)
    assert c.shape == (D * L, 3, H)
    for g, w in zip((out, h, c), want):
        assert worst(g, w) <= TOL_F32
    assert not out[2:, 1].any() and not out[5:, 2].any()  # zeros past lengths


def test_dtypes_kept_bfloat16_widened(tmp_path, rng):
    sd = lstm_state_dict(rng, 3, 4)
    want = {}
    for dtype in (np.float16, np.float64):
        path = tmp_path / f"{np.dtype(dtype).name}.pt"
        _write_sd(path, {k: v.astype(dtype) for k, v in sd.items()})
        got = load_torch_file(path)
        for k, v in sd.items():
            assert got[k].dtype == dtype
            assert np.array_equal(got[k], v.astype(dtype))
        want[dtype] = got
    path = tmp_path / "bf16.pt"
    _write_sd(path, sd, bf16=True)
    got = load_torch_file(path)
    for k, v in sd.items():
        truncated = (v.view(np.uint32) & 0xFFFF0000).view(np.float32)
        assert got[k].dtype == np.float32 and np.array_equal(got[k], truncated)
    model = fastlstm.load(path, batch_first=False)
    x = rng.normal(size=(4, 2, 3)).astype(np.float32)
    bf_sd = {
        k: (v.view(np.uint32) & 0xFFFF0000).view(np.float32) for k, v in sd.items()
    }
    out, _ = model(x)
    assert worst(out, torch_reference(bf_sd, x, 1, False)[0]) <= TOL_F32


def test_integer_tensors_and_scalars_kept(tmp_path):
    st = Storages()
    obj = {
        "steps": st.add(np.arange(5, dtype=np.int64)),
        "flags": st.add(np.array([True, False])),
        "epoch": 3,
        "lr": 0.5,
        "name": "run",
        "big": 1 << 70,
        "nested": [None, (1, 2), {"x": False}],
    }
    path = tmp_path / "misc.pt"
    write_zip(path, obj, st)
    got = load_torch_file(path)
    assert got["steps"].dtype == np.int64 and got["steps"].tolist() == list(range(5))
    assert got["flags"].tolist() == [True, False]
    assert (got["epoch"], got["lr"], got["name"], got["big"]) == (
        3,
        0.5,
        "run",
        1 << 70,
    )
    assert got["nested"] == [None, (1, 2), {"x": False}]


def test_shared_storage_offsets_and_strides(tmp_path, rng):
    """All tensors views of one flat storage, one of them transposed."""
    sd = lstm_state_dict(rng, 3, 4, num_layers=2)
    gap = 5
    total = gap + sum(v.size for v in sd.values()) + 3
    flat = np.full(total, np.nan, np.float32)
    st = Storages()
    key = st.add_raw(flat)  # placeholder bytes, replaced below
    obj = collections.OrderedDict()
    off = gap
    for name, v in sd.items():
        if name == "weight_hh_l1":  # stored as its transpose, viewed back
            flat[off : off + v.size] = v.T.reshape(-1)
            stride = (1, v.shape[0])
        else:
            flat[off : off + v.size] = v.reshape(-1)
            stride = tuple(s // 4 for s in v.strides)
        obj[name] = Tensor(key, "FloatStorage", total, off, v.shape, stride)
        off += v.size
    st.data[key] = flat.tobytes()
    path = tmp_path / "shared.pt"
    write_zip(path, obj, st)
    got = load_torch_file(path)
    for k, v in sd.items():
        assert np.array_equal(got[k], v), k
        assert got[k].flags.c_contiguous and got[k].flags.owndata
    for writer in (write_legacy,):
        p2 = tmp_path / "shared_legacy.pt"
        writer(p2, obj, st)
        got = load_torch_file(p2)
        assert all(np.array_equal(got[k], v) for k, v in sd.items())


def test_legacy_storage_views(tmp_path):
    """Pre-0.4 legacy files name storage views (view_key, offset, size)."""
    st = Storages()
    flat = np.arange(20, dtype=np.float32)
    key = st.add_raw(flat)
    a = Tensor(key, "FloatStorage", 20, 1, (2, 3), (3, 1), view=("v1", 5, 8))
    b = Tensor(key, "FloatStorage", 20, 0, (4,), (2,), view=("v2", 12, 8))
    path = tmp_path / "views.pt"
    write_legacy(path, {"a": a, "b": b}, st)
    got = load_torch_file(path)
    assert np.array_equal(got["a"], flat[6:12].reshape(2, 3))
    assert np.array_equal(got["b"], flat[12:20:2])
    bad = Tensor(key, "FloatStorage", 20, 0, (4,), (1,), view=("v3", 15, 8))
    write_legacy(path, {"a": bad}, st)
    with pytest.raises(fastlstm.ModelFormatError, match="storage view 'v3' overruns"):
        load_torch_file(path)


def test_unknown_format_lists_every_format(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"GARBAGE!" + bytes(64))
    with pytest.raises(
        fastlstm.ModelFormatError,
        match=r"not a model file .*PyTorch state_dict .*safetensors.*TF1 checkpoint"
        r".*ONNX",
    ):
        fastlstm.load(path, batch_first=False)


def test_inspect_command_describes_torch_files(tmp_path, rng, capsys):
    from fastlstm.__main__ import main

    path = tmp_path / "lstm.pt"
    _write_sd(path, lstm_state_dict(rng, 3, 4, num_layers=2))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TorchLSTM(3, 4, num_layers=2)" in out
    assert "batch_first: not recorded in the file" in out
    assert main(["inspect", str(path), "--batch-first"]) == 0
    out = capsys.readouterr().out
    assert "batch_first=True" in out and "not recorded" not in out


def test_big_endian_marker_honoured(tmp_path, rng):
    sd = lstm_state_dict(rng, 3, 4)
    sd["count"] = np.array([1, 2, 3], np.int64)
    path = tmp_path / "be.pt"
    _write_sd(path, sd, byteorder="big", swap=True)
    got = load_torch_file(path)
    for k, v in sd.items():
        assert np.array_equal(got[k], v), k
    assert got["weight_ih_l0"].dtype == np.float32
    assert got["count"].dtype.isnative
    # without the marker the same bytes read as little-endian garbage
    path2 = tmp_path / "le.pt"
    _write_sd(path2, sd, byteorder="little", swap=True)
    assert not np.array_equal(load_torch_file(path2)["count"], sd["count"])


def test_missing_byteorder_means_little(tmp_path, rng):
    sd = lstm_state_dict(rng, 3, 4)
    path = tmp_path / "old.pt"
    _write_sd(path, sd, byteorder=None)
    got = load_torch_file(path)
    assert all(np.array_equal(got[k], v) for k, v in sd.items())


def test_archive_prefix_taken_from_file(tmp_path, rng):
    sd = lstm_state_dict(rng, 3, 4)
    path = tmp_path / "my.model.pth"
    _write_sd(path, sd, prefix="my.model")
    assert fastlstm.load(path, batch_first=False).hidden_size == 4


def test_old_rebuild_functions_and_parameters(tmp_path, rng):
    sd = lstm_state_dict(rng, 3, 4)
    st = Storages()
    obj = collections.OrderedDict()
    for i, (k, v) in enumerate(sd.items()):
        t = st.add(v)
        if i % 2:
            t.rebuild = "_rebuild_tensor"
        else:
            t.parameter = True
        obj[k] = t
    path = tmp_path / "old.pt"
    write_zip(path, obj, st)
    got = load_torch_file(path)
    assert all(np.array_equal(got[k], v) for k, v in sd.items())


def test_safetensors_state_dict_via_load(tmp_path, rng):
    from test_load_safetensors import write_safetensors

    sd = lstm_state_dict(rng, 3, 4, num_layers=2, bidirectional=True)
    path = tmp_path / "lstm.safetensors"
    write_safetensors(path, sd)
    model = fastlstm.load(path, batch_first=True)
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    out, (h, c) = model(x)
    want = torch_reference(sd, x.transpose(1, 0, 2), 2, True)
    assert worst(out, want[0].transpose(1, 0, 2)) <= TOL_F32
    assert worst(h, want[1]) <= TOL_F32


# --- state_dict conversion ------------------------------------------------------


def test_in_memory_state_dict_and_checkpoint(rng):
    sd = lstm_state_dict(rng, 3, 4, num_layers=2)
    x = rng.normal(size=(5, 2, 3)).astype(np.float32)
    want = torch_reference(sd, x, 2, False)[0]
    for obj in (
        sd,
        {"model": {"lstm." + k: v for k, v in sd.items()}, "epoch": 3},
        {"state_dict": {"module.rnn." + k: v for k, v in sd.items()}, "lr": 0.1},
        {"net": {"encoder": {"lstm": dict(sd)}}, "fc.weight": np.ones((2, 4))},
    ):
        for make in (fastlstm.from_torch, fastlstm.load):
            model = make(obj, batch_first=False)
            assert worst(model(x)[0], want) <= TOL_F32
    model = fastlstm.TorchLSTM.from_state_dict(sd, batch_first=True)
    assert worst(model(x.transpose(1, 0, 2))[0], want.transpose(1, 0, 2)) <= TOL_F32


def test_ambiguous_prefix_lists_candidates(rng):
    a = lstm_state_dict(rng, 3, 4)
    b = lstm_state_dict(rng, 4, 2, num_layers=2)
    sd = {**{"encoder.lstm." + k: v for k, v in a.items()}}
    sd.update({"decoder.lstm." + k: v for k, v in b.items()})
    with pytest.raises(
        fastlstm.ModelFormatError,
        match=r"several recurrent modules, under the prefixes 'decoder\.lstm\.', "
        r"'encoder\.lstm\.'; choose one with prefix=",
    ):
        fastlstm.from_torch(sd, batch_first=False)
    with pytest.raises(
        fastlstm.ModelFormatError, match="matches several recurrent modules"
    ):
        fastlstm.from_torch(sd, prefix="lstm", batch_first=False)
    assert (
        fastlstm.from_torch(sd, prefix="encoder.lstm", batch_first=False).input_size
        == 3
    )
    assert (
        fastlstm.from_torch(sd, prefix="decoder.lstm.", batch_first=False).num_layers
        == 2
    )
    with pytest.raises(
        fastlstm.ModelFormatError, match=r"recurrent prefixes in the file"
    ):
        fastlstm.from_torch(sd, prefix="rnn.", batch_first=False)


def test_lstm_cell_state_dict(rng):
    sd = lstm_state_dict(rng, 3, 5, cell=True)
    cell = fastlstm.from_torch({"cell." + k: v for k, v in sd.items()})
    assert isinstance(cell, fastlstm.TorchLSTMCell)
    assert (cell.input_size, cell.hidden_size, cell.bias) == (3, 5, True)
    x = rng.normal(size=(6, 2, 3)).astype(np.float32)
    full = {k + "_l0": v for k, v in sd.items()}
    want_out, want_h, want_c = torch_reference(full, x, 1, False)
    h = c = np.zeros((2, 5), np.float32)
    for t in range(6):
        h, c = cell(x[t], (h, c))
        assert worst(h, want_out[t]) <= TOL_F32
    assert worst(c, want_c[0]) <= TOL_F32
    h1, c1 = cell(x[0, 0])  # unbatched, zero state
    assert h1.shape == (5,) and worst(h1, want_out[0, 0]) <= TOL_F32
    s = cell.stream(2)
    for t in range(6):
        y = s.step(x[t])
    assert worst(y, want_out[-1]) <= TOL_F32
    nobias = fastlstm.from_torch(
        {k: v for k, v in sd.items() if "bias" not in k}, batch_first=False
    )
    assert not nobias.bias


def test_gate_blocks_tell_the_module(rng):
    """weight_hh's gate blocks tell an nn.GRU (3) and an nn.RNN (1) from an
    nn.LSTM (4); an nn.RNN's nonlinearity must be given, never guessed."""
    sd = {
        "gru.weight_ih_l0": rng.normal(size=(12, 3)).astype(np.float32),
        "gru.weight_hh_l0": rng.normal(size=(12, 4)).astype(np.float32),
    }
    gru = fastlstm.from_torch(sd, batch_first=False)
    assert isinstance(gru, fastlstm.TorchGRU) and gru.hidden_size == 4
    rnn = {
        "weight_ih_l0": sd["gru.weight_ih_l0"][:4],
        "weight_hh_l0": sd["gru.weight_hh_l0"][:4],
    }
    with pytest.raises(fastlstm.ConfigError, match="nonlinearity='tanh'.*'relu'"):
        fastlstm.load(rnn, batch_first=False)
    with pytest.raises(fastlstm.ConfigError, match="nonlinearity= applies to nn.RNN"):
        fastlstm.load(sd, batch_first=False, nonlinearity="relu")
    model = fastlstm.load(rnn, batch_first=False, nonlinearity="relu")
    assert isinstance(model, fastlstm.TorchRNN) and model.nonlinearity == "relu"
    odd = {
        "weight_ih_l0": sd["gru.weight_ih_l0"][:8],
        "weight_hh_l0": sd["gru.weight_hh_l0"][:8],
    }
    with pytest.raises(fastlstm.ModelFormatError, match="no nn.LSTM / nn.GRU / nn.RNN"):
        fastlstm.from_torch(odd, batch_first=False)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd.pop("weight_hh_l1"), r"'weight_hh_l1' is missing"),
        (lambda sd: sd.pop("bias_ih_l1"), r"'bias_ih_l1' is missing"),
        (
            lambda sd: sd.__setitem__("weight_ih_l1", np.ones((16, 3), np.float32)),
            r"'weight_ih_l1' has shape \(16, 3\), expected \(16, 4\)",
        ),
        (
            lambda sd: sd.__setitem__("weight_ih_l3", np.ones((16, 4), np.float32)),
            r"layers .* are \[0, 1, 3\]",
        ),
        (
            lambda sd: sd.__setitem__("weight_hh_l0", np.ones((16, 4), np.int64)),
            "floating point expected",
        ),
        (
            lambda sd: sd.__setitem__("weight_hr_l1", np.ones((2, 4), np.float32)),
            "'weight_hr_l0' is missing",
        ),
        (lambda sd: [sd.pop(k) for k in list(sd)], "no nn.LSTM / nn.GRU / nn.RNN"),
    ],
)
def test_inconsistent_state_dicts(rng, edit, match):
    sd = dict(lstm_state_dict(rng, 3, 4, num_layers=2))
    edit(sd)
    sd["fc.weight"] = np.ones((2, 2), np.float32)
    with pytest.raises(fastlstm.ModelFormatError, match=match):
        fastlstm.from_torch(sd, batch_first=False)


def test_not_a_state_dict(tmp_path):
    st = Storages()
    path = tmp_path / "t.pt"
    write_zip(path, [st.add(np.ones(3, np.float32))], st)
    with pytest.raises(
        fastlstm.ModelFormatError, match="holds a list, not a state_dict"
    ):
        fastlstm.load(path, batch_first=False)


def test_nonfinite_weights_named(rng):
    sd = dict(lstm_state_dict(rng, 3, 4))
    sd["weight_hh_l0"] = sd["weight_hh_l0"].copy()
    sd["weight_hh_l0"][2, 1] = np.nan
    with pytest.raises(fastlstm.NonFiniteError, match="recurrent_kernel holds 1 NaN"):
        fastlstm.from_torch(sd, batch_first=False)


# --- TorchLSTM behaviour ----------------------------------------------------------


@pytest.fixture
def bidir(rng):
    sd = lstm_state_dict(rng, 3, 4, num_layers=2, bidirectional=True, proj_size=2)
    return sd, fastlstm.from_torch(sd, batch_first=False)


def test_shapes_like_nn_lstm(rng, bidir):
    sd, model = bidir
    x = rng.normal(size=(6, 2, 3)).astype(np.float32)
    out, (h, c) = model(x)
    assert (out.shape, h.shape, c.shape) == ((6, 2, 4), (4, 2, 2), (4, 2, 4))
    want = torch_reference(sd, x, 2, True)
    assert all(worst(g, w) <= TOL_F32 for g, w in zip((out, h, c), want))
    out1, (h1, c1) = model(x[:, 1])  # unbatched (L, I)
    assert (out1.shape, h1.shape, c1.shape) == ((6, 4), (4, 2), (4, 4))
    assert worst(out1, out[:, 1]) <= TOL_F32 and worst(h1, h[:, 1]) <= TOL_F32
    out2, (h2, _) = model(x[:, 1], (h[:, 0], c[:, 0]))  # unbatched with hx
    want2 = torch_reference(sd, x[:, 1:], 2, True, h[:, :1], c[:, :1])
    assert worst(out2, want2[0][:, 0]) <= TOL_F32
    assert (
        repr(model) == "TorchLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)"
    )


def test_batch_first_and_lengths(rng, bidir):
    sd, _ = bidir
    model = fastlstm.from_torch(sd, batch_first=True)
    x = rng.normal(size=(3, 6, 3)).astype(np.float32)
    lengths = np.array([6, 1, 4])
    out, (h, c) = model(x, lengths=lengths)
    want = torch_reference(sd, x.transpose(1, 0, 2), 2, True, lengths=lengths)
    assert worst(out, want[0].transpose(1, 0, 2)) <= TOL_F32
    assert worst(h, want[1]) <= TOL_F32 and worst(c, want[2]) <= TOL_F32
    # padding content never matters
    x2 = x.copy()
    x2[1, 1:] = 1e3
    assert np.array_equal(model(x2, lengths=lengths)[0], out)
    assert not out[1, 1:].any()


def test_hx_shape_errors_named(rng, bidir):
    _, model = bidir
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(
        fastlstm.ShapeError, match=r"hx\[0\] \(h_0\) must have shape \(4, 2, 2\)"
    ):
        model(x, (np.zeros((4, 2, 4)), np.zeros((4, 2, 4))))
    with pytest.raises(
        fastlstm.ShapeError, match=r"hx\[1\] \(c_0\) must have shape \(4, 2, 4\)"
    ):
        model(x, (np.zeros((4, 2, 2)), np.zeros((2, 2, 4))))
    with pytest.raises(
        fastlstm.ShapeError, match=r"x must be \(L, N, I\) or unbatched"
    ):
        model(np.zeros((1, 5, 2, 3)))
    with pytest.raises(fastlstm.ShapeError, match="expects 3"):
        model(np.zeros((5, 2, 4)))
    with pytest.raises(fastlstm.ShapeError, match=r"lengths\[1\] = 9 is outside"):
        model(x, lengths=[5, 9])


def test_stream_matches_one_call(rng):
    sd = lstm_state_dict(rng, 3, 4, num_layers=2, proj_size=3)
    for batch_first in (False, True):
        model = fastlstm.from_torch(sd, batch_first=batch_first)
        x = rng.normal(size=(9, 2, 3)).astype(np.float32)
        xin = x.transpose(1, 0, 2) if batch_first else x
        out, (h, c) = model(xin)
        s = model.stream(2)
        ax = 1 if batch_first else 0
        parts = [s.feed(p) for p in np.split(xin, [2, 3, 7], axis=ax)]
        assert worst(np.concatenate(parts, axis=ax), out) <= TOL_F32
        hs, cs = s.state
        assert worst(hs, h) <= TOL_F32 and worst(cs, c) <= TOL_F32
        s.reset()
        for t in range(9):
            y = s.step(x[t])
        assert worst(y, out[:, -1] if batch_first else out[-1]) <= TOL_F32
        s.state = (h * 0, c * 0)
        assert not s.state[0].any()


def test_bidirectional_cannot_stream(bidir):
    with pytest.raises(fastlstm.StreamError, match="bidirectional LSTM cannot stream"):
        bidir[1].stream(2)


def test_from_torch_rejects_other_objects():
    with pytest.raises(TypeError, match="from_torch takes an nn.LSTM"):
        fastlstm.from_torch(42)


def test_options_of_other_formats_refused(tmp_path, rng):
    path = tmp_path / "lstm.pt"
    _write_sd(path, lstm_state_dict(rng, 3, 4))
    with pytest.raises(
        fastlstm.ConfigError, match="forget_bias do not apply to PyTorch files"
    ):
        fastlstm.load(path, forget_bias=1.0, batch_first=False)
    with pytest.raises(fastlstm.ConfigError, match="does not record batch_first"):
        fastlstm.load_spec(path)
    spec = fastlstm.load_spec(path, batch_first=True)
    assert spec.conventions == {
        "calls": "torch_module",
        "mode": "LSTM",
        "batch_first": True,
    }
    assert [type(ls).__name__ for ls in spec.layers] == ["InputSpec", "RecurrentSpec"]


# --- live torch -------------------------------------------------------------------


@pytest.fixture
def torch():
    return import_framework("torch")


LIVE = [
    dict(),
    dict(num_layers=2, bidirectional=True, proj_size=3),
    dict(num_layers=3, bias=False, batch_first=True),
    dict(bidirectional=True, batch_first=True),
]


@pytest.mark.parametrize(
    "kw", LIVE, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items())
)
def test_live_torch_save_load_compare(tmp_path, torch, kw):
    torch.manual_seed(0)
    m = torch.nn.LSTM(4, 5, **kw).eval()
    N, L = 3, 7
    bf = m.batch_first
    x = torch.randn(N, L, 4) if bf else torch.randn(L, N, 4)
    D = 2 if m.bidirectional else 1
    h0 = torch.randn(D * m.num_layers, N, m.proj_size or 5)
    c0 = torch.randn(D * m.num_layers, N, 5)
    lengths = torch.tensor([7, 3, 1])
    with torch.no_grad():
        y, (h, c) = m(x, (h0, c0))
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=bf, enforce_sorted=False
        )
        yp, (hp, cp) = m(packed, (h0, c0))
        yp, _ = torch.nn.utils.rnn.pad_packed_sequence(
            yp, batch_first=bf, total_length=L
        )
    for legacy in (False, True):
        path = tmp_path / f"m{legacy}.pt"
        torch.save(
            {"model": m.state_dict(), "epoch": 1},
            path,
            _use_new_zipfile_serialization=not legacy,
        )
        fm = fastlstm.load(path, batch_first=bf)
        y2, (h2, c2) = fm(x.numpy(), (h0.numpy(), c0.numpy()))
        assert worst(y2, y.numpy()) <= TOL_F32 and worst(h2, h.numpy()) <= TOL_F32
        assert worst(c2, c.numpy()) <= TOL_F32
        y3, (h3, c3) = fm(x.numpy(), (h0.numpy(), c0.numpy()), lengths=lengths.numpy())
        assert worst(y3, yp.numpy()) <= TOL_F32 and worst(h3, hp.numpy()) <= TOL_F32
        assert worst(c3, cp.numpy()) <= TOL_F32
    live = fastlstm.from_torch(m)
    assert live.batch_first == bf
    assert worst(live(x, (h0, c0))[0], y.numpy()) <= TOL_F32


def test_live_torch_cell_module_and_dtypes(tmp_path, torch):
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(3, 4)
    x, h0, c0 = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    with torch.no_grad():
        h, c = cell(x, (h0, c0))
    fc = fastlstm.from_torch(cell)
    h2, c2 = fc(x.numpy(), (h0.numpy(), c0.numpy()))
    assert worst(h2, h.numpy()) <= TOL_F32 and worst(c2, c.numpy()) <= TOL_F32

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 4, batch_first=True)
            self.head = torch.nn.Linear(4, 1)

    net = Net().eval()
    model = fastlstm.from_torch(net)
    assert model.batch_first
    assert isinstance(fastlstm.from_torch(torch.nn.GRU(3, 4)), fastlstm.TorchGRU)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        sd = {k: v.to(dtype) for k, v in net.rnn.state_dict().items()}
        path = tmp_path / "d.pt"
        torch.save(sd, path)
        got = fastlstm.read_state_dict(path)
        # kept, except bfloat16 (NumPy has none): widened exactly to float32
        want = {torch.float16: np.float16, torch.float64: np.float64}
        for k, v in sd.items():
            assert got[k].dtype == want.get(dtype, np.float32), (dtype, k)
            assert np.array_equal(got[k], v.float().numpy()), (dtype, k)
        model = fastlstm.load(path, batch_first=True)  # converted to float32
        assert model(np.ones((1, 2, 3), np.float32))[0].dtype == np.float32


def test_npz_of_state_dict_loads_as_torch(tmp_path, rng):
    sd = lstm_state_dict(rng, 3, 4, bidirectional=True)
    path = tmp_path / "weights.npz"
    np.savez(path, **{"rnn." + k: v for k, v in sd.items()})
    model = fastlstm.load(path, batch_first=True)
    assert isinstance(model, fastlstm.TorchLSTM) and model.bidirectional
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    want = torch_reference(sd, x.transpose(1, 0, 2), 1, True)[0]
    assert worst(model(x)[0], want.transpose(1, 0, 2)) <= TOL_F32


def test_batch_first_is_never_guessed(tmp_path, rng):
    """A state_dict does not record batch_first: loading an nn.LSTM file
    (zip, legacy, safetensors-like dict) without it is a ConfigError naming
    both choices, where a guess of False returned wrong numbers of the
    right shape. An nn.LSTMCell has no batch_first and loads as before."""
    sd = lstm_state_dict(rng, 3, 4)
    path = tmp_path / "lstm.pt"
    _write_sd(path, sd)
    for make in (
        lambda: fastlstm.load(path),
        lambda: fastlstm.load(sd),
        lambda: fastlstm.from_torch(sd),
        lambda: fastlstm.TorchLSTM.from_state_dict(sd),
    ):
        with pytest.raises(
            fastlstm.ConfigError,
            match=r"does not record batch_first; pass batch_first=True .* or "
            r"batch_first=False",
        ):
            make()
    x = rng.normal(size=(5, 2, 3)).astype(np.float32)
    want = torch_reference(sd, x, 1, False)[0]
    assert worst(fastlstm.load(path, batch_first=False)(x)[0], want) <= TOL_F32
    got = fastlstm.load(path, batch_first=True)(x.transpose(1, 0, 2))[0]
    assert worst(got, want.transpose(1, 0, 2)) <= TOL_F32
    cell = {k.replace("_l0", ""): v for k, v in sd.items()}
    assert isinstance(fastlstm.load(cell), fastlstm.TorchLSTMCell)
