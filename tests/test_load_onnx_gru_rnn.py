"""ONNX GRU and RNN nodes: torch.onnx.export files and hand-built nodes
(tests/fixtures/onnx_gru_rnn, made by make_onnx_gru_rnn_fixtures.py) match
onnxruntime to 1e-5; what runs on the C core and what on the float64
reference is reported; live exports under importorskip."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32

import fastlstm

FIXTURES = Path(__file__).parent / "fixtures" / "onnx_gru_rnn"
CASES = sorted(p.parent.name for p in FIXTURES.glob("*/case.json"))
pytest.importorskip("onnx")


def case(name: str) -> tuple[dict, dict, Path]:
    folder = FIXTURES / name
    meta = json.loads((folder / "case.json").read_text())
    with np.load(folder / "ref.npz") as z:
        ref = {k: z[k] for k in z.files}
    return meta, ref, folder / "model.onnx"


def feeds(meta: dict, ref: dict) -> list:
    out = []
    for name in meta["inputs"]:
        a = ref[name.lower()]
        out.append(a.astype(np.int32) if name == "seq" else a)
    return out


def test_every_case_is_here():
    assert len(CASES) >= 13, CASES


@pytest.mark.parametrize("name", CASES)
def test_fixture_matches_onnxruntime(name):
    meta, ref, path = case(name)
    model = fastlstm.load(path)
    outs = model(*feeds(meta, ref))
    assert np.abs(outs[0] - ref["y"]).max() <= TOL_F32
    if "h_n" in ref:  # tf2onnx conversions output y only
        assert np.abs(outs[1] - ref["h_n"]).max() <= TOL_F32


def test_engine_or_reference_is_reported():
    _, _, path = case("gru_lbr1_reverse_clip_hardsigmoid")
    (rec,) = fastlstm.load(path).recurrent_nodes
    assert rec["engine"] == [False]
    assert "clip=1.5" in rec["fallback_reason"][0]
    _, _, path = case("gru_bidir_lbr0_t1000_h64")
    (rec,) = fastlstm.load(path).recurrent_nodes
    assert rec["engine"] == [True, True] and rec["direction"] == "bidirectional"


def test_reference_refused_without_fallback():
    from fastlstm.loaders.onnx_reader import read_onnx_model

    _, _, path = case("gru_lbr1_reverse_clip_hardsigmoid")
    with pytest.raises(fastlstm.UnsupportedLayerError, match="numpy_fallback=False"):
        read_onnx_model(str(path), numpy_fallback=False)


@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_live_export_without_dynamic_axes(kind, tmp_path):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(3)
    module = getattr(torch.nn, kind)(4, 6, num_layers=2).eval()
    x = torch.randn(5, 2, 4)
    f = io.BytesIO()
    torch.onnx.export(module, (x,), f, dynamo=False, input_names=["x"])
    want = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()}
    )
    path = tmp_path / "export.onnx"
    path.write_bytes(f.getvalue())
    got = fastlstm.load(path)(x.numpy())
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= TOL_F32


@pytest.mark.parametrize("op", ["GRU", "RNN"])
def test_layout_1_is_layout_0_transposed(op):
    """ONNX Runtime refuses layout=1 (batch-major X, Y, Y_h); fastlstm runs
    it as the spec defines: the layout=0 results, transposed."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    G, H, I = (3 if op == "GRU" else 1), 5, 3
    inits = [
        numpy_helper.from_array(
            rng.normal(0, 0.4, (2, G * H, I)).astype(np.float32), "W"
        ),
        numpy_helper.from_array(
            rng.normal(0, 0.4, (2, G * H, H)).astype(np.float32), "R"
        ),
        numpy_helper.from_array(
            rng.normal(0, 0.2, (2, 2 * G * H)).astype(np.float32), "B"
        ),
    ]
    x = rng.normal(size=(4, 6, I)).astype(np.float32)  # (T, N, I) for layout 0
    outs = {}
    for layout in (0, 1):
        node = helper.make_node(
            op,
            ["X", "W", "R", "B"],
            ["Y", "Y_h"],
            hidden_size=H,
            direction="bidirectional",
            layout=layout,
        )
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
            [
                helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                for n in ("Y", "Y_h")
            ],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        outs[layout] = fastlstm.from_onnx(model)(
            x if layout == 0 else x.transpose(1, 0, 2)
        )
    y0, h0 = outs[0]
    y1, h1 = outs[1]
    np.testing.assert_array_equal(y1, y0.transpose(2, 0, 1, 3))  # (N, T, D, H)
    np.testing.assert_array_equal(h1, h0.transpose(1, 0, 2))  # (N, D, H)
