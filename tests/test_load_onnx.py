"""ONNX graphs of LSTM nodes and exporter glue, run like ONNX Runtime.

Fixtures: tests/fixtures/onnx/<case>/ (tests/fixtures/make_onnx_fixtures.py;
references from onnxruntime): need the optional onnx package to read. The
graph interpreter and the LSTM node are also tested on graphs built here as
plain fastlstm Graph objects, which needs no onnx at all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32, import_framework
from torch_files import lstm_state_dict

import fastlstm
from fastlstm.activations import GateActivation
from fastlstm.engine.lstm import LSTM, prepare
from fastlstm.engine.ops import op_budget, run_op
from fastlstm.engine.recurrent_op import run_direction
from fastlstm.engine.reference_cells import ReferenceLSTM
from fastlstm.frontends.onnx import OnnxModel, from_onnx
from fastlstm.loaders.onnx_graph import Graph, Node
from fastlstm.model_spec import OpSpec, RecurrentOpSpec, ReferenceLSTMSpec

FIXTURES = Path(__file__).parent / "fixtures" / "onnx"
CASES = sorted(p.parent.name for p in FIXTURES.glob("*/case.json"))


def close(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max()) <= TOL_F32


# --- fixtures (need onnx) -------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_fixture_matches_onnxruntime(name):
    pytest.importorskip("onnx")
    folder = FIXTURES / name
    ref = dict(np.load(folder / "ref.npz"))
    model = fastlstm.load(folder / "model.onnx")
    assert isinstance(model, fastlstm.OnnxModel)
    if name == "torch_export_lstm":  # dynamic batch and sequence axes
        for sfx in ("", "_alt"):
            outs = model(ref["x" + sfx])
            for out, n in zip(outs, model.output_names):
                assert close(out, ref[n + sfx]), (n, sfx)
        return
    feeds = {n: ref[n] for n in model.input_names if n in ref}
    if "sequence_lens" in feeds:
        feeds["sequence_lens"] = feeds["sequence_lens"].astype(np.int32)
    outs = model(**feeds)
    meta = json.loads((folder / "case.json").read_text())
    assert model.output_names == [o["array"] for o in meta["outputs"]]
    for out, n in zip(outs, model.output_names):
        assert close(out, ref[n]), n


def test_fixture_features_engine_cannot_express_need_fallback():
    pytest.importorskip("onnx")
    for name, what in (
        ("single_lstm_node_input_forget", "input_forget=1"),
        ("single_lstm_node_clip", "clip=0.7"),
        ("single_lstm_node_activations", "activations g=tanh and h=relu differ"),
    ):
        path = FIXTURES / name / "model.onnx"
        if not path.exists():
            pytest.skip("onnx fixtures not generated yet")
        with pytest.raises(fastlstm.UnsupportedLayerError, match=what):
            from_onnx(path, numpy_fallback=False)
        assert fastlstm.load(path).recurrent_nodes[0]["engine"] == [False]


def test_unsupported_op_named(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Round", ["X"], ["Z"], name="my_round"),
            helper.make_node("Relu", ["Z"], ["R"], name="act"),
            helper.make_node("Floor", ["R"], ["Y"], name="floor"),
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "add.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(
        fastlstm.UnsupportedLayerError,
        match=r"node 'my_round' \(Round\), node 'floor' \(Floor\); fastlstm runs "
        r"LSTM, GRU and RNN",
    ):
        fastlstm.load(path)


def test_corrupt_onnx_file(tmp_path):
    pytest.importorskip("onnx")
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07\x12\xff\xff garbage")
    with pytest.raises(fastlstm.ModelFormatError, match=r"bad\.onnx: not a readable"):
        fastlstm.load(path)


def test_missing_onnx_package_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch")
    with pytest.raises(ImportError, match=r"pip install fastlstm\[onnx\]"):
        fastlstm.load(path)


# --- an ONNX LSTM reference written from the operator's equations -------------


def sig(v):
    return 1 / (1 + np.exp(-v))


def onnx_lstm_ref(
    X,
    W,
    R,
    B=None,
    seq=None,
    h0=None,
    c0=None,
    P=None,
    direction="forward",
    layout=0,
    clip=None,
    input_forget=0,
    acts=None,
):
    """float64; returns Y, Y_h, Y_c in the node's layout."""
    X = np.asarray(X, np.float64)
    if layout:
        X = X.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    T, Bn, _ = X.shape
    D = 2 if direction == "bidirectional" else 1
    H = R.shape[-1]
    lens = np.full(Bn, T) if seq is None else np.asarray(seq)
    Y, Yh, Yc = np.zeros((T, D, Bn, H)), [], []
    for d in range(D):
        f, g, hh = (acts or [(sig, np.tanh, np.tanh)] * D)[d]
        h = np.zeros((Bn, H)) if h0 is None else h0[d].astype(np.float64)
        c = np.zeros((Bn, H)) if c0 is None else c0[d].astype(np.float64)
        b = np.zeros(8 * H) if B is None else B[d]
        p = np.zeros(3 * H) if P is None else P[d]
        rev = direction == "reverse" or d == 1
        for t in range(T - 1, -1, -1) if rev else range(T):
            z = X[t] @ W[d].T + h @ R[d].T + b[: 4 * H] + b[4 * H :]
            zi, zo, zf, zc = np.split(z, 4, axis=1)
            zi, zf = zi + p[:H] * c, zf + p[2 * H :] * c
            if clip:
                zi, zf, zc = (np.clip(v, -clip, clip) for v in (zi, zf, zc))
            i = f(zi)
            fg = 1 - i if input_forget else f(zf)
            cn = fg * c + i * g(zc)
            zo = zo + p[H : 2 * H] * cn
            if clip:
                zo = np.clip(zo, -clip, clip)
            hn = f(zo) * hh(cn)
            v = (t < lens)[:, None]
            h, c = np.where(v, hn, h), np.where(v, cn, c)
            Y[t, d] = np.where(v, hn, 0)
        Yh.append(h)
        Yc.append(c)
    Yh, Yc = np.stack(Yh), np.stack(Yc)
    if layout:
        return Y.transpose(2, 0, 1, 3), Yh.transpose(1, 0, 2), Yc.transpose(1, 0, 2)
    return Y, Yh, Yc


def lstm_graph(
    rng,
    I=3,
    H=4,
    direction="forward",
    peep=False,
    bias=True,
    layout=0,
    with_seq=False,
    with_init=False,
    **attrs,
):
    D = 2 if direction == "bidirectional" else 1
    w = {
        "W": rng.normal(0, 0.5, (D, 4 * H, I)).astype(np.float32),
        "R": rng.normal(0, 0.5, (D, 4 * H, H)).astype(np.float32),
    }
    if bias:
        w["B"] = rng.normal(0, 0.3, (D, 8 * H)).astype(np.float32)
    if peep:
        w["P"] = rng.normal(0, 0.3, (D, 3 * H)).astype(np.float32)
    inputs = ["X", "W", "R", "B" if bias else "", "sequence_lens" if with_seq else ""]
    inputs += ["initial_h", "initial_c"] if with_init else ["", ""]
    inputs += ["P"] if peep else []
    attrs = {"direction": direction, "hidden_size": H, "layout": layout, **attrs}
    node = Node("LSTM", "lstm", inputs, ["Y", "Y_h", "Y_c"], attrs)
    graph_inputs = ["X"] + [n for n in inputs[4:7] if n]
    return Graph([node], w, graph_inputs, ["Y", "Y_h", "Y_c"], 14, "<test>"), w


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("peep", [False, True])
def test_lstm_node_on_engine(rng, direction, layout, peep):
    graph, w = lstm_graph(
        rng,
        direction=direction,
        peep=peep,
        layout=layout,
        with_seq=True,
        with_init=True,
    )
    model = OnnxModel(graph)
    assert all(model.recurrent_nodes[0]["engine"])
    D, T, Bn = (2 if direction == "bidirectional" else 1), 6, 3
    X = rng.normal(size=(T, Bn, 3) if layout == 0 else (Bn, T, 3)).astype(np.float32)
    st = (D, Bn, 4) if layout == 0 else (Bn, D, 4)
    h0 = rng.normal(size=st).astype(np.float32)
    c0 = rng.normal(size=st).astype(np.float32)
    seq = np.array([6, 2, 0], np.int32)
    got = model(X, seq, h0, c0)
    want = onnx_lstm_ref(
        X, w["W"], w["R"], w["B"], seq, h0, c0, w.get("P"), direction, layout
    )
    for g, r in zip(got, want):
        assert close(g, r)
    # optional inputs left out
    got = model(X=X)
    want = onnx_lstm_ref(
        X, w["W"], w["R"], w["B"], None, None, None, w.get("P"), direction, layout
    )
    assert all(close(g, r) for g, r in zip(got, want))


def hard_sigmoid(a, b):
    return lambda v: np.clip(a * v + b, 0, 1)


@pytest.mark.parametrize(
    "attrs, acts, why",
    [
        ({"clip": 0.5}, None, "clip=0.5"),
        ({"input_forget": 1}, None, "input_forget=1"),
        (
            {"activations": ["HardSigmoid", "Tanh", "Relu"], "activation_alpha": [0.3]},
            [(hard_sigmoid(0.3, 0.5), np.tanh, lambda v: np.maximum(v, 0))],
            "hardsigmoid",
        ),
        (
            {
                "activations": ["Sigmoid", "LeakyRelu", "LeakyRelu", "Sigmoid"]
                + ["ScaledTanh", "ScaledTanh"],
                "activation_alpha": [0.1, 0.2, 1.5, 0.5],
                "activation_beta": [0.7, 2.0],
                "direction": "bidirectional",
            },
            [
                (
                    sig,
                    lambda v: np.where(v >= 0, v, 0.1 * v),
                    lambda v: np.where(v >= 0, v, 0.2 * v),
                ),
                (sig, lambda v: 1.5 * np.tanh(0.7 * v), lambda v: 0.5 * np.tanh(2 * v)),
            ],
            "leakyrelu",
        ),
    ],
)
def test_numpy_fallback_features(rng, attrs, acts, why):
    graph, w = lstm_graph(rng, peep=True, with_seq=True, with_init=True, **attrs)
    direction = attrs.get("direction", "forward")
    D = 2 if direction == "bidirectional" else 1
    model = OnnxModel(graph)
    assert not any(model.recurrent_nodes[0]["engine"])
    assert why in " ".join(model.recurrent_nodes[0]["fallback_reason"])
    X = rng.normal(0, 2, (5, 3, 3)).astype(np.float32)
    h0, c0 = rng.normal(size=(2, D, 3, 4)).astype(np.float32)
    seq = np.array([5, 1, 3])
    got = model(X, seq, h0, c0)
    opts = dict(clip=attrs.get("clip"), input_forget=attrs.get("input_forget", 0))
    want = onnx_lstm_ref(
        X, w["W"], w["R"], w["B"], seq, h0, c0, w["P"], direction, acts=acts, **opts
    )
    assert all(close(g, r) for g, r in zip(got, want))
    with pytest.raises(fastlstm.UnsupportedLayerError, match=why):
        OnnxModel(graph, numpy_fallback=False)


def test_engine_and_fallback_agree(rng):
    graph, _ = lstm_graph(rng, direction="bidirectional", peep=True, with_seq=True)
    model = OnnxModel(graph)
    X = rng.normal(size=(3, 7, 3)).astype(np.float32)
    seq = np.array([7, 4, 1], np.int32)
    (op,) = [ls for ls in model.spec.layers if isinstance(ls, RecurrentOpSpec)]
    p = prepare(X, 3, 7, False, None, seq)
    sigmoid, tanh = GateActivation("sigmoid"), GateActivation("tanh")
    for d in op.directions:
        as_reference = ReferenceLSTMSpec(
            *(a.astype(np.float64) for a in (d.kernel, d.recurrent_kernel, d.bias)),
            d.peepholes.astype(np.float64),
            sigmoid,
            tanh,
            tanh,
            go_backwards=d.go_backwards,
        )
        y1, (h1, c1) = run_direction(LSTM.from_spec(d), p, None)
        y2, (h2, c2) = run_direction(ReferenceLSTM(as_reference), p, None)
        assert close(y1, y2) and close(h1, h2) and close(c1, c2)


def const(name, value):
    return Node("Constant", name, [], [name], {"value": np.asarray(value)})


def torch_export_graph(sd: dict, layers: int, H: int) -> Graph:
    """What torch.onnx.export writes for nn.LSTM(batch_first=True,
    bidirectional=True): Shape/Gather/Unsqueeze/Concat/ConstantOfShape for the
    zero states, Slice per layer, Transpose/Reshape between layers (plus
    Squeeze, Cast and Identity to cover those ops)."""

    def onnx_w(k, name):
        blocks = np.split(sd[f"{name}_l{k}"], 4, axis=0)  # torch i, f, g, o
        fw = np.concatenate([blocks[i] for i in (0, 3, 1, 2)])  # -> i, o, f, c
        blocks = np.split(sd[f"{name}_l{k}_reverse"], 4, axis=0)
        bw = np.concatenate([blocks[i] for i in (0, 3, 1, 2)])
        return np.stack([fw, bw])

    nodes = [
        Node("Shape", "shape", ["x"], ["shp"], {}),
        const("zero", np.array(0, np.int64)),
        Node("Gather", "gather", ["shp", "zero"], ["batch"], {"axis": 0}),
        const("ax0", np.array([0], np.int64)),
        Node("Unsqueeze", "unsq", ["batch", "ax0"], ["batch1"], {}),
        const("dirs", np.array([2 * layers], np.int64)),
        const("hid", np.array([H], np.int64)),
        Node("Concat", "cat", ["dirs", "batch1", "hid"], ["zshape"], {"axis": 0}),
        Node("ConstantOfShape", "zeros", ["zshape"], ["z"], {}),
        Node("Transpose", "tin", ["x"], ["xt"], {"perm": [1, 0, 2]}),
        Node("Cast", "cast", ["xt"], ["xt32"], {"to": 1}),
    ]
    inits = {}
    inp = "xt32"
    hs, cs = [], []
    for k in range(layers):
        W, R = onnx_w(k, "weight_ih"), onnx_w(k, "weight_hh")
        bih, bhh = onnx_w(k, "bias_ih"), onnx_w(k, "bias_hh")
        inits.update({f"W{k}": W, f"R{k}": R, f"B{k}": np.concatenate([bih, bhh], 1)})
        nodes += [
            const(f"s{k}", np.array([2 * k], np.int64)),
            const(f"e{k}", np.array([2 * k + 2], np.int64)),
            Node("Slice", f"sl{k}", ["z", f"s{k}", f"e{k}", "ax0"], [f"h{k}"], {}),
            Node("Identity", f"id{k}", [f"h{k}"], [f"c{k}"], {}),
            Node(
                "LSTM",
                f"lstm{k}",
                [inp, f"W{k}", f"R{k}", f"B{k}", "", f"h{k}", f"c{k}"],
                [f"Y{k}", f"Yh{k}", f"Yc{k}"],
                {"direction": "bidirectional", "hidden_size": H},
            ),
            Node("Transpose", f"tp{k}", [f"Y{k}"], [f"Yt{k}"], {"perm": [0, 2, 1, 3]}),
            const(f"shape{k}", np.array([0, 0, -1], np.int64)),
            Node("Reshape", f"rs{k}", [f"Yt{k}", f"shape{k}"], [f"out{k}"], {}),
        ]
        inp = f"out{k}"
        hs.append(f"Yh{k}")
        cs.append(f"Yc{k}")
    nodes += [
        Node("Unsqueeze", "u2", [inp, "ax0"], ["o4"], {}),
        Node("Squeeze", "sq", ["o4", "ax0"], ["o3"], {}),
        Node("Transpose", "tout", ["o3"], ["output"], {"perm": [1, 0, 2]}),
        Node("Concat", "hcat", hs, ["h_n"], {"axis": 0}),
        Node("Concat", "ccat", cs, ["c_n"], {"axis": 0}),
    ]
    return Graph(nodes, inits, ["x"], ["output", "h_n", "c_n"], 17, "<export>")


def test_torch_export_style_graph_equals_torch_lstm(rng):
    sd = lstm_state_dict(rng, 3, 4, num_layers=2, bidirectional=True)
    model = OnnxModel(torch_export_graph(sd, 2, 4))
    torch_like = fastlstm.from_torch(sd, batch_first=True)
    for B, T in ((3, 5), (1, 9)):
        x = rng.normal(size=(B, T, 3)).astype(np.float32)
        out, h, c = model(x)
        want_out, (want_h, want_c) = torch_like(x)
        assert close(out, want_out) and close(h, want_h) and close(c, want_c)


def test_slice_gather_reshape_corners():
    x = np.arange(24).reshape(2, 3, 4)

    def run_glue(node, ins):
        return run_op(node, ins, op_budget("test", ins))

    big = np.iinfo(np.int64).max
    node = OpSpec("s", "Slice", "Slice", {})

    def sl(*args):
        return run_glue(node, [x] + [np.asarray(a, np.int64) for a in args])[0]

    assert np.array_equal(sl([1], [big], [2]), x[:, :, 1:])
    assert np.array_equal(sl([-1], [-big], [1], [-1]), x[:, ::-1])
    assert np.array_equal(sl([0, 1], [2, 3], [0, 2], [1, 2]), x[0:2, :, 1:3:2])
    g = run_glue(OpSpec("g", "Gather", "Gather", {"axis": 1}), [x, np.array([-1, 0])])[
        0
    ]
    assert np.array_equal(g, x[:, [2, 0]])
    r = run_glue(OpSpec("r", "Reshape", "Reshape", {}), [x, np.array([0, -1])])[0]
    assert r.shape == (2, 12)
    with pytest.raises(fastlstm.ShapeError, match=r"node 'g' \(Gather\): index out"):
        run_glue(OpSpec("g", "Gather", "Gather", {}), [x, np.array([5])])
    with pytest.raises(fastlstm.ShapeError, match="cannot squeeze axis 1"):
        run_glue(OpSpec("q", "Squeeze", "Squeeze", {}), [x, np.array([1])])
    with pytest.raises(fastlstm.ModelFormatError, match=r"shape \(1048576, 1048576"):
        run_glue(
            OpSpec("c", "ConstantOfShape", "ConstantOfShape", {}),
            [np.array([1 << 20] * 3)],
        )


@pytest.mark.parametrize(
    "edit, exc, match",
    [
        (
            lambda g: g.nodes[0].attrs.update(foo=1),
            fastlstm.UnsupportedLayerError,
            r"unsupported LSTM attribute\(s\) \['foo'\]",
        ),
        (
            lambda g: g.nodes[0].attrs.update(direction="sideways"),
            fastlstm.ModelFormatError,
            "direction 'sideways'",
        ),
        (
            lambda g: g.nodes[0].attrs.update(hidden_size=5),
            fastlstm.ModelFormatError,
            "hidden_size=5 but R says 4",
        ),
        (
            lambda g: g.initializers.update(B=np.zeros((1, 7), np.float32)),
            fastlstm.ModelFormatError,
            r"B has shape \(1, 7\), expected \(1, 32\)",
        ),
        (
            lambda g: g.nodes[0].attrs.update(activations=["Sigmoid", "Tanh", "Gelu"]),
            fastlstm.UnsupportedLayerError,
            "activation 'Gelu' is not an ONNX LSTM activation",
        ),
        (
            lambda g: g.nodes[0].inputs.__setitem__(1, "nowhere"),
            fastlstm.ModelFormatError,
            "reads 'nowhere', which no earlier node",
        ),
        (
            lambda g: g.nodes.insert(0, Node("Round", "plus", [], ["q"], {})),
            fastlstm.UnsupportedLayerError,
            r"node 'plus' \(Round\) is not supported",
        ),
        (
            lambda g: g.outputs.append("extra"),
            fastlstm.ModelFormatError,
            "graph output 'extra' is never computed",
        ),
    ],
)
def test_bad_graphs(rng, edit, exc, match):
    graph, _ = lstm_graph(rng)
    edit(graph)
    with pytest.raises(exc, match=match):
        OnnxModel(graph)


def test_bad_call_inputs(rng):
    graph, _ = lstm_graph(rng, with_seq=True)
    model = OnnxModel(graph)
    x = np.zeros((4, 2, 3), np.float32)
    with pytest.raises(fastlstm.ConfigError, match=r"unknown input\(s\) \['Z'\]"):
        model(x, Z=1)
    with pytest.raises(fastlstm.ShapeError, match=r"X has shape \(4, 2, 5\)"):
        model(np.zeros((4, 2, 5), np.float32))
    with pytest.raises(fastlstm.ShapeError, match=r"sequence_lens \[4, 9\] outside"):
        model(x, np.array([4, 9]))
    with pytest.raises(fastlstm.ConfigError, match="input 'X' is required by"):
        model()
    assert repr(model).startswith("OnnxModel(inputs=['X', 'sequence_lens']")
    y_h = model.run(["Y_h"], {"X": x})
    assert len(y_h) == 1 and y_h[0].shape == (1, 2, 4)


# --- live onnxruntime / torch.onnx.export -----------------------------------------


def test_live_onnxruntime(tmp_path, rng):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    graph, w = lstm_graph(
        rng,
        direction="bidirectional",
        peep=True,
        with_seq=True,
        with_init=True,
        clip=0.8,
    )
    node = graph.nodes[0]
    onnx_node = helper.make_node("LSTM", node.inputs, node.outputs, **node.attrs)
    g = helper.make_graph(
        [onnx_node],
        "g",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, 3]),
            helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [None]),
            helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [2, None, 4]),
            helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [2, None, 4]),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in node.outputs
        ],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    path = tmp_path / "m.onnx"
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    proto.ir_version = 8  # what onnxruntime releases accept
    onnx.save(proto, path)
    feeds = {
        "X": rng.normal(size=(6, 3, 3)).astype(np.float32),
        "sequence_lens": np.array([6, 2, 4], np.int32),
        "initial_h": rng.normal(size=(2, 3, 4)).astype(np.float32),
        "initial_c": rng.normal(size=(2, 3, 4)).astype(np.float32),
    }
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    got = fastlstm.load(path)(**feeds)
    assert all(close(a, b) for a, b in zip(got, want))


def test_live_torch_export(tmp_path):
    pytest.importorskip("onnx")
    torch = import_framework("torch")
    m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).eval()
    x = torch.randn(2, 5, 3)
    path = tmp_path / "lstm.onnx"
    try:
        torch.onnx.export(
            m,
            (x,),
            str(path),
            input_names=["x"],
            output_names=["out", "h", "c"],
            dynamic_axes={"x": {0: "b", 1: "t"}},
            dynamo=False,
        )
    except Exception as exc:  # exporter extras missing
        pytest.skip(f"torch.onnx.export unavailable: {exc}")
    with torch.no_grad():
        want_out, (want_h, want_c) = m(x)
    out, h, c = fastlstm.load(path)(x.numpy())
    assert close(out, want_out.numpy()) and close(h, want_h.numpy())
    assert close(c, want_c.numpy())


FINDINGS = Path(__file__).resolve().parents[1] / "fuzz" / "findings" / "onnx"


@pytest.mark.parametrize(
    "finding", sorted(FINDINGS.glob("*.onnx")), ids=lambda p: p.name
)
def test_fuzz_findings_are_model_format_errors(finding):
    """Mutated protobuf fields (attribute types, undecodable names, tensor
    sizes) once escaped as ValueError, TypeError or KeyError from onnx's
    helpers; they are a ModelFormatError naming the file."""
    pytest.importorskip("onnx")
    with pytest.raises(fastlstm.ModelFormatError, match="corrupt ONNX model"):
        fastlstm.load(finding)


def test_external_data_in_the_model_folder(tmp_path):
    """A model saved with onnx's own external-data writer (all tensors in
    one file beside it) gives the same outputs as the same model with its
    tensors inside; as bytes, it is refused (no folder to read from)."""
    onnx = pytest.importorskip("onnx")
    src = FIXTURES / "torch_export_lstm"
    model = onnx.load(src / "model.onnx")
    onnx.save_model(
        model,
        tmp_path / "model.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (tmp_path / "weights.bin").stat().st_size > 0
    x = np.load(src / "ref.npz")["x"]
    inside = fastlstm.load(src / "model.onnx")
    outside = fastlstm.load(tmp_path / "model.onnx")
    for a, b in zip(
        inside.run(None, {inside.input_names[0]: x}),
        outside.run(None, {outside.input_names[0]: x}),
    ):
        np.testing.assert_array_equal(a, b)
    data = (tmp_path / "model.onnx").read_bytes()
    with pytest.raises(fastlstm.ModelFormatError, match="as bytes may not refer"):
        from_onnx(data)


@pytest.mark.parametrize(
    "case", ["torch_export_lstm", "single_lstm_node_sequence_lens"]
)
def test_get_inputs_and_outputs_as_onnx_runtime_gives_them(case):
    """get_inputs()/get_outputs(): ONNX Runtime's names, shapes (a named
    dimension is None here, its name there) and element types."""
    ort = pytest.importorskip("onnxruntime")
    path = FIXTURES / case / "model.onnx"
    ours = fastlstm.load(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for mine, theirs in (
        (ours.get_inputs(), sess.get_inputs()),
        (ours.get_outputs(), sess.get_outputs()),
    ):
        assert [a.name for a in mine] == [a.name for a in theirs]
        assert [a.type for a in mine] == [a.type for a in theirs]
        for a, b in zip(mine, theirs):
            assert a.shape == [d if isinstance(d, int) else None for d in b.shape]
