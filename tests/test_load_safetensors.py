"""safetensors files: header JSON + bounds-checked buffers, read as a
PyTorch-style state_dict (FORMATS.md 7.3)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32, import_framework
from torch_files import lstm_state_dict, torch_reference

import fastlstm
from fastlstm.loaders.safetensors_format import load_safetensors

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
CODES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
}


def write_safetensors(path, tensors: dict, header_edit=None, bf16=(), pad=b"") -> None:
    header, chunks, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if name in bf16:
            raw = (arr.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
            code = "BF16"
        else:
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            code = CODES[arr.dtype]
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [off, off + len(raw)],
        }
        chunks.append(raw)
        off += len(raw)
    if header_edit:
        header_edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks) + pad)


def test_fixture_safetensors():
    folder = FIXTURES / "safetensors"
    if not (folder / "case.json").exists():
        pytest.skip("torch fixtures not generated yet")
    ref = dict(np.load(folder / "ref.npz"))
    model = fastlstm.load(folder / "model.safetensors", batch_first=False)
    out, (h, c) = model(ref["x"], (ref["h0"], ref["c0"]))
    for g, w in ((out, ref["output"]), (h, ref["h_n"]), (c, ref["c_n"])):
        assert np.abs(g - w).max() <= TOL_F32


def test_round_trip_dtypes(tmp_path, rng):
    sd = lstm_state_dict(rng, 3, 4, num_layers=2, proj_size=2)
    mixed = {
        k: v.astype(
            np.float16 if i % 3 == 1 else np.float64 if i % 3 == 2 else np.float32
        )
        for i, (k, v) in enumerate(sd.items())
    }
    mixed["count"] = np.array([7], np.int64)
    bf = [k for k in list(sd)[::4]]
    path = tmp_path / "m.safetensors"
    write_safetensors(path, mixed, bf16=bf)
    got = load_safetensors(path)
    for k, v in mixed.items():
        if k in bf:
            want = (v.astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
        else:
            want = v  # every dtype kept but bfloat16
        assert got[k].dtype == want.dtype and np.array_equal(got[k], want), k
    model = fastlstm.load(path, batch_first=False)
    x = rng.normal(size=(5, 2, 3)).astype(np.float32)
    ref = {k: got[k] for k in sd}
    out, _ = model(x)
    assert np.abs(out - torch_reference(ref, x, 2, False)[0]).max() <= TOL_F32


def test_empty_tensor_and_prefixed_keys(tmp_path, rng):
    sd = {"rnn." + k: v for k, v in lstm_state_dict(rng, 3, 4).items()}
    sd["empty"] = np.zeros((0, 3), np.float32)
    path = tmp_path / "m.safetensors"
    write_safetensors(path, sd)
    assert fastlstm.load(path, prefix="rnn", batch_first=False).hidden_size == 4
    assert load_safetensors(path)["empty"].shape == (0, 3)


def _edit(name, field, value):
    def edit(header):
        header[name][field] = value

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (_edit("a", "dtype", "C64"), "has dtype 'C64'; supported"),
        (_edit("a", "shape", [2, -3]), r"has shape \[2, -3\]"),
        (_edit("a", "shape", "23"), "has shape '23'"),
        (_edit("a", "shape", [7]), r"needs 28 bytes, data_offsets give 24"),
        (_edit("a", "data_offsets", [0, 4000]), r"spans bytes \[0, 4000\)"),
        (_edit("a", "data_offsets", [8, 4]), r"spans bytes \[8, 4\)"),
        (_edit("a", "data_offsets", [0]), "has data_offsets"),
        (_edit("b", "data_offsets", [16, 40]), "tensors 'a' and 'b' overlap"),
        (lambda h: h.__setitem__("a", [1, 2]), "entry 'a' is not an object"),
    ],
)
def test_bad_headers(tmp_path, edit, match):
    path = tmp_path / "bad.safetensors"
    write_safetensors(
        path, {"a": np.ones(6, np.float32), "b": np.ones(6, np.float32)}, edit
    )
    with pytest.raises(fastlstm.ModelFormatError, match=match):
        load_safetensors(path)


def test_absurd_or_truncated_header(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(fastlstm.ModelFormatError, match="header length .* is absurd"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 100) + b'{"a": 1}')
    with pytest.raises(fastlstm.ModelFormatError, match="truncated"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 4) + b"{x]}")
    with pytest.raises(fastlstm.ModelFormatError, match="header is not valid JSON"):
        load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(fastlstm.ModelFormatError, match="not a JSON object"):
        load_safetensors(path)
    path.write_bytes(b"\x01\x00")
    with pytest.raises(fastlstm.ModelFormatError, match="too short"):
        load_safetensors(path)


def test_truncated_buffer_sniffed_and_refused(tmp_path, rng):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, lstm_state_dict(rng, 3, 4))
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(fastlstm.ModelFormatError, match=r"spans bytes"):
        fastlstm.load(path, batch_first=False)


def test_live_safetensors(tmp_path):
    torch = import_framework("torch")
    st = pytest.importorskip("safetensors.torch")
    m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).eval()
    path = tmp_path / "m.safetensors"
    st.save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        y, (h, c) = m(x)
    y2, (h2, c2) = fastlstm.load(path, batch_first=False)(x.numpy())
    assert np.abs(y2 - y.numpy()).max() <= TOL_F32
    assert np.abs(c2 - c.numpy()).max() <= TOL_F32
