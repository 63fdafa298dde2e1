"""Why ``import fastlstm`` failed, when its compiled extension did not
load: a missing dependency, an unbuilt checkout, or a source folder that
shadows the installed package (Python run from inside the checkout)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

__all__ = ["import_error", "shadowed_install"]


def shadowed_install(here: str) -> str | None:
    """Where an installed fastlstm lives when this import found another
    one: the source folder, run from inside the checkout, shadowing it."""
    try:
        dist = importlib.metadata.distribution("fastlstm")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == "__init__.py" and f.parent.name == "fastlstm":
            installed = Path(str(dist.locate_file(f))).resolve().parent
            return str(installed) if installed != Path(here).resolve() else None
    return None


def import_error(exc: ImportError, here: str) -> ImportError:
    """What to tell a user whose import of the compiled extension failed."""
    if (
        isinstance(exc, ModuleNotFoundError)
        and exc.name
        and (not exc.name.startswith("fastlstm"))
    ):
        return ImportError(
            f"fastlstm needs the package {exc.name!r}, which is not installed: "
            f"pip install {exc.name}"
        )
    installed = shadowed_install(here)
    if installed is not None:
        return ImportError(
            f"Python imported fastlstm from {here}, a source folder without "
            f"its compiled extension, instead of the installed package in "
            f"{installed}: the folder you run Python from shadows it. Run Python "
            "from another directory, or install with `pip install -e .` to work "
            f"in the checkout. Underlying error: {exc}"
        )
    if isinstance(exc, ModuleNotFoundError):
        return ImportError(
            "fastlstm's compiled extension (fastlstm._core) is not built. Install "
            "the package with `pip install .` (or `pip install -e .` for "
            f"development) from the source checkout. Underlying error: {exc}"
        )
    return ImportError(  # pragma: no cover - a broken or foreign build
        f"fastlstm's compiled extension (fastlstm._core) cannot be loaded: {exc}. "
        "Rebuild it with `pip install .` from the source checkout."
    )
