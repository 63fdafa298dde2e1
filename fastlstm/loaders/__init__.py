"""The format readers: detect a file's format from its bytes, and read it.

Formats: Keras legacy HDF5 (full model or weights-only + config), Keras 3
``.keras`` archives and ``.weights.h5`` (+ config); PyTorch ``torch.save``
state_dicts (zip and legacy) and ``.safetensors``; TF1 checkpoints (tensor
bundle or ``.npz``); ONNX. Readers know nothing of the engine; reading
never executes code from the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import h5py

from fastlstm.errors import ConfigError, FastLSTMError, ModelFormatError
from fastlstm.loaders._files import (
    check_regular,
    in_memory,
    memory_bytes,
    open_model_file,
)
from fastlstm.loaders._h5_vlen import image_of
from fastlstm.loaders._zip import ZIP_ERRORS
from fastlstm.loaders.keras_h5 import load_keras_h5
from fastlstm.loaders.keras_layers import canonical_model
from fastlstm.loaders.keras_v3 import load_keras_zip, load_weights_h5
from fastlstm.loaders.npz_format import read_npz
from fastlstm.loaders.safetensors_format import load_safetensors, looks_like_safetensors
from fastlstm.loaders.tf1_checkpoint import latest_checkpoint
from fastlstm.loaders.torch_pickle import (
    find_zip_prefix,
    is_legacy_torch_file,
    load_torch_file,
)
from fastlstm.loaders.torch_recurrent import flatten_state_dict, looks_like_torch
from fastlstm.model_spec import ModelSpec

__all__ = [
    "sniff",
    "tf1_prefix",
    "family_of",
    "mapping_family",
    "read_keras",
    "read_npz",
    "read_torch_object",
    "load_errors",
]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
FORMATS = (
    "Keras .h5 (full model, or weights with config=)",
    "Keras 3 .keras archive",
    "Keras 3 .weights.h5 (with config=)",
    "PyTorch state_dict (torch.save, zip or legacy format)",
    "safetensors",
    "TF1 checkpoint (prefix of .index + .data-*, or .npz of variables)",
    "ONNX (.onnx graph of LSTM nodes)",
)


def tf1_prefix(path: str) -> str | None:
    """The checkpoint prefix when ``path`` names a TF checkpoint: the prefix
    itself, its .index or a .data-* shard, or a folder holding a
    ``checkpoint`` file."""
    if in_memory(path):
        return None
    if os.path.isdir(path):
        return latest_checkpoint(path)
    if not os.path.isfile(path) and os.path.isfile(path + ".index"):
        return path
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    base, sep, shard = path.rpartition(".data-")
    if sep and "-of-" in shard and os.path.isfile(base + ".index"):
        return base
    return None


SAVED_MODEL_ADVICE = (
    "fastlstm reads model files, not SavedModels: save the Keras model with "
    "model.save('model.keras') (or 'model.h5'), or export it to ONNX "
    "(tf2onnx), and load that file"
)


def _looks_like_saved_model(path: str, head: bytes) -> bool:
    """A SavedModel proto: field 1 (schema version, varint), then field 2
    (a MetaGraphDef, whose first field is itself a message), where an ONNX
    ModelProto has producer_name text."""
    if os.path.basename(path) in ("saved_model.pb", "saved_model.pbtxt"):
        return True
    if len(head) < 6 or head[0] != 0x08 or head[2] != 0x12:
        return False
    k = 3
    while k < len(head) and head[k] & 0x80:
        k += 1
    return k + 1 < len(head) and head[k + 1] == 0x0A


def _looks_like_onnx(head: bytes) -> bool:
    """ModelProto starts with field 1 (ir_version, varint), then another
    known field (producer_name, graph, opset_import ...)."""
    if len(head) < 3 or head[0] != 0x08:
        return False
    k = 1
    while k < len(head) and head[k] & 0x80:
        k += 1
    return (
        k + 1 < len(head)
        and k < 10
        and head[k + 1]
        in (
            0x12,
            0x1A,
            0x22,
            0x2A,
            0x32,
            0x3A,
            0x42,
            0x52,
            0x62,
            0x72,
        )
    )


def sniff(path: str) -> str:
    """The file's format from its first bytes: 'hdf5', 'zip', 'torch_legacy',
    'safetensors', 'onnx', or 'tf1' (a checkpoint prefix or its files).
    HDF5 may sit after a user block of 512, 1024, ... bytes."""
    if tf1_prefix(path) is not None:
        return "tf1"
    if not in_memory(path) and os.path.isdir(path):
        for name in ("saved_model.pb", "saved_model.pbtxt"):
            if os.path.exists(os.path.join(path, name)):
                raise ModelFormatError(
                    f"{path}: a TensorFlow SavedModel folder; {SAVED_MODEL_ADVICE}"
                )
        raise ModelFormatError(
            f"{path}: a folder, not a model file (a TF checkpoint folder needs a "
            "'checkpoint' state file or exactly one .index file)"
        )
    try:
        with open_model_file(path) as fh:
            head = fh.read(32)
            size = fh.seek(0, os.SEEK_END)
            if head[:8] == HDF5_MAGIC:
                return "hdf5"
            if head[:4] in ZIP_MAGIC:
                return "zip"
            if is_legacy_torch_file(head):
                return "torch_legacy"
            if looks_like_safetensors(head, size):
                return "safetensors"
            if _looks_like_saved_model(path, head):
                raise ModelFormatError(
                    f"{path}: a TensorFlow SavedModel (saved_model.pb); "
                    f"{SAVED_MODEL_ADVICE}"
                )
            if path.lower().endswith(".onnx") or _looks_like_onnx(head):
                return "onnx"
            offset = 512
            while offset + 8 <= size and offset <= (1 << 20):
                fh.seek(offset)
                if fh.read(8) == HDF5_MAGIC:
                    return "hdf5"
                offset *= 2
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read the file: {exc}") from exc
    if not head:
        raise ModelFormatError(f"{path}: the file is empty")
    if in_memory(path) and _looks_like_tf1_index(path):
        raise ConfigError(
            f"{path}: a TF1 checkpoint's .index, whose tensors are in separate "
            ".data files; load the checkpoint by path (its prefix)"
        )
    raise ModelFormatError(
        f"{path}: not a model file fastlstm knows (first bytes {head[:8]!r}); "
        f"supported: {'; '.join(FORMATS)}"
    )


# The footer of an SSTable (a TF tensor bundle's .index) ends with this.
SSTABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")


def _looks_like_tf1_index(path: str) -> bool:
    with open_model_file(path) as fh:
        size = fh.seek(0, os.SEEK_END)
        if size < 48:
            return False
        fh.seek(size - 8)
        return fh.read(8) == SSTABLE_MAGIC


TORCH_EXPORT_ADVICE = (
    "fastlstm does not run exported programs (their graph is code for "
    "PyTorch's runtime); export the model to ONNX (torch.onnx.export) and "
    "load that, or save its state_dict (torch.save(model.state_dict(), "
    "'model.pt')) and load that with batch_first="
)


def _zip_kind(zf: zipfile.ZipFile, path: str) -> str:
    """'keras', 'torch' or 'npz' for a zip archive."""
    names = zf.namelist()
    if "config.json" in names:
        return "keras"
    if any(n.endswith("/archive_format") for n in names[:64]) and any(
        "/models/" in n or n.endswith("serialized_exported_program.json")
        for n in names[:256]
    ):
        raise ModelFormatError(
            f"{path}: a torch.export archive (.pt2); {TORCH_EXPORT_ADVICE}"
        )
    if find_zip_prefix(zf, path) is not None:
        return "torch"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "keras"  # its loader explains what is missing


def family_of(path: str) -> str:
    kind = sniff(path)
    if kind == "zip":
        try:
            with open_model_file(path) as fh, zipfile.ZipFile(fh) as zf:
                kind = _zip_kind(zf, path)
        except FastLSTMError:
            raise
        except ZIP_ERRORS as exc:
            raise ModelFormatError(f"{path}: corrupt zip archive: {exc}") from exc
        if kind == "npz":
            return "npz"
    return {
        "hdf5": "keras",
        "keras": "keras",
        "torch": "torch",
        "torch_legacy": "torch",
        "safetensors": "torch",
    }.get(kind, kind)


def read_keras(
    path: str, config: Any = None, keras_version: str | None = None
) -> ModelSpec:
    """A Keras file's canonical ModelSpec. config: the architecture for
    weights-only files; keras_version: overrides the file's (it picks
    hard_sigmoid's definition and mask rules)."""
    kind = sniff(path)
    if kind not in ("zip", "hdf5"):
        raise ModelFormatError(
            f"{path}: a {_describe_kind(kind)}; load_spec reads Keras files, "
            "use fastlstm.load(path) for it"
        )
    if kind == "zip":
        fh = open_model_file(path)
        try:
            zf = zipfile.ZipFile(fh)
        except ZIP_ERRORS as exc:
            fh.close()
            raise ModelFormatError(f"{path}: corrupt zip archive: {exc}") from exc
        with fh, zf:
            zkind = _zip_kind(zf, path)
            if zkind != "keras":
                raise ModelFormatError(
                    f"{path}: a {_describe_kind(zkind)}; load_spec reads Keras "
                    "files, use fastlstm.load(path) for it"
                )
            return canonical_model(load_keras_zip(path, zf, config, keras_version))
    check_regular(path)
    data = memory_bytes(path)
    try:
        f = h5py.File(path if data is None else io.BytesIO(data), "r")
    except OSError as exc:
        raise ModelFormatError(
            f"{path}: corrupt or truncated HDF5 file: {exc}"
        ) from exc
    with f, image_of(f, data) if data is not None else contextlib.nullcontext():
        try:
            if (
                "model_config" in f.attrs
                or "model_weights" in f
                or "layer_names" in f.attrs
            ):
                spec = load_keras_h5(path, f, config)
            elif "layers" in f or "_layer_checkpoint_dependencies" in f:
                spec = load_weights_h5(path, f, config, keras_version)
            else:
                raise ModelFormatError(
                    f"{path}: an HDF5 file, but neither a Keras model (no "
                    "model_config) nor a Keras weights file (no layer_names, no "
                    "layers group)"
                )
        except (KeyError, OSError, ValueError, TypeError, RuntimeError) as exc:
            if isinstance(exc, FastLSTMError):
                raise
            raise ModelFormatError(
                f"{path}: unreadable Keras HDF5 content: {exc!r}"
            ) from exc
    if keras_version is not None:
        spec = dataclasses.replace(spec, keras_version=keras_version)
    return canonical_model(spec)


def _describe_kind(kind: str) -> str:
    return {
        "torch": "PyTorch file",
        "torch_legacy": "PyTorch file (legacy format)",
        "safetensors": "safetensors file",
        "tf1": "TF1 checkpoint",
        "onnx": "ONNX file",
        "npz": ".npz archive",
    }.get(kind, kind)


@contextlib.contextmanager
def load_errors(path: str) -> Iterator[None]:
    """Every failure while loading ``path`` comes out as a FastLSTMError
    naming it: the readers raise their own with reasons; this is the net
    under them for what a file's structure can still provoke (a type where
    another was expected, deep nesting, exhausted memory)."""
    try:
        yield
    except FastLSTMError as exc:
        if path in str(exc):
            raise
        raise type(exc)(f"{path}: {exc}") from exc
    except ImportError:  # an optional package the format needs (onnx)
        raise
    except RecursionError:
        raise ModelFormatError(
            f"{path}: the file's structure nests too deeply"
        ) from None
    except MemoryError:
        raise ModelFormatError(
            f"{path}: loading needs more memory than is available"
        ) from None
    except Exception as exc:
        raise ModelFormatError(
            f"{path}: malformed model file ({type(exc).__name__}: {exc})"
        ) from exc


def mapping_family(obj: Mapping) -> str:
    """'torch' or 'tf1' for a dict of arrays, from its key names."""
    try:
        flat = flatten_state_dict(obj, "<dict>")
    except ModelFormatError:
        flat = {}
    return "torch" if looks_like_torch(flat) else "tf1"


def read_torch_object(path: str) -> Any:
    """What a PyTorch or safetensors file holds, tensors as NumPy arrays."""
    if sniff(path) == "safetensors":
        return load_safetensors(path)
    return load_torch_file(path)
