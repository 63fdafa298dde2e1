"""Keras layers (class name, config, ``get_weights()`` arrays) -> canonical
layer specs.

Every Keras quirk is resolved here: Keras 1's twelve LSTM (nine GRU) arrays
and CuDNNLSTM's / CuDNNGRU's layout become canonical weights, a GRU's
reset_after its bias layout, hard_sigmoid gets its
definition by Keras version, a Bidirectional's masked-step rule by version,
and Masking's NaN handling by version. The engine never sees Keras names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from fastlstm.activations import NUMPY_ACTIVATIONS, Activation, parse_activation
from fastlstm.errors import (
    ConfigError,
    FastLSTMError,
    ModelFormatError,
    UnsupportedLayerError,
)
from fastlstm.loaders.keras_sequence_layers import (
    SEQUENCE_CONVERTERS,
    SEQUENCE_WEIGHTED,
    conv1d,
)
from fastlstm.model_spec import (
    ActivationSpec,
    BidirectionalSpec,
    DenseSpec,
    EmbeddingSpec,
    IdentitySpec,
    InputSpec,
    LayerSpec,
    MaskingSpec,
    MaskOpSpec,
    MergeSpec,
    ModelSpec,
    RecurrentSpec,
    RepeatSpec,
    ReshapeSpec,
)
from fastlstm.spec import MAX_DIM, GRUSpec, LSTMSpec, SimpleRNNSpec

__all__ = [
    "KerasLayer",
    "KerasFlavor",
    "canonical_model",
    "WEIGHTED_CLASSES",
    "OP_CLASSES",
    "SUPPORTED_CLASSES",
]


@dataclasses.dataclass(frozen=True)
class KerasLayer:
    """A layer as a Keras file describes it: class name, config (with the
    reader's version-specific keys normalized) and weights in Keras'
    ``get_weights()`` order."""

    name: str
    class_name: str
    config: dict
    weights: tuple = ()


@dataclasses.dataclass(frozen=True)
class KerasFlavor:
    """Semantics that depend on the Keras version that wrote the file."""

    version: str
    major: int
    # tf.keras (TF 2.x) and Keras 3 set zero_output_for_mask = return_sequences
    # on both halves of a Bidirectional; standalone Keras 1/2.0-2.3 did not.
    bidirectional_zeroes_masked: bool
    # tf.keras Masking outputs x * mask (NaN stays NaN); Keras 3 where(mask, x, 0)
    masking_keeps_nan: bool

    @property
    def hard_sigmoid(self) -> str:
        return "hard_sigmoid_k3" if self.major >= 3 else "hard_sigmoid_k2"

    @classmethod
    def from_version(cls, version: str | None, source: str = "") -> KerasFlavor:
        v = (version or "1").strip()
        m = re.match(r"^(\d+)(?:\.(\d+))?", v)
        if not m or int(m.group(1)) not in (1, 2, 3):
            raise ModelFormatError(
                f"{source}: unknown keras_version {version!r}; fastlstm reads files "
                "written by Keras 1.x, 2.x (incl. tf.keras) and 3.x"
            )
        major, minor = int(m.group(1)), int(m.group(2) or 0)
        tf_keras = major == 3 or "tf" in v or (major == 2 and minor >= 4)
        return cls(
            version=v,
            major=major,
            bidirectional_zeroes_masked=tf_keras,
            masking_keeps_nan=major < 3,
        )


# --- activations ----------------------------------------------------------------


def activation_name(value: Any, where: str) -> str:
    """The name of a Keras activation given as a string, None (linear) or a
    serialized dict (``{"class_name": ..., "config": {"name": ...}}``)."""
    if isinstance(value, dict):
        config = value.get("config")
        inner = config.get("name") if isinstance(config, dict) else None
        value = inner if inner is not None else value.get("class_name")
    if value is None:
        return "linear"
    if not isinstance(value, str):
        raise UnsupportedLayerError(
            f"{where}: activation {str(value)[:100]!r} is not a name or a "
            "serialized activation"
        )
    return value


def dense_activation(value: Any, flavor: KerasFlavor, where: str) -> str:
    """The canonical name of a Keras activation of a non-recurrent layer."""
    name = activation_name(value, where)
    key = name.lower()
    if key == "hard_sigmoid":
        return flavor.hard_sigmoid
    if key in NUMPY_ACTIVATIONS and not key.startswith("hard_sigmoid_"):
        return key
    supported = [k for k in NUMPY_ACTIVATIONS if not k.startswith("hard_sigmoid_")]
    raise UnsupportedLayerError(
        f"{where}: activation {name!r} is not supported; supported: "
        + ", ".join(sorted([*supported, "hard_sigmoid"]))
    )


def cell_activation(value: Any, flavor: KerasFlavor, where: str) -> Activation:
    """The C core's activation for a Keras recurrent activation."""
    name = activation_name(value, where)
    if name.lower() == "hard_sigmoid":
        name = flavor.hard_sigmoid
    try:
        return parse_activation(name or "linear", where)
    except ConfigError as exc:
        raise UnsupportedLayerError(str(exc)) from None


# --- recurrent layers -------------------------------------------------------------


def _kernels_and_bias(
    ws: list, what: str, keras1: int | None, where: str
) -> tuple[Any, Any, Any]:
    """(kernel, recurrent_kernel, bias or None) of a recurrent layer's 2 or
    3 arrays (Keras 1's per-gate arrays are handled by the caller)."""
    if len(ws) not in (2, 3):
        old = f" or Keras 1's {keras1}" if keras1 else ""
        raise ModelFormatError(
            f"{where}: {what} needs 2 or 3 weight arrays (kernel, recurrent_kernel, "
            f"bias){old}, found {len(ws)}"
        )
    return ws[0], ws[1], ws[2] if len(ws) == 3 else None


def lstm_weights(cfg: dict, weights: list, class_name: str, where: str) -> dict:
    """Canonical kernel / recurrent_kernel / bias from a Keras layer's arrays."""
    units = int(cfg.get("units", cfg.get("output_dim", 0)) or 0)
    ws = [np.asarray(w, np.float32) for w in weights]
    if len(ws) == 12:
        # Keras 1: [W_i, U_i, b_i, W_c, U_c, b_c, W_f, U_f, b_f, W_o, U_o, b_o]
        return {
            "kernel": np.concatenate([ws[0], ws[6], ws[3], ws[9]], axis=1),
            "recurrent_kernel": np.concatenate([ws[1], ws[7], ws[4], ws[10]], axis=1),
            "bias": np.concatenate([ws[2], ws[8], ws[5], ws[11]]),
        }
    kernel, rec, bias = _kernels_and_bias(ws, "an LSTM", 12, where)
    H = units or (kernel.shape[1] // 4 if kernel.ndim == 2 else 0)
    cudnn = class_name == "CuDNNLSTM" or (bias is not None and bias.shape == (8 * H,))
    if cudnn and kernel.ndim == 2 and rec.ndim == 2:
        kernel, rec = _cudnn_blocks(kernel, rec, 4, H)
        if bias is not None:
            bias = bias[: 4 * H] + bias[4 * H :]
    out = {"kernel": kernel, "recurrent_kernel": rec}
    if bias is not None:
        out["bias"] = bias
    return out


def _cudnn_blocks(
    kernel: np.ndarray, rec: np.ndarray, G: int, H: int
) -> tuple[np.ndarray, np.ndarray]:
    """Kernels of a CuDNN layer in the canonical layout: cuDNN reads each
    stored (I, H) gate block as a row-major (H, I) matrix, and each (H, H)
    recurrent block transposed."""
    I = kernel.shape[0]
    kernel = np.concatenate([k.reshape(H, I).T for k in np.split(kernel, G, 1)], 1)
    rec = np.concatenate([k.T for k in np.split(rec, G, 1)], 1)
    return kernel, rec


def gru_weights(cfg: dict, weights: list, class_name: str, where: str) -> dict:
    """Canonical GRU arrays (kernel, recurrent_kernel, bias, recurrent_bias)
    and reset_after from a Keras GRU's arrays: Keras 1's nine ([W_z, U_z,
    b_z, W_r, U_r, b_r, W_h, U_h, b_h]); kernel, recurrent_kernel and a bias
    of (3H,) (reset_after=False) or (2, 3H) (input row, recurrent row);
    CuDNNGRU's cuDNN blocks and (6H,) bias."""
    ws = [np.asarray(w, np.float32) for w in weights]
    reset_after = bool(cfg.get("reset_after", False))
    if len(ws) == 9:
        return {
            "kernel": np.concatenate(ws[0::3], axis=1),
            "recurrent_kernel": np.concatenate(ws[1::3], axis=1),
            "bias": np.concatenate(ws[2::3]),
            "reset_after": False,
        }
    kernel, rec, bias = _kernels_and_bias(ws, "a GRU", 9, where)
    rbias = None
    H = rec.shape[0] if rec.ndim == 2 else 0
    if class_name == "CuDNNGRU":
        reset_after = True
        if kernel.ndim == 2 and rec.ndim == 2:
            kernel, rec = _cudnn_blocks(kernel, rec, 3, H)
        if bias is not None and bias.ndim == 1:
            bias = bias.reshape(2, -1)
    if bias is not None and bias.ndim == 2:
        if not reset_after or bias.shape[0] != 2:
            raise ModelFormatError(
                f"{where}: bias of shape {bias.shape} does not fit "
                f"reset_after={reset_after}"
            )
        bias, rbias = bias[0], bias[1]
    elif bias is not None and reset_after:
        raise ModelFormatError(
            f"{where}: reset_after=True needs a (2, 3*units) bias, got {bias.shape}"
        )
    return {
        "kernel": kernel,
        "recurrent_kernel": rec,
        "bias": bias,
        "recurrent_bias": rbias,
        "reset_after": reset_after,
    }


# The Keras cell classes of each kind, and of the layers that hold one.
LSTM_CLASSES = ("LSTM", "CuDNNLSTM", "LSTMCell", "PeepholeLSTMCell")
GRU_CLASSES = ("GRU", "CuDNNGRU", "GRUCell")
SIMPLE_CLASSES = ("SimpleRNN", "SimpleRNNCell")
CELL_CLASSES = ("LSTMCell", "PeepholeLSTMCell", "GRUCell", "SimpleRNNCell")


def _cell_configs(cfg: dict, class_name: str, where: str) -> list[tuple[str, dict]]:
    if class_name != "RNN":
        return [(class_name, cfg)]
    cell = cfg.get("cell")
    if isinstance(cell, list):
        entries = cell
    elif isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells":
        entries = cell["config"]["cells"]
    elif isinstance(cell, dict):
        entries = [cell]
    else:
        raise ModelFormatError(f"{where}: RNN config has no cell")
    out = []
    for e in entries:
        cname = e.get("class_name")
        if cname not in CELL_CLASSES:
            raise UnsupportedLayerError(
                f"{where}: RNN cell class {cname!r} is not supported "
                f"({', '.join(CELL_CLASSES)}, or a list of them)"
            )
        out.append((cname, e.get("config", {})))
    return out


def _cell_weight_count(cell_class: str, cfg: dict, available: int, n_cells: int) -> int:
    """Arrays of one cell of a stack (every kind: kernel, recurrent kernel,
    and a bias unless use_bias is off; peepholes add three)."""
    if n_cells == 1:
        return available
    count = 3 if cfg.get("use_bias", True) else 2
    return count + (3 if cell_class == "PeepholeLSTMCell" else 0)


def _cell(
    cfg: dict,
    class_name: str,
    weights: list,
    flavor: KerasFlavor,
    where: str,
    zero_output: bool,
    go_backwards: bool,
) -> Any:
    """The canonical spec of one cell of any kind."""
    if class_name in LSTM_CLASSES:
        return _lstm_cell(
            cfg, class_name, weights, flavor, where, zero_output, go_backwards
        )
    try:
        if class_name in GRU_CLASSES:
            arrays = gru_weights(cfg, weights, class_name, where)
            acts = _activations(cfg, class_name, flavor, where)
            spec = GRUSpec.create(
                **arrays,
                activation=acts[0],
                recurrent_activation=acts[1],
                zero_output_for_mask=zero_output,
                go_backwards=go_backwards,
            )
        else:
            ws = _kernels_and_bias(list(weights), "a SimpleRNN", None, where)
            spec = SimpleRNNSpec.create(
                *ws,
                activation=_activations(cfg, class_name, flavor, where)[0],
                zero_output_for_mask=zero_output,
                go_backwards=go_backwards,
            )
    except FastLSTMError as exc:
        if isinstance(exc, (ModelFormatError, UnsupportedLayerError)):
            raise
        raise ModelFormatError(f"{where}: {exc}") from None
    _check_units(cfg, spec.units, where)
    return spec


def _activations(
    cfg: dict, class_name: str, flavor: KerasFlavor, where: str
) -> tuple[Activation, Activation]:
    """(activation, recurrent_activation) of a cell; CuDNN layers have
    sigmoid and tanh built in."""
    if class_name.startswith("CuDNN"):
        return Activation.TANH, Activation.SIGMOID
    act = cell_activation(cfg.get("activation", "tanh"), flavor, f"{where} activation")
    ract = cell_activation(
        cfg.get("recurrent_activation", cfg.get("inner_activation", "sigmoid")),
        flavor,
        f"{where} recurrent_activation",
    )
    return act, ract


def _check_units(cfg: dict, units: int, where: str) -> None:
    said = cfg.get("units", cfg.get("output_dim"))
    if said is not None and int(said) != units:
        raise ModelFormatError(
            f"{where}: config says {said} units but the weights hold {units}"
        )


def _lstm_cell(
    cfg: dict,
    class_name: str,
    weights: list,
    flavor: KerasFlavor,
    where: str,
    zero_output: bool,
    go_backwards: bool,
) -> LSTMSpec:
    peepholes = None
    weights = list(weights)
    if class_name == "PeepholeLSTMCell":
        if len(weights) < 3:
            raise ModelFormatError(
                f"{where}: PeepholeLSTMCell needs its 3 peephole weight arrays"
            )
        peepholes = np.stack([np.asarray(w, np.float32) for w in weights[-3:]])
        weights = weights[:-3]
    canonical = lstm_weights(cfg, weights, class_name, where)
    act, ract = _activations(cfg, class_name, flavor, where)
    units = cfg.get("units", cfg.get("output_dim"))
    if (
        units is not None
        and canonical["kernel"].ndim == 2
        and canonical["kernel"].shape[1] != 4 * int(units)
    ):
        raise ModelFormatError(
            f"{where}: config says {units} units but the kernel has shape "
            f"{canonical['kernel'].shape}"
        )
    try:
        return LSTMSpec.create(
            **canonical,
            peepholes=peepholes,
            activation=act,
            recurrent_activation=ract,
            zero_output_for_mask=zero_output,
            go_backwards=go_backwards,
        )
    except FastLSTMError as exc:
        raise ModelFormatError(f"{where}: {exc}") from None


def recurrent(
    layer: KerasLayer,
    flavor: KerasFlavor,
    cfg: dict | None = None,
    zero_output: bool | None = None,
) -> RecurrentSpec:
    """LSTM, GRU and SimpleRNN layers (CuDNN ones too) and RNN over any of
    their cells (stacked or not)."""
    cfg = dict(layer.config if cfg is None else cfg)
    where = f"layer {layer.name!r} ({layer.class_name})"
    cells = _cell_configs(cfg, layer.class_name, where)
    go_backwards = bool(cfg.get("go_backwards", False))
    zero = bool(cfg.get("zero_output_for_mask", False))
    zero = zero if zero_output is None else zero_output
    weights = list(layer.weights)
    specs = []
    offset = 0
    for k, (cell_class, ccfg) in enumerate(cells):
        n = _cell_weight_count(cell_class, ccfg, len(weights) - offset, len(cells))
        specs.append(
            _cell(
                ccfg,
                cell_class,
                weights[offset : offset + n],
                flavor,
                f"{where} cell {k}" if len(cells) > 1 else where,
                zero,
                go_backwards,
            )
        )
        offset += n
    if offset != len(weights):
        raise ModelFormatError(
            f"{where}: {len(weights)} weight arrays, expected {offset}"
        )
    for a, b in zip(specs, specs[1:]):
        if b.input_size != a.output_size:
            raise ModelFormatError(
                f"{where}: stacked cells do not fit ({a.output_size} -> {b.input_size})"
            )
    return RecurrentSpec(
        name=layer.name,
        class_name=layer.class_name,
        cells=tuple(specs),
        return_sequences=bool(cfg.get("return_sequences", False)),
        return_state=bool(cfg.get("return_state", False)),
        go_backwards=go_backwards,
        stateful=bool(cfg.get("stateful", False)),
        time_major=bool(cfg.get("time_major", False)),
    )


def bidirectional(layer: KerasLayer, flavor: KerasFlavor) -> BidirectionalSpec:
    cfg = layer.config
    where = f"layer {layer.name!r} (Bidirectional)"
    inner = cfg.get("layer")
    if not isinstance(inner, dict):
        raise ModelFormatError(f"{where}: config has no wrapped layer")
    fcls, fcfg = inner.get("class_name"), dict(inner.get("config", {}))
    back = cfg.get("backward_layer")
    if isinstance(back, dict):
        bcls, bcfg = back.get("class_name"), dict(back.get("config", {}))
    else:
        bcls = fcls
        bcfg = {**fcfg, "go_backwards": not fcfg.get("go_backwards", False)}
    for c in (fcls, bcls):
        if c not in RECURRENT_CLASSES:
            raise UnsupportedLayerError(
                f"{where}: wraps a {c}; supported: {', '.join(RECURRENT_CLASSES)}"
            )
    merge_mode = cfg.get("merge_mode", "concat")
    if merge_mode not in ("concat", "sum", "mul", "ave", None):
        raise UnsupportedLayerError(f"{where}: merge_mode {merge_mode!r}")
    seq = bool(fcfg.get("return_sequences", False))
    zero = seq if flavor.bidirectional_zeroes_masked else None
    half = len(layer.weights) // 2
    fw = KerasLayer(f"forward_{layer.name}", fcls, fcfg, layer.weights[:half])
    bw = KerasLayer(f"backward_{layer.name}", bcls, bcfg, layer.weights[half:])
    forward = recurrent(fw, flavor, fcfg, zero)
    backward = recurrent(bw, flavor, bcfg, zero)
    if forward.go_backwards == backward.go_backwards:
        raise ModelFormatError(f"{where}: both halves run in the same direction")
    return BidirectionalSpec(
        name=layer.name,
        class_name=layer.class_name,
        forward=forward,
        backward=backward,
        merge_mode=merge_mode,
    )


# --- other layers ------------------------------------------------------------------


def dense(layer: KerasLayer, flavor: KerasFlavor, cfg: dict | None = None) -> DenseSpec:
    cfg = layer.config if cfg is None else cfg
    name = layer.name
    use_bias = cfg.get("use_bias", cfg.get("bias", True))
    expected = 2 if use_bias else 1
    if len(layer.weights) != expected:
        raise ModelFormatError(
            f"layer {name!r} ({layer.class_name}): expected {expected} weight "
            f"arrays (kernel{', bias' if use_bias else ''}), found {len(layer.weights)}"
        )
    kernel = np.ascontiguousarray(layer.weights[0], np.float32)
    bias = np.ascontiguousarray(layer.weights[1], np.float32) if use_bias else None
    if kernel.ndim != 2 or (bias is not None and bias.shape != (kernel.shape[1],)):
        raise ModelFormatError(
            f"layer {name!r}: kernel {kernel.shape} and bias "
            f"{None if bias is None else bias.shape} do not fit"
        )
    units = cfg.get("units", cfg.get("output_dim"))
    if units is not None and int(units) != kernel.shape[1]:
        raise ModelFormatError(
            f"layer {name!r}: config says {units} units but the kernel is "
            f"{kernel.shape}"
        )
    _check_finite(name, [kernel] + ([bias] if bias is not None else []))
    return DenseSpec(
        name=name,
        class_name=layer.class_name,
        kernel=kernel,
        bias=bias,
        activation=dense_activation(cfg.get("activation"), flavor, f"layer {name!r}"),
    )


def time_distributed(layer: KerasLayer, flavor: KerasFlavor) -> DenseSpec:
    """TimeDistributed(Dense): a Dense on the last axis, mask passed on."""
    inner = layer.config.get("layer") or {}
    if inner.get("class_name") != "Dense":
        raise UnsupportedLayerError(
            f"layer {layer.name!r}: TimeDistributed({inner.get('class_name')}) "
            "is not supported; TimeDistributed(Dense) is"
        )
    return dense(layer, flavor, inner.get("config", {}))


def embedding(layer: KerasLayer) -> EmbeddingSpec:
    w = layer.weights
    if len(w) != 1 or np.ndim(w[0]) != 2:
        raise ModelFormatError(
            f"layer {layer.name!r} (Embedding): expected one "
            f"(input_dim, output_dim) array, found {[np.shape(a) for a in w]}"
        )
    table = np.ascontiguousarray(w[0], np.float32)
    _check_finite(layer.name, [table])
    return EmbeddingSpec(
        name=layer.name,
        class_name=layer.class_name,
        table=table,
        mask_zero=bool(layer.config.get("mask_zero", False)),
    )


def activation_layer(layer: KerasLayer, flavor: KerasFlavor) -> ActivationSpec:
    cfg = layer.config
    if layer.class_name == "Softmax":
        axis = cfg.get("axis", -1)
        if isinstance(axis, list) and len(axis) == 1:
            axis = axis[0]
        return ActivationSpec(layer.name, layer.class_name, "softmax", int(axis))
    act = dense_activation(cfg.get("activation"), flavor, f"layer {layer.name!r}")
    return ActivationSpec(layer.name, layer.class_name, act)


def reshaping(layer: KerasLayer) -> LayerSpec:
    cfg = layer.config
    if layer.class_name == "Flatten":
        return ReshapeSpec(layer.name, layer.class_name, None)
    if layer.class_name == "Reshape":
        target = tuple(int(d) for d in cfg["target_shape"])
        return ReshapeSpec(layer.name, layer.class_name, target)
    n = cfg.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= MAX_DIM:
        raise ModelFormatError(
            f"layer {layer.name!r} (RepeatVector): n={str(n)[:40]} is not a "
            f"count from 1 to {MAX_DIM}"
        )
    return RepeatSpec(layer.name, layer.class_name, n)


def masking(layer: KerasLayer, flavor: KerasFlavor) -> MaskingSpec:
    return MaskingSpec(
        layer.name,
        layer.class_name,
        mask_value=float(layer.config.get("mask_value", 0.0)),
        keep_nan=flavor.masking_keeps_nan,
    )


def _check_finite(name: str, arrays: list) -> None:
    for a in arrays:
        if not np.isfinite(a).all():
            raise ModelFormatError(f"layer {name!r}: weights contain NaN or inf")


RECURRENT_CLASSES = ("LSTM", "CuDNNLSTM", "GRU", "CuDNNGRU", "SimpleRNN", "RNN")
MERGE_OPS = {
    "Concatenate": "concat",
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Average": "average",
    "Maximum": "maximum",
    "Minimum": "minimum",
}
MASK_OPS = {
    "NotEqual": "not_equal",
    "Equal": "equal",
    "Any": "any",
    "All": "all",
    "LogicalAnd": "and",
    "LogicalOr": "or",
    "LogicalNot": "not",
    "ConvertToTensor": "identity",  # what Keras 3 records for a passed mask
}
# Keras 3 operations (not layers: no weights group in a .keras file)
OP_CLASSES = (*MASK_OPS, "GetItem")
IDENTITY_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)


def _merge(layer: KerasLayer, flavor: KerasFlavor) -> MergeSpec:
    op = MERGE_OPS[layer.class_name]
    return MergeSpec(
        layer.name, layer.class_name, op, int(layer.config.get("axis", -1))
    )


def _mask_op(layer: KerasLayer, flavor: KerasFlavor) -> MaskOpSpec:
    cfg = layer.config
    return MaskOpSpec(
        layer.name,
        layer.class_name,
        MASK_OPS[layer.class_name],
        cfg.get("axis"),
        bool(cfg.get("keepdims", False)),
    )


_CONVERTERS: dict[str, Callable[[KerasLayer, KerasFlavor], LayerSpec]] = {
    "InputLayer": lambda k, f: InputSpec(k.name, k.class_name),
    "Masking": masking,
    "Embedding": lambda k, f: embedding(k),
    "Dense": dense,
    "TimeDistributed": time_distributed,
    "TimeDistributedDense": dense,  # Keras 0.x/1.x
    "Activation": activation_layer,
    "Softmax": activation_layer,
    "Flatten": lambda k, f: reshaping(k),
    "Reshape": lambda k, f: reshaping(k),
    "RepeatVector": lambda k, f: reshaping(k),
    "Bidirectional": bidirectional,
    **{c: _mask_op for c in MASK_OPS},
    **{c: (lambda k, f: recurrent(k, f)) for c in RECURRENT_CLASSES},
    **{c: (lambda k, f: IdentitySpec(k.name, k.class_name)) for c in IDENTITY_CLASSES},
    **{c: _merge for c in MERGE_OPS},
    **SEQUENCE_CONVERTERS,
    "Conv1D": lambda k, f: conv1d(k, f, dense_activation),
}

SUPPORTED_CLASSES = tuple(sorted(set(_CONVERTERS) - set(OP_CLASSES)))
WEIGHTED_CLASSES = (
    "Embedding",
    "Dense",
    "TimeDistributed",
    "TimeDistributedDense",
    "Bidirectional",
    "Conv1D",
    "Normalization",
    *SEQUENCE_WEIGHTED,
    *RECURRENT_CLASSES,
)
# weighted classes whose weights may also be absent (a Normalization given
# its mean and variance in the config)
OPTIONALLY_WEIGHTED = ("Normalization", "Attention", "AdditiveAttention")


def canonical_layer(layer: KerasLayer, flavor: KerasFlavor) -> LayerSpec:
    """The canonical spec of one Keras layer (raises naming the layer)."""
    convert = _CONVERTERS.get(layer.class_name)
    if convert is None:
        why = (
            " (Lambda layers hold Python code, which fastlstm never runs)"
            if layer.class_name == "Lambda"
            else ""
        )
        raise UnsupportedLayerError(
            f"layer {layer.name!r} of class {layer.class_name!r} is not "
            f"supported{why}; supported classes: {', '.join(SUPPORTED_CLASSES)}"
        )
    weighted = layer.class_name in WEIGHTED_CLASSES
    if not weighted and layer.weights:
        raise ModelFormatError(
            f"layer {layer.name!r} ({layer.class_name}) has weights "
            "in the file but takes none"
        )
    if weighted and not layer.weights and layer.class_name not in OPTIONALLY_WEIGHTED:
        raise ModelFormatError(
            f"layer {layer.name!r} ({layer.class_name}): no weights "
            "found for it in the file"
        )
    try:
        return convert(layer, flavor)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FastLSTMError):
            raise
        raise ModelFormatError(
            f"layer {layer.name!r} ({layer.class_name}): invalid config or weights "
            f"({exc!r})"
        ) from None


def dtype_policy(config: dict) -> str | None:
    """The name of a layer's dtype policy: a string, or a serialized
    DTypePolicy / Policy (``{"config": {"name": "mixed_float16"}}``)."""
    d = config.get("dtype")
    if isinstance(d, dict):
        inner = d.get("config")
        d = inner.get("name") if isinstance(inner, dict) else None
    return d if isinstance(d, str) else None


def mixed_precision(layers: Any) -> str | None:
    """The mixed-precision policy (mixed_float16, mixed_bfloat16) the model
    was saved under, if any layer has one."""
    names = {dtype_policy(layer.config) for layer in layers}
    mixed = sorted(n for n in names if n and n.startswith("mixed_"))
    return mixed[0] if mixed else None


def canonical_model(raw: ModelSpec) -> ModelSpec:
    """The graph with each KerasLayer replaced by its canonical spec. Every
    layer is converted before anything is raised, so one error lists every
    layer's problem; it has the class of the first."""
    flavor = KerasFlavor.from_version(raw.keras_version, raw.source)
    layers, errors = [], []
    for layer in raw.layers:
        try:
            layers.append(canonical_layer(layer, flavor))
        except FastLSTMError as exc:
            errors.append(exc)
    if errors:
        message = "; ".join(str(e) for e in errors)
        raise type(errors[0])(f"{raw.source}: {message}")
    spec = dataclasses.replace(raw, layers=tuple(layers))
    policy = mixed_precision(raw.layers)
    if policy:  # the weights are float32; Keras computed in half precision
        conventions = {**spec.conventions, "mixed_precision": policy}
        spec = dataclasses.replace(spec, conventions=conventions)
    return spec.validate()
