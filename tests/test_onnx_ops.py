"""ONNX compute and glue ops around recurrent nodes against onnxruntime:
one node per case, built with onnx.helper, every attribute form an
exporter writes; then whole exported models (nn.LSTM / nn.GRU with heads)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from _helpers import TOL_F32

import fastlstm

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def run_both(nodes, inputs, outputs, inits=(), opset=17):
    """(fastlstm's outputs, onnxruntime's) of a graph over named inputs."""
    infos = [
        helper.make_tensor_value_info(
            n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)
        )
        for n, a in inputs.items()
    ]
    graph = helper.make_graph(
        nodes, "g", infos, [], [numpy_helper.from_array(v, k) for k, v in inits]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # the outputs' types, as onnx infers them
    typed = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    known = {v.name: v for v in typed.value_info}
    model.graph.output.extend(known[n] for n in outputs)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    want = ort.InferenceSession(
        model.SerializeToString(), so, providers=["CPUExecutionProvider"]
    ).run(None, inputs)
    got = fastlstm.from_onnx(model)(*inputs.values())
    got = got if isinstance(got, (list, tuple)) else [got]
    return got, want


def check(nodes, inputs, outputs, inits=(), opset=17):
    got, want = run_both(nodes, inputs, outputs, inits, opset)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype)
        assert np.abs(g.astype(np.float64) - w).max() <= TOL_F32


RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 4)).astype(np.float32)
Y = RNG.normal(size=(2, 3, 4)).astype(np.float32)
B4 = RNG.normal(size=(4,)).astype(np.float32)


@pytest.mark.parametrize(
    "op", ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"]
)
def test_binary_broadcast(op):
    x = np.abs(X) + 0.5 if op == "Pow" else X
    check([helper.make_node(op, ["x", "b"], ["y"])], {"x": x, "b": B4}, ["y"])


@pytest.mark.parametrize(
    "op", ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Erf", "Softplus"]
)
def test_unary(op):
    check([helper.make_node(op, ["x"], ["y"])], {"x": X * 3}, ["y"])


@pytest.mark.parametrize("op", ["Sqrt", "Log", "Reciprocal"])
def test_unary_positive(op):
    check([helper.make_node(op, ["x"], ["y"])], {"x": np.abs(X) + 0.1}, ["y"])


@pytest.mark.parametrize("op", ["Equal", "Greater", "Less", "LessOrEqual"])
def test_comparisons_and_where(op):
    nodes = [
        helper.make_node(op, ["x", "z"], ["c"]),
        helper.make_node("Not", ["c"], ["n"]),
        helper.make_node("Where", ["n", "x", "z"], ["y"]),
    ]
    z = np.where(RNG.random(X.shape) < 0.3, X, Y)
    check(nodes, {"x": X, "z": z}, ["c", "y"])


def test_integer_div_truncates_like_onnxruntime():
    a = np.array([7, -7, 6, -6, 0], np.int64)
    b = np.array([2, 2, -4, 4, 3], np.int64)
    check([helper.make_node("Div", ["a", "b"], ["y"])], {"a": a, "b": b}, ["y"])


@pytest.mark.parametrize("opset", [11, 13])
def test_clip(opset):
    lo, hi = np.array(-0.5, np.float32), np.array(0.7, np.float32)
    check(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
        {"x": X},
        ["y"],
        [("lo", lo), ("hi", hi)],
        opset,
    )


@pytest.mark.parametrize("trans", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm(trans):
    a = RNG.normal(size=(3, 5)).astype(np.float32)
    b = RNG.normal(size=(5, 4)).astype(np.float32)
    a = a.T.copy() if trans[0] else a
    b = b.T.copy() if trans[1] else b
    node = helper.make_node(
        "Gemm",
        ["a", "b", "c"],
        ["y"],
        alpha=0.5,
        beta=2.0,
        transA=trans[0],
        transB=trans[1],
    )
    check([node], {"a": a}, ["y"], [("b", b), ("c", B4)])


def test_matmul_batched_and_vector():
    w = RNG.normal(size=(4, 6)).astype(np.float32)
    v = RNG.normal(size=(6,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("MatMul", ["h", "v"], ["y"]),
    ]
    check(nodes, {"x": X}, ["h", "y"], [("w", w), ("v", v)])


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceSum", "ReduceMin"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions(op, keepdims):
    if op == "ReduceSum":  # axes as an input since opset 13
        node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
        inits = [("axes", np.array([1, -1], np.int64))]
        check([node], {"x": X}, ["y"], inits, 13)
    else:
        node = helper.make_node(op, ["x"], ["y"], axes=[1, -1], keepdims=keepdims)
        check([node], {"x": X}, ["y"], opset=13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset, axis", [(13, -1), (13, 1), (11, 1), (11, 2)])
def test_softmax(op, opset, axis):
    check([helper.make_node(op, ["x"], ["y"], axis=axis)], {"x": X}, ["y"], opset=opset)


def test_flatten_split_tile_range_dropout():
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=2),
        helper.make_node("Split", ["x", "s"], ["a", "b"], axis=2),
        helper.make_node("Split", ["x"], ["c", "d", "e"], axis=1),
        helper.make_node("Tile", ["x", "r"], ["t"]),
        helper.make_node("Range", ["st", "lim", "dl"], ["g"]),
        helper.make_node("Dropout", ["x"], ["o"]),
    ]
    inits = [
        ("s", np.array([1, 3], np.int64)),
        ("r", np.array([1, 2, 1], np.int64)),
        ("st", np.array(1, np.int64)),
        ("lim", np.array(10, np.int64)),
        ("dl", np.array(3, np.int64)),
    ]
    check(nodes, {"x": X}, ["f", "a", "b", "c", "d", "e", "t", "g", "o"], inits, 13)


def test_batch_and_layer_normalization():
    c = X.shape[1]
    stats = [RNG.normal(size=c).astype(np.float32) for _ in range(3)]
    var = (np.abs(RNG.normal(size=c)) + 0.5).astype(np.float32)
    nodes = [
        helper.make_node(
            "BatchNormalization", ["x", "g", "b", "m", "v"], ["bn"], epsilon=1e-3
        ),
        helper.make_node("LayerNormalization", ["x", "s", "o"], ["ln"], axis=-1),
    ]
    inits = [
        ("g", stats[0]),
        ("b", stats[1]),
        ("m", stats[2]),
        ("v", var),
        ("s", B4),
        ("o", -B4),
    ]
    check(nodes, {"x": X}, ["bn", "ln"], inits)


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"pads": [2, 1], "strides": [2]},
        {"dilations": [2], "pads": [1, 2]},
        {"auto_pad": "SAME_UPPER"},
        {"auto_pad": "SAME_LOWER", "strides": [2]},
        {"group": 2},
    ],
    ids=["plain", "pads_strides", "dilated", "same_upper", "same_lower", "groups"],
)
def test_conv1d(attrs):
    x = RNG.normal(size=(2, 4, 11)).astype(np.float32)
    g = attrs.get("group", 1)
    w = RNG.normal(size=(6, 4 // g, 3)).astype(np.float32)
    b = RNG.normal(size=6).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3], **attrs)
    check([node], {"x": x}, ["y"], [("w", w), ("b", b)])


def _export(module, x, **kw):
    torch = pytest.importorskip("torch")
    f = io.BytesIO()
    torch.onnx.export(module, (x,), f, dynamo=False, input_names=["x"], **kw)
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_exported_model_with_heads(kind, dynamic):
    """torch.onnx.export of a recurrent model with a Linear head, a
    LayerNorm, a Softmax and a mean over time: the whole graph runs."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(5, 6, 3, padding=1)
            self.rnn = getattr(torch.nn, kind)(6, 8, batch_first=True)
            self.norm = torch.nn.LayerNorm(8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x):
            h = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
            y, _ = self.rnn(h)
            z = self.head(self.norm(y))
            return torch.softmax(z, -1), z.mean(dim=1)

    net = Net().eval()
    x = torch.randn(2, 7, 5)
    axes = {"x": {0: "B", 1: "T"}} if dynamic else None
    model = _export(net, x, dynamic_axes=axes)
    with torch.no_grad():
        want = [t.numpy() for t in net(x)]
    got = fastlstm.from_onnx(model)(x.numpy())
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= TOL_F32


def test_shape_subgraphs_run_once_per_input_shape(monkeypatch):
    """The Shape -> Gather -> Concat -> Expand chains an export writes for
    zero initial states are evaluated once per input shape and kept (for
    at most SHAPE_CACHE_ENTRIES shapes); outputs built from kept values are
    the caller's own copies."""
    torch = pytest.importorskip("torch")
    from fastlstm.engine import graph as graph_module
    from fastlstm.engine import ops

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    model = fastlstm.from_onnx(
        _export(lstm, torch.randn(2, 5, 3), dynamic_axes={"x": {0: "B", 1: "T"}})
    )
    g = model._graph
    assert {s.layer.spec.op for s in g._plan if s.key in g._shape_keys} >= {
        "Shape",
        "Gather",
        "Concat",
    }
    calls = []
    for layer in g.layers.values():  # count every array op the graph runs
        if isinstance(layer, ops.OpLayer):
            real = layer._fn
            monkeypatch.setattr(
                layer,
                "_fn",
                lambda n, i, b, real=real: calls.append(n.op) or real(n, i, b),
            )
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    first = model(x)
    n_first = len(calls)
    again = model(x)
    assert "Shape" in calls[:n_first] and "Shape" not in calls[n_first:]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for out in again:  # writable, and not the kept value
        out[...] = 7.0
    np.testing.assert_array_equal(model(x)[0], first[0])
    for T in range(1, graph_module.SHAPE_CACHE_ENTRIES + 5):
        y = model(x[:, :1].repeat(T, axis=1))[0]
        assert y.shape == (2, T, 4)
    assert len(g._shape_cache) == graph_module.SHAPE_CACHE_ENTRIES
