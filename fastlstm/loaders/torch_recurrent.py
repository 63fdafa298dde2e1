"""PyTorch ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` and their cells' state_dicts
-> canonical cell specs.

Keys (pytorch/pytorch:torch/nn/modules/rnn.py): per layer k and direction
suffix '' / '_reverse': ``weight_ih_l{k}`` (G*H, I_k), ``weight_hh_l{k}``
(G*H, H_out), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,), and for an LSTM
with proj_size ``weight_hr_l{k}`` (P, H); G = 4 (LSTM), 3 (GRU), 1 (RNN).
The cells (``nn.LSTMCell`` ...) have ``weight_ih``, ``weight_hh``,
``bias_ih``, ``bias_hh``.

* LSTM: gate order i, f, g, o, the canonical one: ``kernel = weight_ih.T``,
  ``recurrent_kernel = weight_hh.T``, ``bias = bias_ih + bias_hh``,
  ``projection = weight_hr.T``.
* GRU: row blocks r, z, n, reordered to the canonical z, r, n; the two
  biases stay apart (b_hn sits inside the reset product): ``reset_after``.
* RNN: ``kernel = weight_ih.T`` ..., biases apart; the nonlinearity (tanh
  or relu) is not in the state_dict.

The state_dict does not record num_layers, bidirectional, proj_size or bias:
they are inferred from the keys present and their shapes; the kind from
weight_hh's gate blocks. Checkpoints that wrap the state_dict
(``{"model": sd, "epoch": 3}``) are flattened with '.' joins, so the keys
are found under a prefix such as ``model.lstm.``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from fastlstm.errors import ConfigError, ModelFormatError
from fastlstm.model_spec import (
    BidirectionalSpec,
    ModelSpec,
    RecurrentSpec,
    recurrent_chain,
)
from fastlstm.spec import GRUSpec, LSTMSpec, SimpleRNNSpec

__all__ = [
    "TorchRecurrentConfig",
    "find_recurrent",
    "flatten_state_dict",
    "layer_specs",
    "cell_spec",
    "infer_config",
    "looks_like_torch",
]

_LAYER_KEY = re.compile(
    r"^(?P<prefix>.*?)(?P<name>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"_l(?P<layer>\d+)(?P<reverse>_reverse)?$"
)
_CELL_KEY = re.compile(
    r"^(?P<prefix>(?:.*\.)?)(?P<name>weight_ih|weight_hh|bias_ih|bias_hh)$"
)
MAX_DEPTH = 8
MAX_LAYERS = 1024


# torch's module names by gate blocks, and the mode names torch uses
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_KIND_OF_GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}
NONLINEARITIES = ("tanh", "relu")


@dataclasses.dataclass(frozen=True)
class TorchRecurrentConfig:
    """What the module's constructor was given, as inferred from the
    weights (and the options the weights do not record)."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    bias: bool = True
    cell: bool = False  # an nn.LSTMCell, nn.GRUCell or nn.RNNCell
    mode: str = "LSTM"  # torch's mode: LSTM, GRU, RNN_TANH or RNN_RELU

    @property
    def gates(self) -> int:
        return GATES[self.mode]

    @property
    def module_name(self) -> str:
        """nn.LSTM, nn.GRU, nn.RNN, or the cell's name."""
        name = _KIND_OF_GATES[self.gates]
        return f"nn.{name}Cell" if self.cell else f"nn.{name}"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size


def _as_array(value: Any) -> Any:
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a live tensor
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return value


def flatten_state_dict(obj: Any, where: str) -> dict[str, Any]:
    """{dotted key: array} from a state_dict or nested checkpoint dicts;
    non-array leaves (epoch numbers, optimizer hyper-parameters) are kept
    out."""
    flat: dict[str, Any] = {}
    seen: set[int] = set()  # a dict the file refers to twice is walked once

    def walk(node: Mapping, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH or id(node) in seen:
            return
        seen.add(id(node))
        for key, value in node.items():
            name = prefix + str(key)
            if isinstance(value, Mapping):
                walk(value, name + ".", depth + 1)
                continue
            value = _as_array(value)
            if isinstance(value, np.ndarray):
                flat[name] = value

    if not isinstance(obj, Mapping):
        raise ModelFormatError(
            f"{where}: holds a {type(obj).__name__}, not a state_dict (a dict "
            "of tensors); save model.state_dict()"
        )
    walk(obj, "", 0)
    return flat


def _candidates(flat: dict[str, Any]) -> dict[str, str]:
    """{prefix: 'lstm' | 'cell'} for every prefix that has recurrent keys."""
    found: dict[str, str] = {}
    for key in flat:
        m = _LAYER_KEY.match(key)
        if m:
            found[m["prefix"]] = "lstm"
    for key in flat:
        m = _CELL_KEY.match(key)
        if m and m["prefix"] not in found:
            found[m["prefix"]] = "cell"
    return found


def _gate_count(flat: dict, prefix: str, kind: str) -> int | None:
    """4 for an LSTM, 3 for a GRU, 1 for a plain RNN (from weight_hh); None
    when weight_hh cannot tell (reported when the shapes are checked); 0
    for any other number of gate blocks (not a recurrent module)."""
    sfx = "_l0" if kind == "lstm" else ""
    hh = flat.get(f"{prefix}weight_hh{sfx}")
    if not isinstance(hh, np.ndarray) or hh.ndim != 2 or hh.shape[1] == 0:
        return None
    hr = flat.get(f"{prefix}weight_hr{sfx}")
    H = hr.shape[1] if isinstance(hr, np.ndarray) and hr.ndim == 2 else hh.shape[1]
    if H == 0 or hh.shape[0] % H:
        return None
    gates = hh.shape[0] // H
    return gates if gates in _KIND_OF_GATES else 0


def _show(prefix: str) -> str:
    return repr(prefix) if prefix else "'' (no prefix)"


def find_recurrent(
    obj: Any, prefix: str | None, where: str
) -> tuple[str, str, dict[str, np.ndarray]]:
    """(prefix, 'lstm' | 'cell', flat dict) of the one recurrent module
    (nn.LSTM, nn.GRU, nn.RNN or one of their cells) in ``obj``; 'lstm'
    means a full module (any of the three), 'cell' one of the cells.

    ``prefix`` selects among several (e.g. 'encoder.lstm.' or 'lstm'); it may
    also be the tail of a longer prefix ('lstm.' finds 'model.lstm.').
    """
    flat = flatten_state_dict(obj, where)
    found = {p: k for p, k in _candidates(flat).items() if _gate_count(flat, p, k) != 0}
    if prefix is not None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {type(prefix).__name__}")
        want = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        if want in found:
            chosen = [want]
        else:
            chosen = [p for p in found if want and p.endswith("." + want)]
        if not chosen:
            raise ModelFormatError(
                f"{where}: no recurrent weights under prefix {prefix!r}; "
                f"recurrent prefixes in the file: {_list(found) or 'none'}"
            )
        if len(chosen) > 1:
            raise ModelFormatError(
                f"{where}: prefix {prefix!r} matches several recurrent modules: "
                f"{_list(chosen)}; give the full prefix"
            )
        return chosen[0], found[chosen[0]], flat
    if len(found) == 1:
        p = next(iter(found))
        return p, found[p], flat
    if len(found) > 1:
        raise ModelFormatError(
            f"{where}: the file holds several recurrent modules, under the "
            f"prefixes {_list(found)}; choose one with prefix="
        )
    sample = sorted(flat)[:8]
    raise ModelFormatError(
        f"{where}: no nn.LSTM / nn.GRU / nn.RNN (or cell) weights found (no "
        f"weight_ih_l0 or weight_ih keys); keys seen: {sample}"
        f"{' ...' if len(flat) > 8 else ''}"
    )


def _list(prefixes: Any) -> str:
    return ", ".join(_show(p) for p in sorted(prefixes))


def _get(flat: dict, key: str, where: str, ndim: int) -> np.ndarray:
    arr = flat.get(key)
    if arr is None:
        raise ModelFormatError(f"{where}: {key!r} is missing")
    if arr.dtype.kind != "f":
        raise ModelFormatError(
            f"{where}: {key!r} has dtype {arr.dtype}; floating point expected"
        )
    if arr.ndim != ndim:
        raise ModelFormatError(
            f"{where}: {key!r} has shape {arr.shape}; a {ndim}-D tensor expected"
        )
    return arr


def _mode(gates: int | None, nonlinearity: str | None, where: str, cell: bool) -> str:
    """torch's mode from the gate blocks and the nonlinearity option."""
    name = _KIND_OF_GATES.get(gates or 4, "LSTM")
    module = f"nn.{name}Cell" if cell else f"nn.{name}"
    if name != "RNN":
        if nonlinearity is not None:
            raise ConfigError(
                f"{where}: nonlinearity= applies to nn.RNN and nn.RNNCell; the "
                f"file holds an {module}"
            )
        return name
    if nonlinearity is None:
        raise ConfigError(
            f"{where}: an {module} state_dict does not record its nonlinearity; "
            "pass nonlinearity='tanh' (torch's default) or nonlinearity='relu', "
            "as the model was built"
        )
    if nonlinearity not in NONLINEARITIES:
        raise ConfigError(
            f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}"
        )
    return "RNN_" + nonlinearity.upper()


def infer_config(
    flat: dict, prefix: str, kind: str, where: str, nonlinearity: str | None = None
) -> TorchRecurrentConfig:
    """Mode, num_layers, bidirectional, proj_size, bias, sizes; checks every
    shape."""
    mode = _mode(_gate_count(flat, prefix, kind), nonlinearity, where, kind == "cell")
    if kind == "cell":
        w_ih = _get(flat, prefix + "weight_ih", where, 2)
        w_hh = _get(flat, prefix + "weight_hh", where, 2)
        H = w_hh.shape[1]
        has_bias = prefix + "bias_ih" in flat or prefix + "bias_hh" in flat
        cfg = TorchRecurrentConfig(
            w_ih.shape[1], H, bias=has_bias, cell=True, mode=mode
        )
        _check_shapes(flat, prefix, "", cfg, 0, where)
        return cfg
    layers: set[int] = set()
    reverse = False
    names: set[str] = set()
    for key in flat:
        m = _LAYER_KEY.match(key)
        if m and m["prefix"] == prefix:
            layers.add(int(m["layer"]))
            reverse |= bool(m["reverse"])
            names.add(m["name"])
    n = max(layers) + 1
    if n > MAX_LAYERS or sorted(layers) != list(range(n)):
        raise ModelFormatError(
            f"{where}: layers under {_show(prefix)} are {sorted(layers)[:10]}; "
            "expected 0, 1, ..., num_layers-1"
        )
    w_hh = _get(flat, prefix + "weight_hh_l0", where, 2)
    proj = 0
    if "weight_hr" in names:
        w_hr = _get(flat, prefix + "weight_hr_l0", where, 2)
        proj, H = w_hr.shape
    else:
        H = w_hh.shape[1]
    w_ih = _get(flat, prefix + "weight_ih_l0", where, 2)
    cfg = TorchRecurrentConfig(
        input_size=w_ih.shape[1],
        hidden_size=H,
        num_layers=n,
        bidirectional=reverse,
        proj_size=proj,
        bias="bias_ih" in names or "bias_hh" in names,
        mode=mode,
    )
    for k in range(n):
        for sfx in ("", "_reverse")[: cfg.num_directions]:
            _check_shapes(flat, prefix, f"_l{k}{sfx}", cfg, k, where)
    return cfg


def _check_shapes(
    flat: dict, prefix: str, sfx: str, cfg: TorchRecurrentConfig, layer: int, where: str
) -> None:
    H, R = cfg.hidden_size, cfg.output_size
    I_k = cfg.input_size if layer == 0 else cfg.num_directions * R
    G = cfg.gates
    expected = {"weight_ih": (G * H, I_k), "weight_hh": (G * H, R)}
    if cfg.bias:
        expected.update(bias_ih=(G * H,), bias_hh=(G * H,))
    if cfg.proj_size:
        expected["weight_hr"] = (cfg.proj_size, H)
    if H < 1:
        raise ModelFormatError(f"{where}: hidden size 0 under {_show(prefix)}")
    for name, shape in expected.items():
        key = prefix + name + sfx
        arr = _get(flat, key, where, len(shape))
        if arr.shape != shape:
            raise ModelFormatError(
                f"{where}: {key!r} has shape {arr.shape}, expected {shape} "
                f"(input_size={I_k}, hidden_size={H}"
                + (f", proj_size={cfg.proj_size}" if cfg.proj_size else "")
                + ")"
            )
    for name in ("bias_ih", "bias_hh", "weight_hr"):
        key = prefix + name + sfx
        if key in flat and name not in expected:
            raise ModelFormatError(
                f"{where}: {key!r} is present but other layers lack it"
            )


def _torch_gru_order(w: np.ndarray) -> np.ndarray:
    """torch's GRU row blocks r, z, n -> the canonical z, r, n."""
    r, z, n = np.split(w, 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def _spec(flat: dict, prefix: str, sfx: str, cfg: TorchRecurrentConfig, **kw) -> Any:
    """The canonical spec of one direction of one layer (or of a cell)."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    w_ih, w_hh, b_ih, b_hh = (
        flat[prefix + n + sfx].astype(np.float32)
        if cfg.bias or n.startswith("weight")
        else None
        for n in names
    )
    if cfg.mode == "GRU":
        w_ih, w_hh = _torch_gru_order(w_ih), _torch_gru_order(w_hh)
        if cfg.bias:
            b_ih, b_hh = _torch_gru_order(b_ih), _torch_gru_order(b_hh)
        return GRUSpec.create(w_ih.T, w_hh.T, b_ih, b_hh, reset_after=True, **kw)
    if cfg.mode != "LSTM":
        act = cfg.mode[4:].lower()
        return SimpleRNNSpec.create(w_ih.T, w_hh.T, b_ih, b_hh, activation=act, **kw)
    bias = None
    if cfg.bias:
        with np.errstate(invalid="ignore", over="ignore"):  # validated next
            bias = b_ih + b_hh
    proj = None
    if cfg.proj_size:
        proj = flat[prefix + "weight_hr" + sfx].astype(np.float32).T
    return LSTMSpec.create(w_ih.T, w_hh.T, bias, projection=proj, **kw)


def layer_specs(
    flat: dict, prefix: str, cfg: TorchRecurrentConfig
) -> list[tuple[Any, Any]]:
    """(forward, reverse-or-None) canonical specs for each layer."""
    out = []
    for k in range(cfg.num_layers):
        fw = _spec(
            flat, prefix, f"_l{k}", cfg, return_sequences=True, return_state=True
        )
        bw = None
        if cfg.bidirectional:
            bw = _spec(
                flat,
                prefix,
                f"_l{k}_reverse",
                cfg,
                go_backwards=True,
                return_sequences=True,
                return_state=True,
            )
        out.append((fw, bw))
    return out


def cell_spec(flat: dict, prefix: str, cfg: TorchRecurrentConfig) -> Any:
    return _spec(flat, prefix, "", cfg, return_sequences=True, return_state=True)


def looks_like_torch(flat: Mapping) -> bool:
    """True if any key is a torch recurrent module's parameter name."""
    return bool(_candidates(dict(flat)))


def mode_of(cell: Any) -> str:
    """torch's mode name of a canonical cell spec."""
    if isinstance(cell, GRUSpec):
        return "GRU"
    if isinstance(cell, SimpleRNNSpec):
        return "RNN_" + cell.activation.name
    return "LSTM"


def _class_name(mode: str) -> str:
    return _KIND_OF_GATES[GATES[mode]]


def module_graph(
    layers: list[tuple[Any, Any]], batch_first: bool, source: str = ""
) -> ModelSpec:
    """The graph of an nn.LSTM, nn.GRU or nn.RNN from its (forward,
    reverse-or-None) cells: one layer per torch layer, each returning every
    step and its states."""
    mode = mode_of(layers[0][0])
    name = _class_name(mode)
    specs = []
    for k, (fw, bw) in enumerate(layers):
        forward = _direction(f"layer{k}", fw, False, batch_first)
        if bw is None:
            specs.append(forward)
            continue
        specs.append(
            BidirectionalSpec(
                name=f"layer{k}",
                class_name=name,
                forward=dataclasses.replace(forward, name=f"layer{k}_forward"),
                backward=_direction(f"layer{k}_reverse", bw, True, batch_first),
                merge_mode="concat",
            )
        )
    return recurrent_chain(
        specs,
        name=name,
        source=source,
        source_format=f"PyTorch nn.{name}",
        conventions={
            "calls": "torch_module",
            "mode": mode,
            "batch_first": bool(batch_first),
        },
    )


def _direction(name: str, cell: Any, reverse: bool, batch_first: bool):
    cell = dataclasses.replace(
        cell, go_backwards=reverse, return_sequences=True, return_state=False
    )
    return RecurrentSpec(
        name=name,
        class_name=_class_name(mode_of(cell)),
        cells=(cell,),
        return_sequences=True,
        return_state=True,
        go_backwards=reverse,
        time_major=not batch_first,
    )


def cell_graph(cell: Any, source: str = "") -> ModelSpec:
    """The graph of an nn.LSTMCell, nn.GRUCell or nn.RNNCell: one step of
    its cell, returning the last output and the state."""
    layer = dataclasses.replace(
        _direction("cell", cell, False, True), return_sequences=False
    )
    mode = mode_of(cell)
    name = _class_name(mode) + "Cell"
    return recurrent_chain(
        [layer],
        name=name,
        source=source,
        source_format=f"PyTorch nn.{name}",
        conventions={"calls": "torch_cell", "mode": mode},
    )


def read_torch_graph(
    state_dict: Any,
    *,
    prefix: str | None = None,
    batch_first: bool | None = None,
    nonlinearity: str | None = None,
    where: str = "<state_dict>",
) -> ModelSpec:
    """The graph of the nn.LSTM, nn.GRU or nn.RNN (or its cell) in a
    state_dict or checkpoint dict of arrays or tensors. A state_dict does
    not record ``batch_first`` (a module needs it given, a cell has none),
    nor an nn.RNN's ``nonlinearity`` (needed for nn.RNN and nn.RNNCell)."""
    p, kind, flat = find_recurrent(state_dict, prefix, where)
    cfg = infer_config(flat, p, kind, where, nonlinearity)
    if cfg.cell:
        return cell_graph(cell_spec(flat, p, cfg), where)
    if batch_first is None:
        raise ConfigError(
            f"{where}: an {cfg.module_name} state_dict does not record batch_first; "
            "pass batch_first=True (x of shape (N, L, H_in)) or batch_first=False "
            f"(x of shape (L, N, H_in), {cfg.module_name}'s default), as the model "
            "was built"
        )
    if not isinstance(batch_first, (bool, np.bool_)):
        raise ConfigError(f"batch_first must be a bool, got {batch_first!r}")
    return module_graph(layer_specs(flat, p, cfg), bool(batch_first), where)
