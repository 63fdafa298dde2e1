"""The restricted unpickler: hostile pickles are refused by name before
anything runs, and corrupt or inconsistent files raise ModelFormatError."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from torch_files import (
    Global,
    Storages,
    Tensor,
    pickle_bytes,
    write_legacy,
    write_zip,
)

import fastlstm
from fastlstm.loaders.torch_pickle import load_torch_file

FIXTURES = Path(__file__).parent / "fixtures" / "torch"


class _Reduce:
    """Pickles as ``func(*args)``; only unpickling would call it."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_payloads(marker: Path) -> dict:
    return {
        "os.system": _Reduce(os.system, (f"touch {marker}",)),
        "builtins.eval": _Reduce(eval, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.call": _Reduce(subprocess.call, (["touch", str(marker)],)),
        "builtins.exec": _Reduce(exec, (f"open({str(marker)!r}, 'w')",)),
        "getattr": _Reduce(getattr, ("", "upper")),
    }


GLOBAL_NAMES = {  # how protocol 2 spells each callable's global on Linux
    "os.system": r"posix\.system",
    "builtins.eval": r"builtins\.eval",
    "subprocess.call": r"subprocess\.call",
    "builtins.exec": r"builtins\.exec",
    "getattr": r"builtins\.getattr",
}


def _zip_with_pickle(path: Path, data_pkl: bytes) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")


def test_malicious_fixture_refused_without_running(tmp_path):
    path = FIXTURES / "malicious.pt"
    if not path.exists():
        pytest.skip("torch fixtures not generated yet")
    meta = json.loads((FIXTURES / "malicious.json").read_text())
    marker = Path("/tmp/fastlstm_pwned")
    if marker.exists():
        marker.unlink()
    name = [g for g in meta["torch_zip"]["pickle_globals"] if g.endswith("system")][0]
    with pytest.raises(
        fastlstm.ModelFormatError, match=f"refusing to load global '{name}'"
    ):
        fastlstm.load(path)
    with pytest.raises(fastlstm.ModelFormatError, match=name.replace(".", r"\.")):
        load_torch_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", sorted(GLOBAL_NAMES))
@pytest.mark.parametrize("layout", ["zip", "legacy", "nested"])
def test_crafted_hostile_pickle_refused(tmp_path, kind, layout):
    marker = tmp_path / "pwned"
    payload = _hostile_payloads(marker)[kind]
    path = tmp_path / "evil.pt"
    if layout == "legacy":
        data = b"".join(
            pickle.dumps(v, protocol=2)
            for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
        ) + pickle.dumps(payload, protocol=2)
        path.write_bytes(data)
    else:
        obj = payload
        if layout == "nested":  # after valid entries, deep in a checkpoint
            obj = {"epoch": 3, "model": {"a": [1, 2.5, "x"], "b": (payload,)}}
        _zip_with_pickle(path, pickle.dumps(obj, protocol=2))
    with pytest.raises(
        fastlstm.ModelFormatError,
        match=f"refusing to load global '{GLOBAL_NAMES[kind]}'",
    ):
        fastlstm.load(path)
    assert not marker.exists()


def test_hand_emitted_global_refused_in_state_dict(tmp_path):
    marker = tmp_path / "pwned"
    st = Storages()
    sd = {
        "weight_ih_l0": st.add(np.ones((8, 3), np.float32)),
        "payload": Global("posix", "system", (f"touch {marker}",)),
    }
    for writer in (write_zip, write_legacy):
        path = tmp_path / f"{writer.__name__}.pt"
        writer(path, sd, st)
        with pytest.raises(
            fastlstm.ModelFormatError, match=r"refusing to load global 'posix\.system'"
        ):
            fastlstm.load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("torch", "load"),
        ("torch.storage", "_load_from_bytes"),
        ("torch._utils", "_rebuild_qtensor"),
        ("numpy", "frombuffer"),
        ("collections", "namedtuple"),
        ("builtins", "__import__"),
        ("torch.nn.modules.rnn", "LSTM"),
    ],
)
def test_other_globals_refused(tmp_path, module, name):
    path = tmp_path / "x.pt"
    _zip_with_pickle(path, pickle_bytes({"a": Global(module, name, (1,))}))
    pattern = f"refusing to load global '{module}.{name}'".replace(".", r"\.")
    with pytest.raises(fastlstm.ModelFormatError, match=pattern):
        load_torch_file(path)


def test_whole_model_pickle_gets_advice(tmp_path):
    path = tmp_path / "model.pt"
    _zip_with_pickle(path, pickle_bytes(Global("torch.nn.modules.rnn", "LSTM", ())))
    with pytest.raises(fastlstm.ModelFormatError, match=r"Save model\.state_dict\(\)"):
        fastlstm.load(path)


def test_torchscript_archive_explained(tmp_path):
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("scripted/data.pkl", pickle_bytes({}))
        zf.writestr("scripted/code/__torch__.py", "")
        zf.writestr("scripted/constants.pkl", pickle_bytes(()))
    with pytest.raises(fastlstm.ModelFormatError, match="TorchScript archive"):
        fastlstm.load(path)


# --- corrupt or inconsistent files ------------------------------------------


def _one_tensor(tmp_path, **change) -> Path:
    st = Storages()
    t = st.add(np.arange(12, dtype=np.float32).reshape(3, 4))
    for k, v in change.items():
        setattr(t, k, v)
    path = tmp_path / "t.pt"
    write_zip(path, {"w": t}, st)
    return path


@pytest.mark.parametrize(
    "change, match",
    [
        ({"size": (4, 4)}, "reaches byte 64 of storage '0', which holds 48"),
        ({"offset": 1}, "reaches byte 52"),
        ({"stride": (4, 2)}, "reaches byte 60"),
        ({"numel": 13}, "holds 48 bytes, the pickle declares 13 x 4 = 52"),
        ({"numel": 1 << 40}, "above the 17179869184-byte limit of one allocation"),
        ({"size": (3, 4, 5)}, "differ in rank"),
        ({"size": (3, -4)}, "negative"),
        ({"size": tuple([1] * 40), "stride": tuple([1] * 40)}, "40 dimensions"),
        ({"size": (1 << 20, 1 << 20), "stride": (0, 0)}, "element limit"),
        ({"offset": "0"}, "not an integer"),
    ],
)
def test_bad_tensor_metadata(tmp_path, change, match):
    with pytest.raises(fastlstm.ModelFormatError, match=match):
        load_torch_file(_one_tensor(tmp_path, **change))


def test_missing_storage_member(tmp_path):
    path = _one_tensor(tmp_path)
    with zipfile.ZipFile(path) as zf:
        items = {n: zf.read(n) for n in zf.namelist() if n != "archive/data/0"}
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in items.items():
            zf.writestr(n, b)
    with pytest.raises(fastlstm.ModelFormatError, match=r"'archive/data/0' is missing"):
        load_torch_file(path)


def test_bad_byteorder(tmp_path):
    st = Storages()
    path = tmp_path / "t.pt"
    write_zip(path, {"w": st.add(np.ones(3, np.float32))}, st, byteorder="middle")
    with pytest.raises(fastlstm.ModelFormatError, match="byteorder is b'middle'"):
        load_torch_file(path)


def test_bad_persistent_id(tmp_path):
    path = tmp_path / "t.pt"
    # BINPERSID of a plain string
    _zip_with_pickle(path, b"\x80\x02X\x03\x00\x00\x00abcQ.")
    with pytest.raises(fastlstm.ModelFormatError, match="unsupported persistent id"):
        load_torch_file(path)


def test_storage_type_clash(tmp_path):
    st = Storages()
    t = st.add(np.ones(4, np.float32))
    t2 = Tensor(t.key, "DoubleStorage", 4, 0, (4,), (1,))
    path = tmp_path / "t.pt"
    write_zip(path, {"a": t, "b": t2}, st)
    with pytest.raises(fastlstm.ModelFormatError, match="used as both"):
        load_torch_file(path)


def test_tensor_from_non_storage(tmp_path):
    path = tmp_path / "t.pt"
    pkl = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00sK\x00)))\x89tR."
    )
    _zip_with_pickle(path, pkl)
    with pytest.raises(fastlstm.ModelFormatError, match="not a storage reference"):
        load_torch_file(path)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.8, 0.97])
def test_truncated_legacy(tmp_path, keep):
    st = Storages()
    path = tmp_path / "legacy.pt"
    write_legacy(path, {"w": st.add(np.arange(64, dtype=np.float32))}, st)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(fastlstm.ModelFormatError, match=r"cut\.pt"):
        load_torch_file(cut)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_zip(tmp_path, keep):
    st = Storages()
    path = tmp_path / "full.pt"
    write_zip(path, {"w": st.add(np.arange(256, dtype=np.float32))}, st)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(fastlstm.ModelFormatError, match=r"cut\.pt"):
        fastlstm.load(cut)


def test_garbage_pickle(tmp_path):
    path = tmp_path / "t.pt"
    _zip_with_pickle(path, b"\x80\x02\xff\xfe garbage")
    with pytest.raises(fastlstm.ModelFormatError, match="opcode 0xff is not allowed"):
        load_torch_file(path)


def test_deep_nesting(tmp_path):
    path = tmp_path / "t.pt"
    _zip_with_pickle(path, b"\x80\x02" + b"]" * 100000 + b".")
    with pytest.raises(fastlstm.ModelFormatError, match="t\\.pt"):
        fastlstm.load(path)


def test_zip_bomb_member_refused(tmp_path):
    st = Storages()
    t = st.add(np.zeros(1 << 20, np.float32))  # 4 MiB of zeros deflate to ~4 KiB
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", pickle_bytes({"w": t}))
        zf.writestr("archive/data/0", st.data["0"])
    with pytest.raises(fastlstm.ModelFormatError, match="would inflate .* refused"):
        load_torch_file(path)


@pytest.mark.parametrize("opcode", [b"r", b"j"])  # LONG_BINPUT, LONG_BINGET
def test_absurd_memo_index_costs_nothing(tmp_path, opcode):
    """A few corrupt bytes in a pickle could make CPython's unpickler grow
    its memo table to billions of entries (found by fuzzing: 28 s, 2.7 GB).
    The restricted unpickler keeps its memo in a dict: the index costs one
    entry and the file is refused at the next bad opcode or empty slot."""
    import struct
    import time
    import tracemalloc

    magic = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
    data = b"\x80\x02\x8a\x0a" + magic + opcode + struct.pack("<I", 2**31) + b"."
    path = tmp_path / "legacy.pt"
    path.write_bytes(data + b"\x00" * 64)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(
        fastlstm.ModelFormatError, match=r"opcode 0x00 is not|slot 2147483648 is empty"
    ):
        fastlstm.load(path)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 2.0 and peak < 50 << 20


_DIGEST = """
import hashlib
import numpy as np
from fastlstm.loaders.torch_pickle import load_torch_file

def digest(paths):
    h = hashlib.sha256()
    for path in paths:
        for key, value in sorted(load_torch_file(path).items()):
            h.update(key.encode() + np.ascontiguousarray(value).tobytes())
    return h.hexdigest()
"""


def test_hostile_pickles_leave_later_loads_alone(tmp_path):
    """Hostile pickles that try to change objects shared between loads (the
    storage types, the rebuild functions, OrderedDict) are refused, and
    legitimate files loaded afterwards in the same process give the same
    bits as in a fresh process."""
    from hostile_files import CASES

    legit = [
        str(FIXTURES / name / "model.pt")
        for name in ("float16", "bfloat16", "lstm_basic", "legacy_format")
    ]
    if not all(os.path.exists(p) for p in legit):
        pytest.skip("torch fixtures not generated yet")
    pickles = [name for name in sorted(CASES) if name.startswith("pickle_")]
    assert len(pickles) >= 5
    for name in pickles:
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(fastlstm.FastLSTMError):
            fastlstm.load(CASES[name](folder).path)
    fresh = subprocess.run(
        [sys.executable, "-c", _DIGEST + "import sys; print(digest(sys.argv[1:]))"]
        + legit,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    namespace: dict = {}
    exec(_DIGEST, namespace)
    assert namespace["digest"](legit) == fresh
