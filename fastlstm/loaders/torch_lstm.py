"""PyTorch ``nn.LSTM`` / ``nn.LSTMCell`` state_dicts -> canonical LSTMSpecs.

Keys (pytorch/pytorch:torch/nn/modules/rnn.py): per layer k and direction
suffix '' / '_reverse': ``weight_ih_l{k}`` (4H, I_k), ``weight_hh_l{k}``
(4H, H_out), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}``
(P, H) with proj_size. ``nn.LSTMCell``: ``weight_ih``, ``weight_hh``,
``bias_ih``, ``bias_hh``. Gate order is i, f, g, o, the canonical one, so
the conversion is ``kernel = weight_ih.T``, ``recurrent_kernel =
weight_hh.T``, ``bias = bias_ih + bias_hh``, ``projection = weight_hr.T``.

The state_dict does not record num_layers, bidirectional, proj_size or bias:
they are inferred from the keys present and their shapes. Checkpoints that
wrap the state_dict (``{"model": sd, "epoch": 3}``) are flattened with '.'
joins, so the LSTM's keys are found under a prefix such as ``model.lstm.``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from fastlstm.errors import ConfigError, ModelFormatError, UnsupportedLayerError
from fastlstm.model_spec import (
    BidirectionalSpec,
    ModelSpec,
    RecurrentSpec,
    recurrent_chain,
)
from fastlstm.spec import LSTMSpec

__all__ = [
    "TorchLSTMConfig",
    "find_lstm",
    "flatten_state_dict",
    "lstm_specs",
    "cell_spec",
    "infer_config",
    "looks_like_torch",
]

_LSTM_KEY = re.compile(
    r"^(?P<prefix>.*?)(?P<name>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"_l(?P<layer>\d+)(?P<reverse>_reverse)?$"
)
_CELL_KEY = re.compile(
    r"^(?P<prefix>(?:.*\.)?)(?P<name>weight_ih|weight_hh|bias_ih|bias_hh)$"
)
MAX_DEPTH = 8
MAX_LAYERS = 1024


@dataclasses.dataclass(frozen=True)
class TorchLSTMConfig:
    """What nn.LSTM's constructor was given, as inferred from the weights."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    bias: bool = True
    cell: bool = False  # an nn.LSTMCell

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
        m = _LSTM_KEY.match(key)
        if m:
            found[m["prefix"]] = "lstm"
    for key in flat:
        m = _CELL_KEY.match(key)
        if m and m["prefix"] not in found:
            found[m["prefix"]] = "cell"
    return found


def _gate_count(flat: dict, prefix: str, kind: str) -> int | None:
    """4 for an LSTM, 3 for a GRU, 1 for a plain RNN (from weight_hh)."""
    sfx = "_l0" if kind == "lstm" else ""
    hh = flat.get(f"{prefix}weight_hh{sfx}")
    if not isinstance(hh, np.ndarray) or hh.ndim != 2 or hh.shape[1] == 0:
        return None
    hr = flat.get(f"{prefix}weight_hr{sfx}")
    H = hr.shape[1] if isinstance(hr, np.ndarray) and hr.ndim == 2 else hh.shape[1]
    if H == 0 or hh.shape[0] % H:
        return None
    return hh.shape[0] // H


def _show(prefix: str) -> str:
    return repr(prefix) if prefix else "'' (no prefix)"


def find_lstm(
    obj: Any, prefix: str | None, where: str
) -> tuple[str, str, dict[str, np.ndarray]]:
    """(prefix, 'lstm' | 'cell', flat dict) of the one LSTM in ``obj``.

    ``prefix`` selects among several (e.g. 'encoder.lstm.' or 'lstm'); it may
    also be the tail of a longer prefix ('lstm.' finds 'model.lstm.').
    """
    flat = flatten_state_dict(obj, where)
    found = _candidates(flat)
    lstms = {p: k for p, k in found.items() if _gate_count(flat, p, k) in (4, None)}
    others = {p: _gate_count(flat, p, k) for p, k in found.items() if p not in lstms}
    if prefix is not None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {type(prefix).__name__}")
        want = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        pool = {**lstms, **{p: found[p] for p in others}}
        if want in pool:
            chosen = [want]
        else:
            chosen = [p for p in pool if want and p.endswith("." + want)]
        if not chosen:
            raise ModelFormatError(
                f"{where}: no LSTM weights under prefix {prefix!r}; LSTM prefixes "
                f"in the file: {_list(lstms) or 'none'}"
            )
        if len(chosen) > 1:
            raise ModelFormatError(
                f"{where}: prefix {prefix!r} matches several LSTMs: "
                f"{_list(chosen)}; give the full prefix"
            )
        p = chosen[0]
        if p in others:
            _refuse_other(where, p, others[p])
        return p, found[p], flat
    if len(lstms) == 1:
        p = next(iter(lstms))
        return p, lstms[p], flat
    if len(lstms) > 1:
        raise ModelFormatError(
            f"{where}: the file holds several LSTMs, under the prefixes "
            f"{_list(lstms)}; choose one with prefix="
        )
    if others:
        p, gates = next(iter(others.items()))
        _refuse_other(where, p, gates)
    sample = sorted(flat)[:8]
    raise ModelFormatError(
        f"{where}: no nn.LSTM / nn.LSTMCell weights found (no weight_ih_l0 or "
        f"weight_ih keys); keys seen: {sample}{' ...' if len(flat) > 8 else ''}"
    )


def _list(prefixes: Any) -> str:
    return ", ".join(_show(p) for p in sorted(prefixes))


def _refuse_other(where: str, prefix: str, gates: int | None) -> None:
    kind = {3: "an nn.GRU", 1: "an nn.RNN"}.get(gates or 0, "not an LSTM")
    raise UnsupportedLayerError(
        f"{where}: the recurrent weights under {_show(prefix)} look like {kind} "
        f"(weight_hh has {gates} gate blocks, an LSTM has 4); fastlstm runs LSTMs"
    )


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


def infer_config(flat: dict, prefix: str, kind: str, where: str) -> TorchLSTMConfig:
    """num_layers, bidirectional, proj_size, bias, sizes; checks every shape."""
    if kind == "cell":
        w_ih = _get(flat, prefix + "weight_ih", where, 2)
        w_hh = _get(flat, prefix + "weight_hh", where, 2)
        H = w_hh.shape[1]
        has_bias = prefix + "bias_ih" in flat or prefix + "bias_hh" in flat
        cfg = TorchLSTMConfig(w_ih.shape[1], H, bias=has_bias, cell=True)
        _check_shapes(flat, prefix, "", cfg, 0, where)
        return cfg
    layers: set[int] = set()
    reverse = False
    names: set[str] = set()
    for key in flat:
        m = _LSTM_KEY.match(key)
        if m and m["prefix"] == prefix:
            layers.add(int(m["layer"]))
            reverse |= bool(m["reverse"])
            names.add(m["name"])
    n = max(layers) + 1
    if n > MAX_LAYERS or sorted(layers) != list(range(n)):
        raise ModelFormatError(
            f"{where}: LSTM layers under {_show(prefix)} are {sorted(layers)[:10]}; "
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
    cfg = TorchLSTMConfig(
        input_size=w_ih.shape[1],
        hidden_size=H,
        num_layers=n,
        bidirectional=reverse,
        proj_size=proj,
        bias="bias_ih" in names or "bias_hh" in names,
    )
    for k in range(n):
        for sfx in ("", "_reverse")[: cfg.num_directions]:
            _check_shapes(flat, prefix, f"_l{k}{sfx}", cfg, k, where)
    return cfg


def _check_shapes(
    flat: dict, prefix: str, sfx: str, cfg: TorchLSTMConfig, layer: int, where: str
) -> None:
    H, R = cfg.hidden_size, cfg.output_size
    I_k = cfg.input_size if layer == 0 else cfg.num_directions * R
    expected = {"weight_ih": (4 * H, I_k), "weight_hh": (4 * H, R)}
    if cfg.bias:
        expected.update(bias_ih=(4 * H,), bias_hh=(4 * H,))
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


def _spec(flat: dict, prefix: str, sfx: str, cfg: TorchLSTMConfig, **kw) -> LSTMSpec:
    w_ih = flat[prefix + "weight_ih" + sfx].astype(np.float32)
    w_hh = flat[prefix + "weight_hh" + sfx].astype(np.float32)
    bias = None
    if cfg.bias:
        b_ih = flat[prefix + "bias_ih" + sfx].astype(np.float32)
        b_hh = flat[prefix + "bias_hh" + sfx].astype(np.float32)
        with np.errstate(invalid="ignore", over="ignore"):  # validated next
            bias = b_ih + b_hh
    proj = None
    if cfg.proj_size:
        proj = flat[prefix + "weight_hr" + sfx].astype(np.float32).T
    return LSTMSpec.create(w_ih.T, w_hh.T, bias, projection=proj, **kw)


def lstm_specs(
    flat: dict, prefix: str, cfg: TorchLSTMConfig
) -> list[tuple[LSTMSpec, LSTMSpec | None]]:
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


def cell_spec(flat: dict, prefix: str, cfg: TorchLSTMConfig) -> LSTMSpec:
    return _spec(flat, prefix, "", cfg, return_sequences=True, return_state=True)


def looks_like_torch(flat: Mapping) -> bool:
    """True if any key is an nn.LSTM / nn.LSTMCell parameter name."""
    return bool(_candidates(dict(flat)))


def lstm_graph(
    layers: list[tuple[LSTMSpec, LSTMSpec | None]],
    batch_first: bool,
    source: str = "",
) -> ModelSpec:
    """The graph of an nn.LSTM from its (forward, reverse-or-None) cells:
    one layer per torch layer, each returning every step and its states."""
    specs = []
    for k, (fw, bw) in enumerate(layers):
        forward = _direction(f"layer{k}", fw, False, batch_first)
        if bw is None:
            specs.append(forward)
            continue
        specs.append(
            BidirectionalSpec(
                name=f"layer{k}",
                class_name="LSTM",
                forward=dataclasses.replace(forward, name=f"layer{k}_forward"),
                backward=_direction(f"layer{k}_reverse", bw, True, batch_first),
                merge_mode="concat",
            )
        )
    return recurrent_chain(
        specs,
        name="LSTM",
        source=source,
        source_format="PyTorch nn.LSTM",
        conventions={"calls": "torch_lstm", "batch_first": bool(batch_first)},
    )


def _direction(name: str, cell: LSTMSpec, reverse: bool, batch_first: bool):
    cell = dataclasses.replace(
        cell, go_backwards=reverse, return_sequences=True, return_state=False
    )
    return RecurrentSpec(
        name=name,
        class_name="LSTM",
        cells=(cell,),
        return_sequences=True,
        return_state=True,
        go_backwards=reverse,
        time_major=not batch_first,
    )


def cell_graph(cell: LSTMSpec, source: str = "") -> ModelSpec:
    """The graph of an nn.LSTMCell: one step of its cell, returning the
    last output and the state."""
    layer = dataclasses.replace(
        _direction("cell", cell, False, True), return_sequences=False
    )
    return recurrent_chain(
        [layer],
        name="LSTMCell",
        source=source,
        source_format="PyTorch nn.LSTMCell",
        conventions={"calls": "torch_cell"},
    )


def read_state_dict(
    state_dict: Any,
    *,
    prefix: str | None = None,
    batch_first: bool | None = None,
    where: str = "<state_dict>",
) -> ModelSpec:
    """The graph of the nn.LSTM (or nn.LSTMCell) in a state_dict or
    checkpoint dict of arrays or tensors. A state_dict does not record
    ``batch_first``: an nn.LSTM needs it given (an nn.LSTMCell has none)."""
    p, kind, flat = find_lstm(state_dict, prefix, where)
    cfg = infer_config(flat, p, kind, where)
    if cfg.cell:
        return cell_graph(cell_spec(flat, p, cfg), where)
    if batch_first is None:
        raise ConfigError(
            f"{where}: an nn.LSTM state_dict does not record batch_first; pass "
            "batch_first=True (x of shape (N, L, H_in)) or batch_first=False "
            "(x of shape (L, N, H_in), nn.LSTM's default), as the model was built"
        )
    if not isinstance(batch_first, (bool, np.bool_)):
        raise ConfigError(f"batch_first must be a bool, got {batch_first!r}")
    return lstm_graph(lstm_specs(flat, p, cfg), bool(batch_first), where)
