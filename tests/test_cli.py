"""The fastlstm command: --version, inspect [--json] for every format,
check's exit codes, run over .npy/.npz files, the load options on every
subcommand that loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fastlstm
from fastlstm.__main__ import main

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE = Path(fastlstm.__file__).parent / "examples" / "example_model.h5"
TORCH = FIXTURES / "torch" / "lstm_basic" / "model.pt"
TF1 = FIXTURES / "tf1" / "basic_lstm_cell" / "model.ckpt"
ONNX = FIXTURES / "onnx" / "single_lstm_node_bidirectional" / "model.onnx"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastlstm {fastlstm.__version__}"


@pytest.mark.parametrize(
    "path, options, fmt",
    [
        (EXAMPLE, [], "Keras .h5"),
        (TORCH, ["--no-batch-first"], "PyTorch nn.LSTM"),
        (TF1, [], "TF1 checkpoint"),
        (ONNX, [], "ONNX"),
    ],
)
def test_inspect_json_describes_every_format(capsys, path, options, fmt):
    if path == ONNX:
        pytest.importorskip("onnx")
    assert main(["inspect", str(path), "--json", *options]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"].startswith(fmt)
    assert info["inputs"] and all("name" in x and "shape" in x for x in info["inputs"])
    assert info["outputs"] and info["layers"]
    assert info["parameters"] >= sum(x["parameters"] for x in info["layers"])
    assert info["parameters"] > 0
    assert main(["inspect", str(path), *options]) == 0  # and as text
    text = capsys.readouterr().out
    assert info["format"] in text and str(info["parameters"]) in text


def test_inspect_notes_what_a_file_does_not_record(capsys):
    assert main(["inspect", str(TORCH), "--json"]) == 0
    assert "--batch-first" in json.loads(capsys.readouterr().out)["notes"][0]


def test_check_exit_codes(tmp_path, capsys):
    assert main(["check", str(EXAMPLE)]) == 0
    assert main(["check", str(TORCH), "--batch-first"]) == 0
    assert main(["check", str(TORCH)]) == 2  # batch_first needed
    assert "batch_first" in capsys.readouterr().err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all" * 10)
    assert main(["check", str(junk)]) == 2
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Round", ["X"], ["Z"], name="r1"),
            helper.make_node("Floor", ["Z"], ["Y"], name="f1"),
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "u.onnx")
    capsys.readouterr()
    assert main(["check", str(tmp_path / "u.onnx")]) == 1
    err = capsys.readouterr().err
    assert "'r1' (Round)" in err and "'f1' (Floor)" in err


def test_run_npy_to_npy_in_batches(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(50, 6, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    args = ["run", str(EXAMPLE), str(tmp_path / "x.npy"), str(out)]
    assert main([*args, "--batch-size", "16", "--threads", "1"]) == 0
    np.testing.assert_array_equal(np.load(out), fastlstm.load(EXAMPLE).predict(x))
    assert "50/50 rows" in capsys.readouterr().err  # the progress bar


def test_run_several_outputs_to_npz(tmp_path):
    x = np.random.default_rng(1).normal(size=(7, 2, 5)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    out = tmp_path / "y.npz"
    opts = ["--no-batch-first", "--threads", "2"]
    assert main(["run", str(TORCH), str(tmp_path / "x.npz"), str(out), *opts]) == 0
    want = fastlstm.load(TORCH, batch_first=False)(x)
    with np.load(out) as got:
        np.testing.assert_array_equal(got["output_0"], want[0])
        np.testing.assert_array_equal(got["output_1"], want[1][0])
    assert (
        main(
            [
                "run",
                str(TORCH),
                str(tmp_path / "x.npz"),
                str(tmp_path / "y.npy"),
                "--no-batch-first",
            ]
        )
        == 1
    )  # three outputs do not fit one .npy


def test_run_reports_bad_inputs(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 4), np.float32))
    assert (
        main(["run", str(EXAMPLE), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")])
        == 1
    )
    assert "input 'input_1' has shape (2, 3, 4)" in capsys.readouterr().err


def test_bench_runs_the_chosen_cases_into_its_own_folder(tmp_path):
    """bench: progress on stderr, only the chosen cases and peers, a PNG per
    case (or a note without matplotlib), and by default a folder in the
    current directory (never the tracked benchmarks/results)."""
    import importlib.util
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastlstm",
            "bench",
            "--quick",
            "--cases",
            "f,h",
            "--peers",
            "numpy",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[1/2] f decaying state" in proc.stderr
    assert "[2/2] h Keras model stream step" in proc.stderr
    out = tmp_path / "fastlstm-bench"
    report = json.loads((out / "latest.json").read_text())
    assert [r["case"][0] for r in report["rows"]] == ["f", "h"]
    f_row = report["rows"][0]["results"]
    assert set(f_row) == {"fastlstm", "numpy"}
    assert f_row["numpy"]["max_abs_diff"] < 1e-5
    assert "| f decaying state" in (out / "latest.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    if importlib.util.find_spec("matplotlib") is None:
        assert pngs == [] and "plots skipped" in " ".join(report["notes"])
    else:
        assert pngs == ["case_f.png", "case_h.png"]
        assert (out / "case_f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [(["--cases", "az"], "--cases: unknown ['z']"), (["--peers", "jax"], "--peers")],
)
def test_bench_refuses_unknown_cases_and_peers(capsys, args, message):
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err
