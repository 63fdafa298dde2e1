"""Keras model configs (Keras 1, 2, tf.keras, Keras 3) -> ModelSpec graph.

Handles both envelopes (``{"class_name", "config"}`` with or without Keras
3's ``module``), Sequential configs as a list (Keras <= 2.2.2) or a dict, and
functional ``inbound_nodes`` in the Keras 1/2 list form
(``[[["layer", node, tensor, kwargs], ...], ...]``) and the Keras 3 form
(``[{"args": [...], "kwargs": {...}}]``). Weights are attached later by the
file loaders.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from fastlstm.errors import ConfigError, ModelFormatError
from fastlstm.loaders._json import MAX_JSON_BYTES, check_depth, parse_json
from fastlstm.loaders.keras_layers import KerasLayer
from fastlstm.model_spec import ModelSpec, NodeSpec, TensorRef

INPUT_CLASSES = ("InputLayer",)
# Far above real models (the largest Keras applications have under 1,000),
# and a bound on the work a config can ask for.
MAX_LAYERS = 20_000


def load_config(config: Any, what: str) -> dict:
    """The architecture a caller passed as ``config=``: a dict, JSON text
    (str or bytes), or the path of a JSON file. Only this argument may name
    a file; text found inside a model file goes to ``config_from_text``."""
    if isinstance(config, os.PathLike):
        config = os.fspath(config)
    if isinstance(config, bytes):
        try:
            config = config.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{what}: config= bytes are not UTF-8: {exc}") from None
    if isinstance(config, str) and not config.lstrip().startswith("{"):
        config = _read_config_file(config, what)
    if isinstance(config, str):
        return config_from_text(config, what, "the config= JSON")
    if not isinstance(config, dict):
        raise ConfigError(
            f"{what}: config= must be a dict, JSON text or a JSON file path, not "
            f"{type(config).__name__}"
        )
    check_depth(config, what, "the config= dict")
    return config


def config_from_text(text: str | bytes, where: str, what: str) -> dict:
    """A model config parsed from JSON text (never opened as a path)."""
    config = parse_json(text, where, what)
    if not isinstance(config, dict):
        raise ModelFormatError(f"{where}: {what} is not a JSON object (model config)")
    return config


def _read_config_file(path: str, what: str) -> str:
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError(f"{what}: config file {path!r} is not a regular file")
            data = fh.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read config file: {exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: config file {path!r} is not UTF-8") from exc


def parse_model_config(
    config: dict, *, keras_version: str, source: str, source_format: str
) -> ModelSpec:
    try:
        class_name = config["class_name"]
        inner = config["config"]
    except (KeyError, TypeError) as exc:
        raise ModelFormatError(
            f"{source}: model config has no class_name/config envelope"
        ) from exc
    entries = inner.get("layers") if isinstance(inner, dict) else inner
    if isinstance(entries, list) and len(entries) > MAX_LAYERS:
        raise ModelFormatError(
            f"{source}: the model config lists {len(entries)} layers, above the "
            f"limit of {MAX_LAYERS}"
        )
    try:
        if class_name == "Sequential":
            spec = _sequential(inner)
        elif class_name in ("Model", "Functional"):
            spec = _functional(inner)
        elif isinstance(inner, dict) and "layers" not in inner:
            raise ModelFormatError(
                f"{source}: a subclassed Keras model (class {class_name!r}): its "
                "layers and their wiring live in the Python code of its call(), "
                "which the file does not record and fastlstm would never run. "
                "Rebuild it as a Functional or Sequential model (the same layers "
                "called on keras.Input), copy the weights with set_weights, and "
                "save that; or export it to ONNX"
            )
        else:
            raise ModelFormatError(
                f"{source}: top-level class {class_name!r} is not a Keras model "
                "(expected Sequential, Functional or Model)"
            )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        if isinstance(exc, ModelFormatError):
            raise
        raise ModelFormatError(f"{source}: malformed model config ({exc!r})") from exc
    return ModelSpec(
        name=spec["name"],
        layers=tuple(spec["layers"]),
        nodes=tuple(spec["nodes"]),
        inputs=tuple(spec["inputs"]),
        outputs=tuple(spec["outputs"]),
        input_shapes=tuple(spec["input_shapes"]),
        keras_version=keras_version,
        source_format=source_format,
        source=source,
        implicit_masks=spec.get("implicit_masks", True),
        output_structure=spec.get("output_structure"),
    )


def _layer_spec(entry: dict) -> KerasLayer:
    cfg = dict(entry.get("config") or {})
    name = cfg.get("name") or entry.get("name")
    if not isinstance(name, str):
        raise ModelFormatError(f"layer entry without a name: {entry!r:.200}")
    return KerasLayer(name=name, class_name=str(entry["class_name"]), config=cfg)


def input_shape_of(cfg: dict) -> tuple | None:
    """Declared batch shape of an InputLayer or a first Sequential layer."""
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return tuple(cfg[key])
    if cfg.get("input_shape") is not None:
        return (None, *cfg["input_shape"])
    if cfg.get("input_dim") is not None:  # Keras 1 recurrent/dense layers
        length = cfg.get("input_length")
        return (
            (None, length, cfg["input_dim"])
            if "input_length" in cfg
            else (None, cfg["input_dim"])
        )
    return None


def _sequential(inner: Any) -> dict:
    if isinstance(inner, list):  # Keras 1 and Keras 2.0 - 2.2.2
        entries, name, build_shape = inner, "sequential", None
    else:
        entries = inner["layers"]
        name = inner.get("name", "sequential")
        build_shape = inner.get("build_input_shape")
    layers = [_layer_spec(e) for e in entries]
    if not layers:
        raise ModelFormatError("the Sequential model has no layers")
    if layers[0].class_name in INPUT_CLASSES:
        inp = layers[0]
        shape = input_shape_of(inp.config)
        body = layers[1:]
    else:
        shape = input_shape_of(layers[0].config) or (
            tuple(build_shape) if build_shape else None
        )
        inp = KerasLayer(
            name=_unique("input", layers),
            class_name="InputLayer",
            config={"batch_shape": list(shape) if shape else None},
        )
        body = layers
    nodes = [NodeSpec(layer=inp.name, index=0, inputs=())]
    prev = TensorRef(inp.name)
    for layer in body:
        nodes.append(NodeSpec(layer=layer.name, index=0, inputs=(prev,)))
        prev = TensorRef(layer.name)
    return {
        "name": name,
        "layers": [inp, *body],
        "nodes": nodes,
        "inputs": [TensorRef(inp.name)],
        "outputs": [prev],
        "input_shapes": [shape],
    }


def _unique(base: str, layers: list[KerasLayer]) -> str:
    names = {x.name for x in layers}
    name, k = base, 0
    while name in names:
        k += 1
        name = f"{base}_{k}"
    return name


def _refs(value: Any) -> list[TensorRef]:
    """TensorRefs from Keras 1/2 ``[name, node, tensor(, kwargs)]`` entries,
    ``[[...], [...]]`` lists, or Keras 3 ``__keras_tensor__`` dicts."""
    if value is None:
        return []
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            hist = value["config"]["keras_history"]
            return [TensorRef(str(hist[0]), int(hist[1]), int(hist[2]))]
        return []
    if isinstance(value, (list, tuple)):
        if (
            len(value) >= 3
            and isinstance(value[0], str)
            and isinstance(value[1], int)
            and isinstance(value[2], int)
        ):
            return [TensorRef(value[0], value[1], value[2])]
        out: list[TensorRef] = []
        for item in value:
            out.extend(_refs(item))
        return out
    return []


def _constant(value: Any) -> Any:
    """A non-tensor positional argument, as plain data: the 0 of
    NotEqual(ids, 0), or the index of GetItem (h[:, -1]: a list of
    ``__slice__`` dicts and ints)."""
    if isinstance(value, (int, float, list, dict)) and not isinstance(value, bool):
        return value
    return None


def _parse_node(layer: str, index: int, node: Any) -> NodeSpec:
    mask = None
    initial: list[TensorRef] = []
    constant = None
    if isinstance(node, dict):  # Keras 3
        args = node.get("args", [])
        kwargs = node.get("kwargs", {}) or {}
        inputs = []
        for arg in args:  # RNN(x, [h, c]) states follow x as extra inputs
            refs = _refs(arg)
            inputs.extend(refs)
            if not refs and constant is None:
                constant = _constant(arg)
    else:  # Keras 1/2: a list of [name, node, tensor(, kwargs)] entries
        kwargs = {}
        inputs = []
        # tf.keras' TF op layers (x[...]) save their one entry unwrapped
        entries = [node] if node and isinstance(node[0], str) else node
        for entry in entries:
            inputs.extend(_refs(entry[:3]))
            if len(entry) > 3 and isinstance(entry[3], dict):
                kwargs.update(entry[3])
    if constant is None and "slice_spec" in kwargs:  # tf.keras x[...]
        constant = _constant(kwargs["slice_spec"])
    options = {
        k: v
        for k, v in kwargs.items()
        if isinstance(v, (bool, int, float, str)) and k not in ("mask", "training")
    }
    # tf.keras passes MultiHeadAttention's value and key by keyword: they
    # follow the query as inputs
    wired = ("mask", "initial_state", "value", "key")
    for name in ("value", "key"):
        inputs.extend(_refs(kwargs.get(name)))
    # other tensors passed by keyword (an attention_mask) are not wired:
    # named, so the layer can refuse instead of ignoring them
    options.update({k: True for k, v in kwargs.items() if k not in wired and _refs(v)})
    mrefs = _refs(kwargs.get("mask"))
    if mrefs:
        mask = mrefs[0]
    initial.extend(_refs(kwargs.get("initial_state")))
    return NodeSpec(
        layer=layer,
        index=index,
        inputs=tuple(inputs),
        mask=mask,
        initial_state=tuple(initial),
        constant=constant,
        options=options,
    )


def _io_refs(value: Any) -> list[TensorRef]:
    if isinstance(value, dict):  # Keras 3 dict-structured inputs
        value = list(value.values())
    return _refs(value)


def _functional(inner: dict) -> dict:
    layers = []
    nodes_by_layer: dict[str, list[NodeSpec]] = {}
    for entry in inner["layers"]:
        spec = _layer_spec(entry)
        layers.append(spec)
        nodes_by_layer[spec.name] = [
            _parse_node(spec.name, k, node)
            for k, node in enumerate(entry.get("inbound_nodes") or [])
        ]
    inputs = _io_refs(inner["input_layers"])
    outputs = _io_refs(inner["output_layers"])
    structure = _structure(inner["output_layers"], iter(range(len(outputs))))
    keras3_nodes = any(
        isinstance(n, dict)
        for e in inner["layers"]
        for n in (e.get("inbound_nodes") or [])
    )
    by_name = {x.name: x for x in layers}
    for ref in inputs:
        if ref.layer not in by_name:
            raise ModelFormatError(f"model input {ref.layer!r} is not a layer")
        nodes_by_layer[ref.layer] = [NodeSpec(layer=ref.layer, index=0, inputs=())]
    nodes = _topological(nodes_by_layer, outputs)
    shapes = [input_shape_of(by_name[r.layer].config) for r in inputs]
    return {
        "name": inner.get("name", "model"),
        "layers": layers,
        "nodes": nodes,
        "inputs": inputs,
        "outputs": outputs,
        "input_shapes": shapes,
        "implicit_masks": not keras3_nodes,
        "output_structure": structure,
    }


def _structure(value: Any, counter: Any) -> Any:
    """The nesting of output_layers, with each tensor replaced by its index."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return next(counter)
    if (
        isinstance(value, (list, tuple))
        and len(value) >= 3
        and isinstance(value[0], str)
    ):
        return next(counter)
    if isinstance(value, dict):
        return [_structure(v, counter) for v in value.values()]
    return [_structure(v, counter) for v in value]


def _topological(
    nodes_by_layer: dict[str, list[NodeSpec]], outputs: list[TensorRef]
) -> list[NodeSpec]:
    """The nodes the outputs depend on, each after its inputs. Iterative:
    a graph's depth comes from the file (a chain of thousands of layers)."""
    order: list[NodeSpec] = []
    state: dict[tuple[str, int], int] = {}  # 1 = visiting, 2 = done
    for out in outputs:
        # (layer, call index, the node's dependencies not yet visited)
        stack: list[tuple[str, int, list[TensorRef] | None]] = [
            (out.layer, out.node, None)
        ]
        while stack:
            layer, index, deps = stack.pop()
            key = (layer, index)
            if deps is None:  # first visit
                if state.get(key) == 2:
                    continue
                if state.get(key) == 1:
                    raise ModelFormatError(
                        f"the model graph has a cycle at layer {layer!r}"
                    )
                node = _node(nodes_by_layer, layer, index)
                state[key] = 1
                deps = list(node.inputs) + list(node.initial_state)
                if node.mask is not None:
                    deps.append(node.mask)
                deps.reverse()
            if deps:
                ref = deps.pop()
                stack.append((layer, index, deps))
                stack.append((ref.layer, ref.node, None))
                continue
            state[key] = 2
            order.append(nodes_by_layer[layer][index])
    return order


def _node(
    nodes_by_layer: dict[str, list[NodeSpec]], layer: str, index: int
) -> NodeSpec:
    nodes = nodes_by_layer.get(layer)
    if nodes is None:
        raise ModelFormatError(f"the model graph refers to unknown layer {layer!r}")
    if not 0 <= index < len(nodes):
        raise ModelFormatError(f"layer {layer!r} has no call number {index}")
    return nodes[index]
