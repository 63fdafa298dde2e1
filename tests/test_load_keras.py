"""fastlstm.load against outputs the real Keras produced for the same files.

Fixtures: tests/fixtures/keras/<case>/ (made by tests/fixtures/make_keras_fixtures.py
with tf_keras 2.21 and Keras 3, see tests/fixtures/keras/README.md): the
model file(s), ref.npz with the inputs and Keras' predict outputs, case.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOL_F32

import fastlstm

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
CASES = sorted(p.parent.name for p in FIXTURES.glob("*/case.json"))


def case_info(name: str) -> tuple[dict, dict]:
    folder = FIXTURES / name
    meta = json.loads((folder / "case.json").read_text())
    return meta, dict(np.load(folder / "ref.npz"))


def load_case(name: str) -> fastlstm.Model:
    meta, _ = case_info(name)
    folder = FIXTURES / name
    files = meta["files"]
    if "model" in files:
        return fastlstm.load(folder / files["model"])
    return fastlstm.load(
        folder / files["weights"], config=folder / files["architecture"]
    )


def inputs_of(meta: dict, ref: dict, prefix: str = "x") -> list:
    if prefix in ref:
        return [ref[prefix]]
    return [ref[i["array"]] for i in meta["inputs"]]


def expected_of(meta: dict, ref: dict) -> list:
    if "y" in ref:
        return [ref["y"]]
    return [ref[o["array"]] for o in meta["outputs"]]


def compare(got, want: list, name: str) -> float:
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(want), f"{name}: {len(got)} outputs, Keras gave {len(want)}"
    worst = 0.0
    for k, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g)  # nested outputs ([h0, c0]) stack like Keras' lists
        assert g.shape == w.shape, f"{name} output {k}: {g.shape} vs Keras {w.shape}"
        worst = max(worst, float(np.abs(g - w).max()))
    assert worst <= TOL_F32, f"{name}: max |fastlstm - Keras| = {worst:.3g}"
    return worst


@pytest.mark.parametrize("name", [c for c in CASES if not c.endswith("stateful")])
def test_fixture_matches_keras(name):
    meta, ref = case_info(name)
    model = load_case(name)
    xs = inputs_of(meta, ref)
    compare(model.predict(xs if len(xs) > 1 else xs[0]), expected_of(meta, ref), name)


@pytest.mark.parametrize("name", [c for c in CASES if c.endswith("stateful")])
def test_stateful_fixture_carries_state_between_calls(name):
    meta, ref = case_info(name)
    model = load_case(name)
    bs = meta.get("predict_batch_size")
    y1 = model.predict(ref["x_call1"], batch_size=bs)
    y2 = model.predict(ref["x_call2"], batch_size=bs)
    compare(y1, [ref["y_call1"]], name + " call 1")
    compare(y2, [ref["y_call2"]], name + " call 2")
    model.reset_states()
    again = model.predict(ref["x_call1"], batch_size=bs)
    compare(again, [ref["y_call1"]], name + " after reset_states")
