"""Variable-length HDF5 attributes (model_config, layer_names, weight_names,
keras_version) are checked against their global-heap objects before h5py
reads them: a corrupt length in one descriptor used to make libhdf5
allocate gigabytes (found by fuzzing, kept under fuzz/findings/)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import fastlstm
from fastlstm.loaders import _h5_vlen

ROOT = Path(__file__).resolve().parents[1]
KERAS = ROOT / "tests" / "fixtures" / "keras"
H5 = KERAS / "k2_masking_lstm_h5"
WEIGHTS = KERAS / "k2_masking_lstm_weights_h5"
FINDINGS = ROOT / "fuzz" / "findings"

pytestmark = pytest.mark.skipif(not H5.exists(), reason="Keras fixtures missing")


def attribute_offsets(path: Path, obj_path: str, key: str) -> tuple[int, int]:
    """File offsets of an attribute's first variable-length descriptor and of
    its dataspace's first dimension, found through the checker's header walk."""
    with h5py.File(path, "r") as f:
        obj = f[obj_path]
        r = _h5_vlen._Reader.of_file(f)
        addr = h5py.h5o.get_info(obj.id).addr
        for mtype, _, data in _h5_vlen._messages(r, addr):
            if mtype == _h5_vlen._MSG_ATTRIBUTE:
                name, _, _, ds, values = _h5_vlen._attribute(data)
                if name == key:
                    blob = path.read_bytes()
                    at = blob.find(data)
                    assert at >= 0 and blob.count(data) == 1
                    ds_at = at + data.rfind(ds, 0, len(data) - len(values))
                    return at + len(data) - len(values), ds_at + (
                        8 if ds[0] == 1 else 4
                    )
    raise AssertionError(f"{key} not found")


def descriptor_offset(path: Path, obj_path: str, key: str) -> int:
    return attribute_offsets(path, obj_path, key)[0]


def patched(tmp_path: Path, src: Path, at: int, new: bytes) -> Path:
    dst = tmp_path / src.name
    if dst != src:
        shutil.copy(src, dst)
    blob = bytearray(dst.read_bytes())
    blob[at : at + len(new)] = new
    dst.write_bytes(bytes(blob))
    return dst


@pytest.mark.parametrize(
    "field, value, match",
    [
        (0, (0x7FFFFFFF).to_bytes(4, "little"), "declares 2147483647 bytes"),
        (0, (7).to_bytes(4, "little"), "declares 7 bytes"),
        (12, (999).to_bytes(4, "little"), "heap object 999 does not exist"),
        (4, (1 << 40).to_bytes(8, "little"), "outside the file"),
        (4, (64).to_bytes(8, "little"), "no global heap collection"),
    ],
)
def test_corrupt_descriptor_of_model_config(tmp_path, field, value, match):
    at = descriptor_offset(H5 / "model.h5", "/", "model_config")
    path = patched(tmp_path, H5 / "model.h5", at + field, value)
    with pytest.raises(fastlstm.ModelFormatError, match=f"'model_config'.*{match}"):
        fastlstm.load(path)


def test_corrupt_weight_names_of_a_layer(tmp_path):
    src = WEIGHTS / "model_weights.h5"
    at = descriptor_offset(src, "/lstm", "weight_names")
    path = patched(tmp_path, src, at, (1 << 31).to_bytes(4, "little"))
    with pytest.raises(fastlstm.ModelFormatError, match="'weight_names'.*declares"):
        fastlstm.load(path, config=WEIGHTS / "arch.json")


def test_element_count_above_stored_descriptors(tmp_path):
    """A dataspace claiming more elements than the message stores."""
    src = WEIGHTS / "model_weights.h5"
    dim_at = attribute_offsets(src, "/", "layer_names")[1]
    assert src.read_bytes()[dim_at : dim_at + 8] == (3).to_bytes(8, "little")
    big = (1 << 20).to_bytes(8, "little")
    path = patched(tmp_path, src, dim_at, big)
    if path.read_bytes()[dim_at + 8 : dim_at + 16] == (3).to_bytes(8, "little"):
        path = patched(tmp_path, path, dim_at + 8, big)  # the maximum dimension too
    # libhdf5 2.0 notices this one itself while opening the attribute; either
    # way it is a ModelFormatError before anything is allocated for it
    with pytest.raises(fastlstm.ModelFormatError, match="attribute"):
        fastlstm.load(path, config=WEIGHTS / "arch.json")


def _copy_latest(src: Path, dst: Path, extra_attrs: int = 0) -> None:
    with h5py.File(src, "r") as s, h5py.File(dst, "w", libver="latest") as d:
        for k, v in s.attrs.items():
            d.attrs[k] = v
        for k in range(extra_attrs):
            d.attrs[f"note{k}"] = f"extra attribute {k}"
        for k in s:
            s.copy(s[k], d, name=k)


def test_version_2_object_headers_are_read(tmp_path):
    """Files written with libver='latest' have OHDR headers and v3 attribute
    messages: the check walks them and the model still loads exactly."""
    path = tmp_path / "latest.h5"
    _copy_latest(H5 / "model.h5", path)
    assert path.read_bytes()[:512].find(b"OHDR") > 0
    ref = np.load(H5 / "ref.npz")
    y = fastlstm.load(path).predict(ref["x"])
    np.testing.assert_allclose(y, ref["y"], atol=1e-5, rtol=0)


def test_dense_attribute_storage_is_refused_by_name(tmp_path):
    """More than 8 attributes under libver='latest' go to a fractal heap,
    which the check does not parse: refused, not read unchecked."""
    path = tmp_path / "dense.h5"
    _copy_latest(H5 / "model.h5", path, extra_attrs=10)
    with pytest.raises(fastlstm.ModelFormatError, match="dense attribute storage"):
        fastlstm.load(path)


def test_keras_zip_attributes_checked_in_memory(tmp_path):
    """.keras archives open their weights from memory; a bfloat16 marker
    attribute is a variable-length string checked against those bytes."""
    import zipfile

    src = KERAS / "k3_masking_lstm_keras" / "model.keras"
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    weights = tmp_path / "w.h5"
    weights.write_bytes(members["model.weights.h5"])
    with h5py.File(weights, "r+") as f:
        names: list[str] = []
        f.visititems(
            lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None
        )
        for n in names:  # same numbers, stored the way Keras 3 stores bfloat16
            data = f[n][()].astype(np.float32)
            bits = (data.view(np.uint32) >> 16).astype(np.uint16)
            del f[n]
            f[n] = bits
            f[n].attrs["dtype"] = "bfloat16"
    members["model.weights.h5"] = weights.read_bytes()
    out = tmp_path / "bf16.keras"
    with zipfile.ZipFile(out, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    model = fastlstm.load(out)
    x = np.load(KERAS / "k3_masking_lstm_keras" / "ref.npz")["x"]
    assert np.isfinite(model.predict(x)).all()
    assert not _h5_vlen._images  # registration ends with the load


PROBE = """
import json, resource, sys, time
import fastlstm
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak_mb()
t0 = time.perf_counter()
try:
    fastlstm.load(sys.argv[1], **json.loads(sys.argv[2]))
    outcome = "loaded"
except fastlstm.ModelFormatError as exc:
    outcome = "ModelFormatError: " + str(exc)
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - t0,
                  "rss_growth_mb": peak_mb() - base}))
"""


def _findings() -> list[tuple[Path, dict]]:
    out = []
    for p in sorted(FINDINGS.glob("keras_*/*.h5")):
        seed = p.with_name(p.name + ".txt").read_text().split()[1]
        arch = KERAS / Path(seed).parent.name / "arch.json"
        kwargs = {"config": str(arch)} if p.parent.name == "keras_weights" else {}
        out.append((p, kwargs))
    return out


@pytest.mark.parametrize(
    "finding, kwargs", _findings(), ids=lambda v: getattr(v, "name", "")
)
def test_fuzz_findings_refused_quickly_with_little_memory(finding, kwargs):
    """Each committed finding, in a fresh process: a ModelFormatError, well
    under the fuzz limits (2 s, 1 GB); before the check they took 2-3.5 s
    and 2.7-4 GB."""
    res = subprocess.run(
        [sys.executable, "-c", PROBE, str(finding), json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(res.stdout)
    assert report["outcome"].startswith("ModelFormatError"), report
    assert report["rss_growth_mb"] < 300, report
    assert report["seconds"] < 2.0, report


def _bytes_reader(data: bytes) -> _h5_vlen._Reader:
    """The checker's own reader over a byte string: a version-0 superblock
    (8-byte offsets and lengths) whose base address, 64, is where ``data``
    starts, so the structures in ``data`` use addresses from 0."""
    sb = _h5_vlen._SIGNATURE + bytes([0, 0, 0, 0, 0, 8, 8, 0])
    sb += bytes(8) + (64).to_bytes(8, "little")  # K values, flags; base address
    blob = sb.ljust(64, b"\0") + data
    return _h5_vlen._Reader(lambda off, n: blob[off : off + n], len(blob))


def test_header_continuation_cycle_is_bounded():
    """A version-1 object header whose continuation points back at its own
    chunk would be walked forever; the walk stops with an error."""
    cont = (0x10).to_bytes(2, "little") + (16).to_bytes(2, "little") + bytes(4)
    cont += (16).to_bytes(8, "little") + (24).to_bytes(8, "little")  # itself
    prefix = bytes([1, 0]) + (1).to_bytes(2, "little") + (1).to_bytes(4, "little")
    prefix += (24).to_bytes(4, "little") + bytes(4)
    r = _bytes_reader(prefix + cont)
    with pytest.raises(_h5_vlen._Corrupt, match="continuation chunks|messages"):
        for _ in _h5_vlen._messages(r, 0):
            pass


@pytest.mark.parametrize("objects", [300_000, 70_000])
def test_heap_collection_walk_is_bounded(objects):
    """Hundreds of thousands of tiny heap objects (or a zero-sized free
    space entry) cannot make the walk long: it has a step budget."""
    body = b"".join(
        (k % 65535 + 1).to_bytes(2, "little") + bytes(6) + (0).to_bytes(8, "little")
        for k in range(objects)
    )
    size = 16 + len(body)
    data = b"GCOL" + bytes([1, 0, 0, 0]) + size.to_bytes(8, "little") + body
    r = _bytes_reader(data)
    with pytest.raises(_h5_vlen._Corrupt, match="heap objects|appears twice"):
        _h5_vlen._collection(r, 0)


def test_zero_sized_free_space_is_refused():
    """libhdf5 loops forever on a free-space entry of size 0 (a fuzz input
    hung it); the walk refuses it."""
    obj = (1).to_bytes(2, "little") + bytes(6) + (5).to_bytes(8, "little") + bytes(8)
    free = bytes(8) + (0).to_bytes(8, "little")
    body = obj + free + bytes(64)
    size = 16 + len(body)
    data = b"GCOL" + bytes([1, 0, 0, 0]) + size.to_bytes(8, "little") + body
    with pytest.raises(_h5_vlen._Corrupt, match="corrupt global heap object list"):
        _h5_vlen._collection(_bytes_reader(data), 0)
    fixed = data[: 16 + len(obj) + 8] + (len(body) - len(obj)).to_bytes(8, "little")
    fixed += data[16 + len(obj) + 16 :]
    assert _h5_vlen._collection(_bytes_reader(fixed), 0) == {1: 5}
