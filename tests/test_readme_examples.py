"""The README's Python examples run as written: each block executes in a
folder holding fixture files under the names the README uses
(model.keras, lstm.pt, model.onnx), with the variables it assumes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import fastlstm

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def block(first_line: str) -> str:
    (found,) = [b for b in BLOCKS if b.splitlines()[0].startswith(first_line)]
    return found


def run_in(tmp_path: Path, monkeypatch, code: str, files: dict, **names) -> dict:
    for name, source in files.items():
        shutil.copy(source, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    scope = {"fastlstm": fastlstm, "np": np, **names}
    exec(compile(code, "README.md", "exec"), scope)
    return scope


def test_keras_quick_start(tmp_path, monkeypatch):
    x = np.load(FIXTURES / "keras/k3_masking_lstm_keras/ref.npz")["x"]
    scope = run_in(
        tmp_path,
        monkeypatch,
        block("import fastlstm"),
        {"model.keras": FIXTURES / "keras/k3_masking_lstm_keras/model.keras"},
        x=x,
    )
    np.testing.assert_allclose(scope["y"], scope["model"].predict(x), atol=1e-6)
    assert set(scope["saved"]) == {"lstm"}
    assert len(scope["w"]) == 3  # kernel, recurrent kernel, bias


def test_pytorch_quick_start(tmp_path, monkeypatch):
    """The file's module and the live one give torch's own outputs; a row
    past its length gives zeros, as a packed sequence padded back."""
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(5, 7, batch_first=True)
    torch.save(module.state_dict(), tmp_path / "saved.pt")
    x = np.random.default_rng(0).normal(size=(2, 6, 5)).astype(np.float32)
    zeros = np.zeros((1, 2, 7), np.float32)
    lens = np.array([6, 3])
    code = block('lstm = fastlstm.load("lstm.pt"')
    files = {"lstm.pt": tmp_path / "saved.pt"}
    scope = run_in(
        tmp_path,
        monkeypatch,
        code,
        files,
        x=x,
        h0=zeros,
        c0=zeros,
        lens=lens,
        module=module,
    )
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(scope["out"][0], want[0], atol=1e-5)
    np.testing.assert_allclose(scope["lstm"](x)[0], want, atol=1e-5)
    assert not scope["out"][1, 3:].any()


def test_onnx_quick_start(tmp_path, monkeypatch):
    """The exported model's first output is what ONNX Runtime gave."""
    folder = FIXTURES / "onnx/torch_export_lstm"
    ref = np.load(folder / "ref.npz")
    code = block('sess = fastlstm.load("model.onnx")')
    files = {"model.onnx": folder / "model.onnx"}
    scope = run_in(tmp_path, monkeypatch, code, files, x=ref["x"])
    assert scope["name"] == "x"
    np.testing.assert_allclose(scope["y"], ref["output"], atol=1e-5)


def test_engine_example(tmp_path, monkeypatch):
    scope = run_in(tmp_path, monkeypatch, block("import numpy as np"), {})
    assert scope["y"].shape == (8, 100, 64)
    assert scope["out_t"].shape == (8, 64)
