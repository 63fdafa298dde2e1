"""Corrupt, truncated, foreign and unsupported model files: a
ModelFormatError (or UnsupportedLayerError) naming the file and the
problem, never a crash."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from _helpers import h5_with_one_layer, write_keras2_h5

import fastlstm

KERAS = Path(__file__).parent / "fixtures" / "keras"
H5 = KERAS / "k2_masking_lstm_h5" / "model.h5"
KZIP = KERAS / "k2_masking_lstm_keras" / "model.keras"

pytestmark = pytest.mark.skipif(not H5.exists(), reason="Keras fixtures missing")


def copy(tmp_path: Path, src: Path, name: str | None = None) -> Path:
    dst = tmp_path / (name or src.name)
    shutil.copy(src, dst)
    return dst


def test_png_renamed_h5(tmp_path):
    p = tmp_path / "model.h5"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(fastlstm.ModelFormatError, match=r"model\.h5: not a model file"):
        fastlstm.load(p)


def test_empty_and_missing_files(tmp_path):
    p = tmp_path / "empty.h5"
    p.write_bytes(b"")
    with pytest.raises(fastlstm.ModelFormatError, match="empty"):
        fastlstm.load(p)
    with pytest.raises(fastlstm.ModelFormatError, match="cannot read"):
        fastlstm.load(tmp_path / "nope.h5")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_h5(tmp_path, keep):
    data = H5.read_bytes()
    p = tmp_path / "cut.h5"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(fastlstm.ModelFormatError, match=r"cut\.h5"):
        fastlstm.load(p)


def test_missing_dataset(tmp_path):
    p = copy(tmp_path, H5)
    with h5py.File(p, "a") as f:
        g = f["model_weights"]
        name = [n for n in g if "lstm" in n][0]
        victim = []
        g[name].visititems(
            lambda n, o: victim.append(n) if isinstance(o, h5py.Dataset) else None
        )
        del g[name][victim[0]]
    with pytest.raises(fastlstm.ModelFormatError, match=r"layer 'lstm.*is missing"):
        fastlstm.load(p)


def test_wrong_weight_shape(tmp_path):
    p = copy(tmp_path, H5)
    with h5py.File(p, "a") as f:
        found = []
        f["model_weights"].visititems(
            lambda n, o: found.append(n) if n.endswith("recurrent_kernel:0") else None
        )
        path = "model_weights/" + found[0]
        data = f[path][()]
        del f[path]
        f[path] = np.zeros((data.shape[0] + 1, data.shape[1]), np.float32)
    with pytest.raises(
        fastlstm.ModelFormatError, match=r"recurrent_kernel must have shape"
    ):
        fastlstm.load(p)


def test_nan_weights(tmp_path):
    p = copy(tmp_path, H5)
    with h5py.File(p, "a") as f:
        found = []
        f["model_weights"].visititems(
            lambda n, o: found.append(n) if n.endswith("kernel:0") else None
        )
        ds = f["model_weights/" + found[0]]
        data = ds[()]
        data.flat[0] = np.nan
        ds[...] = data
    with pytest.raises(fastlstm.ModelFormatError, match="NaN"):
        fastlstm.load(p)


@pytest.mark.parametrize("version", ["7.0.1", "banana"])
def test_unknown_keras_version(tmp_path, version):
    p = copy(tmp_path, H5)
    with h5py.File(p, "a") as f:
        f.attrs["keras_version"] = version
        f["model_weights"].attrs["keras_version"] = version
    with pytest.raises(fastlstm.ModelFormatError, match="unknown keras_version"):
        fastlstm.load(p)


def test_bad_model_config_json(tmp_path):
    p = copy(tmp_path, H5)
    with h5py.File(p, "a") as f:
        f.attrs["model_config"] = "{not json"
    with pytest.raises(fastlstm.ModelFormatError, match="not valid JSON"):
        fastlstm.load(p)


def test_foreign_hdf5(tmp_path):
    p = tmp_path / "data.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(fastlstm.ModelFormatError, match="neither a Keras model"):
        fastlstm.load(p)


def test_external_link_is_not_followed(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["secret"] = np.ones(3)
    p = copy(tmp_path, H5)
    with h5py.File(p, "a") as f:
        found = []
        f["model_weights"].visititems(
            lambda n, o: found.append(n) if n.endswith("bias:0") else None
        )
        path = "model_weights/" + found[0]
        del f[path]
        f[path] = h5py.ExternalLink(str(other), "secret")
    with pytest.raises(fastlstm.ModelFormatError, match="ExternalLink"):
        fastlstm.load(p)


def test_keras_zip_without_config(tmp_path):
    p = tmp_path / "model.keras"
    with zipfile.ZipFile(KZIP) as src, zipfile.ZipFile(p, "w") as dst:
        for name in src.namelist():
            if name != "config.json":
                dst.writestr(name, src.read(name))
    with pytest.raises(fastlstm.ModelFormatError, match="without config.json"):
        fastlstm.load(p)


def test_truncated_zip(tmp_path):
    data = KZIP.read_bytes()
    p = tmp_path / "cut.keras"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(fastlstm.ModelFormatError, match=r"cut\.keras"):
        fastlstm.load(p)


def test_zip_bomb_member_is_refused(tmp_path):
    p = tmp_path / "bomb.keras"
    with (
        zipfile.ZipFile(KZIP) as src,
        zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as dst,
    ):
        for name in src.namelist():
            if name != "model.weights.h5":
                dst.writestr(name, src.read(name))
        dst.writestr("model.weights.h5", bytes(64 << 20))  # 64 MiB of zeros
    with pytest.raises(fastlstm.ModelFormatError, match="inflate"):
        fastlstm.load(p)


def test_lambda_is_refused(tmp_path):
    p = h5_with_one_layer(
        tmp_path,
        {
            "class_name": "Lambda",
            "config": {
                "name": "evil",
                "function": ["import os; os.system('echo pwned')", None, None],
            },
        },
    )
    with pytest.raises(
        fastlstm.UnsupportedLayerError,
        match=r"'evil' of class 'Lambda'.*never runs.*supported classes:.*LSTM",
    ):
        fastlstm.load(p)


def test_unknown_layer_names_class_and_supported_list(tmp_path):
    conv = {"class_name": "Conv2D", "config": {"name": "conv"}}
    p = h5_with_one_layer(tmp_path, conv)
    with pytest.raises(
        fastlstm.UnsupportedLayerError,
        match=r"layer 'conv' of class 'Conv2D' is not supported; "
        r"supported classes: .*Bidirectional.*Dense",
    ):
        fastlstm.load(p)


def _saved_model_pb() -> bytes:
    """The head of a SavedModel proto as TF writes it: schema version 1,
    one MetaGraphDef whose meta_info_def carries the tag "serve"."""
    meta_info = b"\x22\x05serve"  # tags
    meta_graph = b"\x0a" + bytes([len(meta_info)]) + meta_info
    return b"\x08\x01\x12" + bytes([len(meta_graph)]) + meta_graph


def test_saved_model_is_named_not_read_as_onnx(tmp_path):
    """A SavedModel (folder or saved_model.pb) used to load as an empty
    ONNX model; it is now refused, naming SavedModel and what to save."""
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(_saved_model_pb())
    (folder / "variables").mkdir()
    for path in (folder, folder / "saved_model.pb"):
        with pytest.raises(
            fastlstm.ModelFormatError, match=r"SavedModel.*model\.keras"
        ):
            fastlstm.load(path)
    renamed = tmp_path / "model.pb"
    renamed.write_bytes(_saved_model_pb())
    with pytest.raises(fastlstm.ModelFormatError, match="SavedModel"):
        fastlstm.load(renamed)


def test_onnx_without_a_graph_is_refused(tmp_path):
    pytest.importorskip("onnx")
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch")
    with pytest.raises(fastlstm.ModelFormatError, match="no ONNX graph"):
        fastlstm.load(path)


def test_npz_weights_that_fail_validation_are_a_format_error(tmp_path):
    """Non-finite weights in an .npz of TF1 variables are the file's fault:
    ModelFormatError naming the file, as for every other format (the fuzzer
    found a NonFiniteError escaping)."""
    kernel = np.zeros((7, 16), np.float32)
    kernel[2, 9] = np.nan
    path = tmp_path / "vars.npz"
    np.savez(
        path,
        **{
            "rnn/lstm_cell/kernel": kernel,
            "rnn/lstm_cell/bias": np.zeros(16, np.float32),
        },
    )
    with pytest.raises(
        fastlstm.ModelFormatError, match=r"vars\.npz: kernel holds 1 NaN"
    ):
        fastlstm.load(path)


def test_every_unsupported_layer_is_named_at_once(tmp_path):
    """One UnsupportedLayerError names every layer fastlstm cannot run (with
    its class), so a user sees the whole gap in one try."""
    layers = [
        {
            "class_name": "InputLayer",
            "config": {"name": "in", "batch_input_shape": [None, 5, 3]},
        },
        {"class_name": "Conv2D", "config": {"name": "c2"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 2}},
        {"class_name": "Lambda", "config": {"name": "lam"}},
    ]
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    rng = np.random.default_rng(0)
    dense = {"kernel:0": rng.normal(size=(3, 2)), "bias:0": np.zeros(2)}
    path = write_keras2_h5(tmp_path / "m.h5", cfg, {"d": dense})
    with pytest.raises(fastlstm.UnsupportedLayerError) as info:
        fastlstm.load(path)
    msg = str(info.value)
    assert "'c2' of class 'Conv2D'" in msg and "'lam' of class 'Lambda'" in msg
