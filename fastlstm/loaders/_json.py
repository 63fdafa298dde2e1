"""JSON from files, parsed with limits: a byte cap, a nesting depth and a
count of arrays and objects, checked on the text before parsing (at C speed,
without recursion), so that json.loads builds nothing for a refused file and
the readers that walk the result recursively stay far from the
interpreter's limit."""

from __future__ import annotations

import json
from typing import Any

from fastlstm.errors import ModelFormatError
from fastlstm.loaders._jsonscan import json_structure

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "parse_json"]

# A Keras config takes about 1-2 KB per layer; 16 MiB is thousands of layers
# and bounds what json.loads may build (Python objects take up to ~20x the
# text).
MAX_JSON_BYTES = 16 << 20
# Keras configs nest about 6 levels per wrapped or nested model.
MAX_JSON_DEPTH = 100
# Arrays and objects: a Keras config takes about 50 per layer, so 2,000,000
# is far above 20,000 layers; json.loads builds them at about 2 per us.
MAX_JSON_CONTAINERS = 2_000_000


def parse_json(
    text: str | bytes, where: str, what: str, max_bytes: int = MAX_JSON_BYTES
) -> Any:
    """The value of ``text``, or ModelFormatError naming ``where`` and
    ``what`` (corrupt, too large, nested too deeply, too many containers)."""
    if len(text) > max_bytes:
        raise ModelFormatError(
            f"{where}: {what} has {len(text)} bytes, above the {max_bytes}-byte limit"
        )
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth, containers = json_structure(raw)
    if depth > MAX_JSON_DEPTH:
        raise ModelFormatError(
            f"{where}: {what} nests more than {MAX_JSON_DEPTH} levels deep"
        )
    if containers > MAX_JSON_CONTAINERS:
        raise ModelFormatError(
            f"{where}: {what} holds {containers} arrays and objects, above the "
            f"limit of {MAX_JSON_CONTAINERS}"
        )
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise ModelFormatError(f"{where}: {what} nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError included
        raise ModelFormatError(f"{where}: {what} is not valid JSON: {exc}") from None
    return value


def check_depth(value: Any, where: str, what: str) -> None:
    """Refuses containers nested deeper than MAX_JSON_DEPTH (iteratively)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ModelFormatError(
                f"{where}: {what} nests more than {MAX_JSON_DEPTH} levels deep"
            )
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
