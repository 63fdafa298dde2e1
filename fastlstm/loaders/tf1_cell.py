"""TF1 ``tf.nn.rnn_cell`` LSTM variables -> canonical LSTMSpecs (FORMATS.md 6).

A cell at scope S stores ``S/kernel`` (I + R, 4H) (rows [:I] multiply x,
rows [I:] multiply h; R = num_proj or H) and ``S/bias`` (4H), column blocks
in TF's order i, j, f, o (j = candidate); LSTMCell may add peepholes
``S/w_i_diag``, ``S/w_f_diag``, ``S/w_o_diag`` (H) and a projection
``S/projection/kernel`` (H, P). Older TF 1.x names (``weights``/``biases``,
``W_0``/``B``, ``Linear/Matrix``/``Linear/Bias``, ``W_I_diag``..., ``W_P_0``)
are accepted too, and sharded ``kernel/part_<k>`` variables are
concatenated on axis 0.

Conversion: kernel = kernel[:I], recurrent_kernel = kernel[I:], blocks
reordered [0, 2, 1, 3] to i, f, g, o, ``forget_bias`` (not stored in the
checkpoint; 1.0 by default as in TF) added to the f block of the bias.

Cells combine as MultiRNNCell stacks (``.../cell_<k>/...``) and
bidirectional fw/bw pairs (``.../fw/...``, ``.../bw/...``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fastlstm.errors import ConfigError, ModelFormatError
from fastlstm.spec import LSTMSpec

__all__ = [
    "CellVariables",
    "Structure",
    "find_cells",
    "cell_spec",
    "structure_of",
    "is_stack_scope",
]

TF_TO_CANONICAL = (0, 2, 1, 3)  # TF blocks i, j, f, o -> i, f, g, o

KERNEL_NAMES = ("kernel", "weights", "W_0", "Linear/Matrix")
BIAS_NAMES = ("bias", "biases", "B", "Linear/Bias")
PEEPHOLE_NAMES = (
    ("w_i_diag", "W_I_diag"),
    ("w_f_diag", "W_F_diag"),
    ("w_o_diag", "W_O_diag"),
)
PROJECTION_NAMES = ("projection/kernel", "projection/weights", "W_P_0")


@dataclasses.dataclass(frozen=True)
class CellVariables:
    """Where one cell's variables are in the checkpoint."""

    scope: str
    kernel: tuple  # one name, or the part_<k> names in order
    bias: str
    peepholes: tuple | None = None  # names of w_i, w_f, w_o
    projection: tuple | None = None


@dataclasses.dataclass(frozen=True)
class Structure:
    """Cells as dynamic_rnn runs them: one stack of layers (a single cell is
    a stack of one), or a forward and a backward stack."""

    forward: tuple  # CellVariables, layer order
    backward: tuple | None = None

    @property
    def bidirectional(self) -> bool:
        return self.backward is not None

    @property
    def scopes(self) -> list[str]:
        return [c.scope for c in self.forward + (self.backward or ())]


def _parts(names: set, base: str) -> tuple | None:
    if base in names:
        return (base,)
    parts = []
    while f"{base}/part_{len(parts)}" in names:
        parts.append(f"{base}/part_{len(parts)}")
    return tuple(parts) or None


def find_cells(names: list[str]) -> dict[str, CellVariables]:
    """{scope: CellVariables} of every LSTM-like cell (a kernel with a bias
    beside it) among the variable names."""
    pool = set(names)
    cells: dict[str, CellVariables] = {}
    leaf = re.compile(
        r"^(?P<scope>.+?)/(?:" + "|".join(re.escape(k) for k in KERNEL_NAMES) + r")"
        r"(?:/part_0)?$"
    )
    for name in sorted(pool):
        m = leaf.match(name)
        if not m:
            continue
        scope = m["scope"]
        if scope in cells or scope.endswith("/projection"):
            continue
        kernel = bias = None
        for k, b in zip(KERNEL_NAMES, BIAS_NAMES):
            kernel = _parts(pool, f"{scope}/{k}")
            bias = f"{scope}/{b}" if f"{scope}/{b}" in pool else None
            if kernel and bias:
                break
        if not (kernel and bias):
            continue
        peep = []
        for variants in PEEPHOLE_NAMES:
            found = [f"{scope}/{v}" for v in variants if f"{scope}/{v}" in pool]
            peep.append(found[0] if found else None)
        peepholes = None
        if any(peep):
            if not all(peep):
                raise ModelFormatError(
                    f"cell {scope!r} has only some peephole weights: "
                    f"{[p for p in peep if p]}; expected w_i_diag, w_f_diag, w_o_diag"
                )
            peepholes = tuple(peep)
        projection = None
        for p in PROJECTION_NAMES:
            projection = _parts(pool, f"{scope}/{p}")
            if projection:
                break
        cells[scope] = CellVariables(scope, kernel, bias, peepholes, projection)
    return cells


def is_stack_scope(scope: str) -> bool:
    """True for a cell inside a MultiRNNCell (a cell_<k> scope component)."""
    return any(re.fullmatch(r"(?:cell_|Cell)\d+", p) for p in scope.split("/"))


def _stack_order(scopes: list[str]) -> list[str] | None:
    """The scopes of a MultiRNNCell in layer order, or None if they are not
    the cells of one stack."""
    if len(scopes) == 1:
        return scopes
    keyed = {}
    for s in scopes:
        # the last cell_<k> component decides (stacks may nest in scopes)
        parts = s.split("/")
        idx = [i for i, p in enumerate(parts) if re.fullmatch(r"(?:cell_|Cell)\d+", p)]
        if not idx:
            return None
        i = idx[-1]
        k = int(re.sub(r"\D", "", parts[i]))
        key = ("/".join(parts[:i]), "/".join(parts[i + 1 :]))
        keyed.setdefault(key[0], {})[k] = s
    if len(keyed) != 1:
        return None
    layers = next(iter(keyed.values()))
    if sorted(layers) != list(range(len(layers))) or len(layers) != len(scopes):
        return None
    return [layers[k] for k in range(len(layers))]


def _direction_split(scopes: list[str]) -> tuple[list, list] | None:
    fw, bw, bases = [], [], set()
    for s in scopes:
        parts = s.split("/")
        hits = [i for i, p in enumerate(parts) if p in ("fw", "bw")]
        if not hits:
            return None
        i = hits[-1]
        bases.add("/".join(parts[:i]))
        (fw if parts[i] == "fw" else bw).append(s)
    if len(bases) != 1 or not fw or not bw:
        return None
    return fw, bw


def structure_of(
    cells: dict[str, CellVariables], scope: str | None, where: str
) -> Structure:
    """Picks the cells ``scope`` names (all when None) and arranges them."""
    scopes = sorted(cells)
    if not scopes:
        raise ModelFormatError(
            f"{where}: no TF1 LSTM cell variables found (no <scope>/kernel with a "
            "<scope>/bias beside it)"
        )
    if scope is not None:
        if not isinstance(scope, str):
            raise TypeError(f"scope must be a string, got {type(scope).__name__}")
        s = scope.strip("/")
        chosen = [c for c in scopes if c == s or c.startswith(s + "/")]
        if not chosen:
            chosen = [c for c in scopes if c.endswith("/" + s) or ("/" + s + "/") in c]
        if not chosen:
            raise ModelFormatError(
                f"{where}: no LSTM cell under scope {scope!r}; cells in the "
                f"checkpoint: {', '.join(scopes)}"
            )
        scopes = chosen
    order = _stack_order(scopes)
    if order is not None:
        return Structure(tuple(cells[s] for s in order))
    split = _direction_split(scopes)
    if split is not None:
        fw, bw = (_stack_order(x) for x in split)
        if fw is not None and bw is not None:
            return Structure(tuple(cells[s] for s in fw), tuple(cells[s] for s in bw))
    raise ModelFormatError(
        f"{where}: the checkpoint holds several LSTM cells that are not one "
        f"MultiRNNCell stack or one fw/bw pair: {', '.join(scopes)}; choose "
        "with scope="
    )


def _option(value: Any, scope: str, name: str) -> Any:
    """A per-cell option: one value for all cells or a {scope: value} dict."""
    if isinstance(value, Mapping):
        return value.get(scope)
    return value


def cell_spec(
    cell: CellVariables,
    get: Callable[[str], np.ndarray],
    where: str,
    *,
    forget_bias: Any = 1.0,
    cell_clip: Any = None,
    proj_clip: Any = None,
    activation: Any = "tanh",
    go_backwards: bool = False,
) -> LSTMSpec:
    """The canonical spec of one TF1 cell."""
    s = cell.scope

    def read(names: tuple | str, ndim: int) -> np.ndarray:
        names = (names,) if isinstance(names, str) else names
        arrays = [get(n) for n in names]
        for n, a in zip(names, arrays):
            if a.dtype.kind != "f":
                raise ModelFormatError(f"{where}: {n!r} has dtype {a.dtype}")
            if a.ndim != ndim:
                raise ModelFormatError(
                    f"{where}: {n!r} has shape {a.shape}; {ndim}-D expected"
                )
        return np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]

    kernel = read(cell.kernel, 2)
    bias = read(cell.bias, 1)
    if kernel.shape[1] % 4 or kernel.shape[1] == 0:
        raise ModelFormatError(
            f"{where}: {cell.kernel[0]!r} has shape {kernel.shape}; its columns "
            "must be 4 * num_units"
        )
    H = kernel.shape[1] // 4
    proj = None if cell.projection is None else read(cell.projection, 2)
    R = H if proj is None else proj.shape[1]
    if proj is not None and proj.shape[0] != H:
        raise ModelFormatError(
            f"{where}: {cell.projection[0]!r} has shape {proj.shape}, expected "
            f"({H}, num_proj)"
        )
    I = kernel.shape[0] - R
    if I < 1:
        raise ModelFormatError(
            f"{where}: {cell.kernel[0]!r} has {kernel.shape[0]} rows, not more than "
            f"the {R} recurrent rows: no room for the input"
        )
    if bias.shape != (4 * H,):
        raise ModelFormatError(
            f"{where}: {cell.bias!r} has shape {bias.shape}, expected ({4 * H},)"
        )
    peep = None
    if cell.peepholes is not None:
        rows = [read(n, 1) for n in cell.peepholes]
        for n, r in zip(cell.peepholes, rows):
            if r.shape != (H,):
                raise ModelFormatError(
                    f"{where}: {n!r} has shape {r.shape}, expected ({H},)"
                )
        peep = np.stack(rows)

    def reorder(a: np.ndarray) -> np.ndarray:
        blocks = np.split(a, 4, axis=-1)
        return np.concatenate([blocks[k] for k in TF_TO_CANONICAL], axis=-1)

    fb = _option(forget_bias, s, "forget_bias")
    fb = 1.0 if fb is None else fb
    try:
        fb = float(fb)
    except (TypeError, ValueError):
        raise ConfigError(f"forget_bias must be a number, got {fb!r}") from None
    b = reorder(bias.astype(np.float32)).copy()
    b[H : 2 * H] += np.float32(fb)
    pc = _option(proj_clip, s, "proj_clip")
    if proj is None and not isinstance(proj_clip, Mapping):
        pc = None  # one proj_clip for a stack applies to the cells with a projection
    act = _option(activation, s, "activation") or "tanh"
    return LSTMSpec.create(
        reorder(kernel[:I]),
        reorder(kernel[I:]),
        b,
        peepholes=peep,
        projection=proj,
        activation=act,
        recurrent_activation="sigmoid",
        cell_clip=_option(cell_clip, s, "cell_clip"),
        proj_clip=pc,
        go_backwards=go_backwards,
        return_sequences=True,
        return_state=True,
    )
