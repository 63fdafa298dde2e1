"""docs/supported.md names every Keras class and ONNX op fastlstm runs, and
nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

from fastlstm.loaders.keras_layers import OP_CLASSES, SUPPORTED_CLASSES
from fastlstm.model_spec import ARRAY_OPS

DOC = (Path(__file__).parent.parent / "docs" / "supported.md").read_text()


def _section(title: str) -> str:
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


def test_every_keras_class_is_listed():
    named = set(re.findall(r"`(\w+)`", _section("Keras")))
    missing = (set(SUPPORTED_CLASSES) | set(OP_CLASSES)) - named
    assert not missing, sorted(missing)


def test_every_onnx_op_is_listed_and_no_other():
    listed = set(re.findall(r"`(\w+)`", _section("ONNX").split("Other ops")[1]))
    listed = {op for op in listed if op[0].isupper()}
    assert listed == set(ARRAY_OPS), (
        sorted(listed - set(ARRAY_OPS)),
        sorted(set(ARRAY_OPS) - listed),
    )
