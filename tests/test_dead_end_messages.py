"""Every dead end names the way out: files fastlstm does not read say what
they are and what to do instead; a wrong config= names the file, the layer
and the shape; model inputs are named, not internal nodes; a source folder
shadowing the installed package says so."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastlstm

FIXTURES = Path(__file__).parent / "fixtures"


def test_tf2_object_checkpoint_is_named(tmp_path):
    keys = {
        "layer_with_weights-0/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.zeros(
            (3, 16), np.float32
        ),
        "_CHECKPOINTABLE_OBJECT_GRAPH": np.zeros(4, np.uint8),
    }
    np.savez(tmp_path / "vars.npz", **keys)
    for source in (keys, tmp_path / "vars.npz"):
        with pytest.raises(
            fastlstm.ModelFormatError,
            match=r"TF2 object-based checkpoint.*model\.save\('model\.keras'\)",
        ):
            fastlstm.load(source)


def _pt2(path: Path) -> Path:
    """The layout torch.export.save writes (names only matter here)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name in ("archive_format", "models/model.json", "data/weights/w0"):
            zf.writestr(f"m/{name}", b"x")
    return path


def test_torch_export_archive_is_named(tmp_path):
    with pytest.raises(
        fastlstm.ModelFormatError, match=r"torch\.export archive \(\.pt2\).*ONNX"
    ):
        fastlstm.load(_pt2(tmp_path / "m.pt2"))


def test_live_torch_export_archive_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    ep = torch.export.export(lstm, (torch.randn(1, 5, 3),))
    torch.export.save(ep, tmp_path / "m.pt2")
    with pytest.raises(fastlstm.ModelFormatError, match=r"torch\.export archive"):
        fastlstm.load(tmp_path / "m.pt2")


def test_subclassed_keras_model_is_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_group("layers")
    config = {"module": None, "class_name": "My", "config": {"trainable": True}}
    with zipfile.ZipFile(tmp_path / "sub.keras", "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("model.weights.h5", weights.getvalue())
    with pytest.raises(
        fastlstm.ModelFormatError,
        match=r"subclassed Keras model \(class 'My'\).*Functional or Sequential",
    ):
        fastlstm.load(tmp_path / "sub.keras")


def test_wrong_config_names_file_layer_and_shape():
    case = FIXTURES / "keras" / "k3_masking_lstm_weights_h5"
    config = json.loads((case / "arch.json").read_text())
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"][-1] = 5  # the weights take 4
    with pytest.raises(fastlstm.ModelFormatError) as info:
        fastlstm.load(case / "model.weights.h5", config=config)
    msg = str(info.value)
    assert "model.weights.h5" in msg and "config=" in msg
    assert "'lstm'" in msg and "expects 4" in msg


def test_onnx_input_errors_name_the_input():
    pytest.importorskip("onnx")
    model = fastlstm.load(FIXTURES / "onnx/single_lstm_node_bidirectional/model.onnx")
    with pytest.raises(fastlstm.ShapeError, match=r"input 'X' has shape \(3, 3\)"):
        model(np.zeros((3, 3), np.float32))


def test_source_folder_shadowing_the_install_says_so(tmp_path):
    """Python run from a folder holding an unbuilt copy of the package, with
    the real package installed elsewhere: the message names both places."""
    src = tmp_path / "checkout"
    pkg = src / "fastlstm"
    pkg.mkdir(parents=True)
    here = Path(fastlstm.__file__).parent
    for f in ("__init__.py", "_build_check.py"):
        (pkg / f).write_text((here / f).read_text())
    site = tmp_path / "site"
    (site / "fastlstm").mkdir(parents=True)
    (site / "fastlstm" / "__init__.py").write_text("")
    info = site / "fastlstm-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fastlstm\n")
    (info / "RECORD").write_text("fastlstm/__init__.py,,\n")
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{site}")
    proc = subprocess.run(
        # -S: no site-packages, so no editable-install finder can supply the
        # extension; PYTHONPATH still applies
        [sys.executable, "-S", "-c", "import fastlstm"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "shadows it" in proc.stderr and str(site / "fastlstm") in proc.stderr


def test_bytes_of_a_tf_savedmodel_are_named():
    """A SavedModel proto's bytes, as from a file object (the folder and the
    .pb by path are covered in test_load_errors.py)."""
    head = bytes([0x08, 0x01, 0x12, 0x05, 0x0A, 0x03]) + b"abc" + b"\0" * 40
    with pytest.raises(fastlstm.ModelFormatError, match="SavedModel"):
        fastlstm.load(io.BytesIO(head))
