"""A short fixed-seed run of fuzz/fuzz_loaders.py over every loader, half
byte mutations and half structure-aware ones (fuzz/mutators.py): mutated
fixture files must load or raise ModelFormatError, UnsupportedLayerError or
ConfigError, each within 2 s. (The long runs are done by hand, see the
harness's docstring.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
import fuzz_loaders  # noqa: E402

TARGETS = fuzz_loaders.targets()


@pytest.mark.parametrize("loader", list(TARGETS))
def test_short_fuzz_run(loader):
    stats = fuzz_loaders.run(
        TARGETS[loader],
        count=100,
        seed=20261121,
        timeout=2.0,
        max_rss_mb=float("inf"),  # ru_maxrss is the whole test process' peak
        quiet=True,
        save=False,
    )
    if "skipped" in stats:
        pytest.skip(stats["skipped"])
    assert stats["inputs"] == 100
    assert not stats["findings"], stats["findings"][:5]
