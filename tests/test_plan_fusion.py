"""Fused steps (engine/plan.py): the exporters' Transpose -> recurrent node
-> Squeeze -> Transpose chain and a MatMul + Add head run as single steps,
with the same values bit for bit as the nodes one by one, and only where
nothing else reads the values they skip."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import TOL_F32

import fastlstm
from fastlstm.engine.layers import RunContext

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(7)
I, H, N = 5, 6, 3


def _model(kind="LSTM", outputs=("out",), extra=(), direction="forward"):
    """x (B, T, I) -> Transpose -> kind -> Squeeze(1) -> Transpose -> MatMul
    -> Add, as torch.onnx.export writes a batch_first layer and a Linear."""
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    D = 2 if direction == "bidirectional" else 1
    inits = {
        "W": RNG.normal(size=(D, G * H, I)) * 0.3,
        "R": RNG.normal(size=(D, G * H, H)) * 0.3,
        "B": RNG.normal(size=(D, 2 * G * H)) * 0.3,
        "axes": np.array([1], np.int64),
        "M": RNG.normal(size=(H, N)),
        "bias": RNG.normal(size=(N,)),
    }
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(
            kind,
            ["xt", "W", "R", "B"],
            ["Y", "Y_h"],
            hidden_size=H,
            direction=direction,
        ),
        helper.make_node("Squeeze", ["Y", "axes"], ["ys"]),
        helper.make_node("Transpose", ["ys"], ["yb"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["yb", "M"], ["mm"]),
        helper.make_node("Add", ["bias", "mm"], ["out"]),
        *extra,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", I])],
        [],
        [
            numpy_helper.from_array(
                v if v.dtype == np.int64 else v.astype(np.float32), k
            )
            for k, v in inits.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    typed = onnx.shape_inference.infer_shapes(model).graph
    known = {v.name: v for v in (*typed.value_info, *typed.output)}
    for name in outputs:
        info = known.get(name) or helper.make_tensor_value_info(
            name, TensorProto.FLOAT, None
        )
        model.graph.output.append(info)
    return model


def _run(model, x):
    """(fastlstm's outputs, the same graph node by node, onnxruntime's,
    the steps fastlstm runs per call)."""
    m = fastlstm.from_onnx(model)
    got = [np.asarray(a) for a in m(x)]
    arrays = [x]
    ctx = RunContext({}, budget=None)
    whole = m._graph.run(arrays, ctx, record={})  # every node, none fused
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    want = ort.InferenceSession(model.SerializeToString(), so).run(None, {"x": x})
    return got, whole, want, len(m._graph._plan_cached)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_exporter_chain_runs_as_two_steps(kind):
    x = RNG.normal(size=(3, 9, I)).astype(np.float32)
    got, whole, want, steps = _run(_model(kind, outputs=("out", "Y_h")), x)
    assert steps == 3  # input, recurrent + transposes, dense head
    for g, w, o in zip(got, whole, want):
        np.testing.assert_array_equal(g, w)  # bit for bit
        assert g.shape == o.shape and np.abs(g - o).max() <= TOL_F32


@pytest.mark.parametrize(
    "outputs, extra",
    [
        (("out", "Y"), ()),  # Y itself is an output
        (("out", "ys"), ()),  # so is the squeezed sequence
        (("out", "mm"), ()),  # and the product before the bias
        (("out", "r"), (helper.make_node("ReduceSum", ["xt"], ["r"]),)),
    ],
)
def test_no_fusion_where_a_skipped_value_is_read(outputs, extra):
    x = RNG.normal(size=(2, 7, I)).astype(np.float32)
    got, whole, want, steps = _run(_model(outputs=outputs, extra=extra), x)
    assert steps > 3
    for g, w, o in zip(got, whole, want):
        np.testing.assert_array_equal(g, w)
        assert g.shape == o.shape and np.abs(g - o).max() <= TOL_F32


def test_two_directions_are_not_fused_and_stay_right():
    """A bidirectional node's Y has two directions: Squeeze(1) would not
    apply, so the chain is not fused (onnxruntime refuses the squeeze)."""
    model = _model(direction="bidirectional", outputs=("Y", "Y_h"))
    del model.graph.node[2:]  # keep Transpose -> LSTM
    x = RNG.normal(size=(2, 5, I)).astype(np.float32)
    got, whole, want, steps = _run(model, x)
    assert steps == 3  # input, transpose, recurrent
    for g, w, o in zip(got, whole, want):
        np.testing.assert_array_equal(g, w)
        assert g.shape == o.shape and np.abs(g - o).max() <= TOL_F32
