"""load(path): detect a model file's format from its bytes and read it.

Formats: Keras legacy HDF5 (full model or weights-only + config), Keras 3
``.keras`` archives and ``.weights.h5`` (+ config). Loading never executes
code from the file.
"""

from __future__ import annotations

import os
import zipfile
from typing import TYPE_CHECKING, Any

import h5py

from fastlstm.errors import FastLSTMError, ModelFormatError
from fastlstm.spec import ModelSpec

if TYPE_CHECKING:
    from fastlstm.model import Model

__all__ = ["load", "load_spec", "from_keras", "sniff"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
FORMATS = (
    "Keras .h5 (full model, or weights with config=)",
    "Keras 3 .keras archive",
    "Keras 3 .weights.h5 (with config=)",
)


def sniff(path: str) -> str:
    """'hdf5' or 'zip', from the file's first bytes (HDF5 may sit after a
    user block of 512, 1024, ... bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head == HDF5_MAGIC:
                return "hdf5"
            if head[:4] in ZIP_MAGIC:
                return "zip"
            size = os.fstat(fh.fileno()).st_size
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
    raise ModelFormatError(
        f"{path}: not a model file fastlstm knows (first bytes {head[:8]!r}); "
        f"supported: {'; '.join(FORMATS)}"
    )


def load_spec(
    path: str | os.PathLike, *, config: Any = None, keras_version: str | None = None
) -> ModelSpec:
    """Reads a model file into the canonical ModelSpec.

    config: the architecture for weights-only files (``model.to_json()``
    text, a JSON file path or a dict). keras_version: override the version
    recorded in the file (it picks hard_sigmoid's definition and mask rules).
    """
    from fastlstm.loaders.keras_h5 import load_keras_h5
    from fastlstm.loaders.keras_v3 import load_keras_zip, load_weights_h5

    path = os.fspath(path)
    kind = sniff(path)
    if kind == "zip":
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelFormatError(f"{path}: corrupt zip archive: {exc}") from exc
        with zf:
            return load_keras_zip(path, zf, config, keras_version)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ModelFormatError(
            f"{path}: corrupt or truncated HDF5 file: {exc}"
        ) from exc
    with f:
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
        import dataclasses

        spec = dataclasses.replace(spec, keras_version=keras_version)
    return spec


def load(
    path: str | os.PathLike, *, config: Any = None, keras_version: str | None = None
) -> Model:
    """Loads a model file and returns a ready-to-run fastlstm.Model.

    See load_spec for the options.
    """
    from fastlstm.model import Model

    return Model(load_spec(path, config=config, keras_version=keras_version))


def from_keras(model: Any) -> Model:
    """A fastlstm.Model from a live Keras (tf.keras, tf_keras or Keras 3)
    model object: its config and weights, nothing else. Keras is not
    imported by fastlstm; this only reads the object you pass."""
    import json
    import sys

    from fastlstm.loaders._keras_config import parse_model_config
    from fastlstm.loaders._weights import attach_weights
    from fastlstm.model import Model

    if not (hasattr(model, "to_json") and hasattr(model, "layers")):
        raise TypeError(f"from_keras takes a Keras model, got {type(model).__name__}")
    package = type(model).__module__.split(".")[0]
    module = sys.modules.get(package)
    version = getattr(module, "__version__", "3" if package == "keras" else "2")
    if package in ("tensorflow", "tf_keras") and not str(version).startswith("2"):
        version = "2." + str(version).split(".", 1)[-1]
    source = f"<live {type(model).__name__} {getattr(model, 'name', '')!r}>"
    skeleton = parse_model_config(
        json.loads(model.to_json()),
        keras_version=str(version),
        source=source,
        source_format="live Keras model",
    )
    saved = {}
    for layer in model.layers:
        w = layer.get_weights()
        if w:
            saved[layer.name] = w
    return Model(attach_weights(skeleton, saved, source))
