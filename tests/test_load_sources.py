"""load() takes what users hold: a path (str or os.PathLike), the file's
bytes, or a binary file object, for every single-file format, with the same
result; formats of several files say to pass the path; bad sources get
clear errors naming them."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from _helpers import spec_arrays

import fastlstm
from fastlstm.loaders import _files

FIXTURES = Path(__file__).parent / "fixtures"
SINGLE_FILE = {
    "keras_h5": ("keras/k2_bidir_concat/model.h5", {}),
    "keras_v3": ("keras/k3_attention_dot/model.keras", {}),
    "keras_weights": (
        "keras/k2_masking_lstm_weights_h5/model_weights.h5",
        {"config": FIXTURES / "keras/k2_masking_lstm_weights_h5/arch.json"},
    ),
    "torch_zip": ("torch/lstm_basic/model.pt", {"batch_first": False}),
    "torch_legacy": ("torch/legacy_format/model.pt", {"batch_first": False}),
    "safetensors": ("torch/safetensors/model.safetensors", {"batch_first": False}),
    "tf1_npz": ("tf1/basic_lstm_cell/variables.npz", {}),
}


def sources(path: Path):
    data = path.read_bytes()
    yield "bytes", data
    yield "bytearray", bytearray(data)
    yield "memoryview", memoryview(data)
    yield "BytesIO", io.BytesIO(data)
    yield "open file", path.open("rb")


@pytest.mark.parametrize("kind", sorted(SINGLE_FILE))
def test_every_single_file_format_loads_from_memory(kind):
    rel, kw = SINGLE_FILE[kind]
    path = FIXTURES / rel
    if kind == "keras_v3":
        pytest.importorskip("h5py")
    want = fastlstm.load_spec(path, **kw)
    assert fastlstm.load_spec(str(path), **kw).name == want.name
    for label, source in sources(path):
        got = fastlstm.load_spec(source, **kw)
        a, b = spec_arrays(want), spec_arrays(got)
        assert a and len(a) == len(b), label
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        assert got.source.startswith("<"), (label, got.source)
    model = fastlstm.load(path.read_bytes(), **kw)
    assert type(model) is type(fastlstm.load(path, **kw))
    pickle.loads(pickle.dumps(model))  # a model from bytes pickles as any other


def test_onnx_from_bytes():
    pytest.importorskip("onnx")
    path = FIXTURES / "onnx/single_lstm_node_bidirectional/model.onnx"
    ref = np.load(path.with_name("ref.npz"))
    names = [k for k in ref.files if k.startswith("input")] or ref.files[:1]
    got = fastlstm.load(path.read_bytes())
    want = fastlstm.load(path)
    x = ref[names[0]]
    for a, b in zip(got(x), want(x)):
        np.testing.assert_array_equal(a, b)


def test_formats_of_several_files_need_the_path(tmp_path):
    index = FIXTURES / "tf1/basic_lstm_cell/model.ckpt.index"
    with pytest.raises(
        fastlstm.ConfigError, match=r"<bytes>.*load the checkpoint by path"
    ):
        fastlstm.load(index.read_bytes())
    onnx = pytest.importorskip("onnx")
    model = onnx.load(FIXTURES / "onnx/single_lstm_node_bidirectional/model.onnx")
    onnx.save(
        model,
        tmp_path / "m.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    (Path.cwd() / "w.bin").exists() and pytest.skip("a w.bin in the working folder")
    with pytest.raises(fastlstm.ConfigError, match=r"has no folder; load it by path"):
        fastlstm.load((tmp_path / "m.onnx").read_bytes())
    fastlstm.load(tmp_path / "m.onnx")  # by path it loads


def test_bad_sources_are_named():
    with pytest.raises(fastlstm.ConfigError, match=r"binary mode"):
        fastlstm.load(io.StringIO("not bytes"))
    with pytest.raises(TypeError, match=r"path must be a file path .* got int"):
        fastlstm.load(12)
    with pytest.raises(fastlstm.ModelFormatError, match=r"<bytes>: the file is empty"):
        fastlstm.load(b"")
    with pytest.raises(fastlstm.ModelFormatError, match=r"<file object 'x.h5'>"):
        buf = io.BytesIO(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        buf.name = "x.h5"
        fastlstm.load(buf)


def test_file_objects_are_read_within_the_cap(monkeypatch):
    monkeypatch.setattr(_files, "MAX_ALLOCATION_BYTES", 1000)
    monkeypatch.setattr(_files, "READ_CHUNK", 256)
    with pytest.raises(fastlstm.ModelFormatError, match=r"more than 1000 bytes"):
        fastlstm.load(io.BytesIO(b"x" * 5000))


def test_read_state_dict_from_bytes():
    path = FIXTURES / "torch/lstm_basic/model.pt"
    want = fastlstm.read_state_dict(path)
    for label, source in sources(path):
        got = fastlstm.read_state_dict(source)
        assert got.keys() == want.keys(), label
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_onnx_model_class_takes_a_path_or_bytes():
    pytest.importorskip("onnx")
    path = FIXTURES / "onnx/single_lstm_node_bidirectional/model.onnx"
    for source in (path, str(path), path.read_bytes()):
        assert fastlstm.OnnxModel(source).input_names[0] == "X"
