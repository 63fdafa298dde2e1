"""Mutation fuzzer for fastlstm's model loaders.

Seeds are the real fixtures in tests/fixtures/. Each input is a seed either
with a few byte mutations (bit flips, byte overwrites with interesting
values, inserts, deletes, truncation, block duplication, splices with
another seed) or rebuilt by a structure-aware mutator of its format
(fuzz/mutators.py: pickle opcodes over the allow-list, HDF5 storage,
filters, external files and types, JSON trees, ONNX attributes and shapes,
TF1 index entries, .npy headers), written to a temporary folder and passed
to ``fastlstm.load`` in-process. ``--mode`` picks bytes, structure, or
both (mixed, the default: half each).

Allowed outcomes: a successful load, ModelFormatError, UnsupportedLayerError
or ConfigError. Anything else (another exception type, more than
--timeout seconds for one input, one load adding more than --max-rss-mb to
the process' RSS, measured by resetting Linux's peak RSS record before it)
is a finding: the input is saved under fuzz/findings/<loader>/ with a .txt
beside it naming the outcome and traceback.

    python fuzz/fuzz_loaders.py --loader keras_h5 --count 100000 --seed 1
    python fuzz/fuzz_loaders.py --loader onnx --mode structure --count 20000
    python fuzz/fuzz_loaders.py --loader all --count 1000 --seed 1

A crash of the interpreter itself (segfault) ends the run: the input being
tried is always in fuzz/findings/<loader>/current.bin until it completes.
"""

from __future__ import annotations

import argparse
import faulthandler
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
FINDINGS = Path(__file__).resolve().parent / "findings"

sys.path.insert(0, str(ROOT))
import mutators  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm.errors import (  # noqa: E402
    ConfigError,
    ModelFormatError,
    UnsupportedLayerError,
)

ALLOWED = (ModelFormatError, UnsupportedLayerError, ConfigError)
INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF]
INTERESTING_WORDS = [
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\xff\xff\xff\x7f",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x00\x00\x00\x00\x00\x00\x00\x40",
]


@dataclass
class Target:
    """A loader under test: its seeds and how to load one mutated input."""

    name: str
    seeds: list[Path]
    suffix: str
    load: Callable[[Path, Path], object] = None  # (mutated file, seed) -> model
    # (seed bytes, rng, work folder) -> a structurally mutated file's bytes
    structured: Callable[[bytes, random.Random, Path], bytes] | None = None
    extra: dict = field(default_factory=dict)


def _keras_weights_config(seed: Path) -> Path:
    return seed.parent / "arch.json"


def _load_plain(path: Path, seed: Path) -> object:
    return fastlstm.load(path)


def _load_torch(path: Path, seed: Path) -> object:
    """batch_first given, so loads get past it (a state_dict lacks it)."""
    return fastlstm.load(path, batch_first=False)


def _load_weights(path: Path, seed: Path) -> object:
    return fastlstm.load(path, config=_keras_weights_config(seed))


def _load_tf1(path: Path, seed: Path) -> object:
    """``path`` is the mutated .index (or .data) file; the other file of
    the pair is copied beside it from the seed's folder."""
    folder = path.parent
    prefix = folder / "model.ckpt"
    for f in seed.parent.glob("model.ckpt.*"):
        dst = folder / f.name
        if dst != path and not dst.exists():
            shutil.copy(f, dst)
    return fastlstm.load(prefix)


def _is_zip(p: Path) -> bool:
    return p.read_bytes()[:2] == b"PK"


def targets() -> dict[str, Target]:
    keras = FIXTURES / "keras"
    torch = FIXTURES / "torch"
    tf1 = FIXTURES / "tf1"
    pts = sorted(torch.glob("*/model.pt"))
    t = {
        "keras_h5": Target("keras_h5", sorted(keras.glob("*/model.h5")), ".h5"),
        "keras_zip": Target("keras_zip", sorted(keras.glob("*/model.keras")), ".keras"),
        "keras_weights": Target(
            "keras_weights",
            sorted(keras.glob("*/model_weights.h5"))
            + sorted(keras.glob("*/model.weights.h5")),
            ".weights.h5",
            _load_weights,
        ),
        "torch_zip": Target(
            "torch_zip", [p for p in pts if _is_zip(p)], ".pt", _load_torch
        ),
        "torch_legacy": Target(
            "torch_legacy", [p for p in pts if not _is_zip(p)], ".pt", _load_torch
        ),
        "safetensors": Target(
            "safetensors",
            sorted(torch.glob("*/*.safetensors")),
            ".safetensors",
            _load_torch,
        ),
        "tf1_index": Target(
            "tf1_index", sorted(tf1.glob("*/model.ckpt.index")), "", _load_tf1
        ),
        "tf1_data": Target(
            "tf1_data", sorted(tf1.glob("*/model.ckpt.data-*")), "", _load_tf1
        ),
        "onnx": Target(
            "onnx", sorted((FIXTURES / "onnx").glob("*/model.onnx")), ".onnx"
        ),
    }
    t["npz"] = Target("npz", sorted(tf1.glob("*/variables.npz")), ".npz")
    structured = {
        "keras_h5": lambda d, r, w: mutators.mutate_hdf5(d, r, w),
        "keras_weights": lambda d, r, w: mutators.mutate_hdf5(d, r, w),
        "keras_zip": mutators.mutate_keras_zip,
        "torch_zip": lambda d, r, w: mutators.mutate_torch_zip(d, r),
        "torch_legacy": lambda d, r, w: mutators.mutate_torch_legacy(d, r),
        "safetensors": lambda d, r, w: mutators.mutate_safetensors(d, r),
        "tf1_index": lambda d, r, w: mutators.mutate_tf1_index(d, r),
        "onnx": lambda d, r, w: mutators.mutate_onnx(d, r),
        "npz": lambda d, r, w: mutators.mutate_npz(d, r),
    }
    for target in t.values():
        if target.load is None:
            target.load = _load_plain
        target.structured = structured.get(target.name)
    return t


def make_input(
    target: Target, seed: bytes, rng: random.Random, others: list, work: Path, mode: str
) -> bytes:
    """One input: a structural mutation (when the target has a mutator and
    the mode asks for one) or byte mutations. A mutator that cannot handle
    its seed falls back to bytes."""
    if target.structured is not None and (
        mode == "structure" or (mode == "mixed" and rng.random() < 0.5)
    ):
        try:
            return target.structured(seed, rng, work)
        except Exception:  # noqa: BLE001 - the mutator's problem, not the loader's
            pass
    return mutate(seed, rng, others)


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """1 to 8 random mutations (rarely a splice or truncation)."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        n = len(buf)
        op = rng.randrange(10)
        if n == 0:
            buf += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
            continue
        i = rng.randrange(n)
        if op <= 2:  # flip one bit
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 3:  # an interesting byte
            buf[i] = rng.choice(INTERESTING)
        elif op == 4:  # an interesting 32/64-bit word (sizes, offsets, counts)
            w = rng.choice(INTERESTING_WORDS)
            buf[i : i + len(w)] = w
        elif op == 5:  # random bytes overwrite
            k = rng.randrange(1, 9)
            buf[i : i + k] = bytes(rng.randrange(256) for _ in range(k))
        elif op == 6:  # insert
            k = rng.randrange(1, 9)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(k))
        elif op == 7:  # delete
            del buf[i : i + rng.randrange(1, 17)]
        elif op == 8:  # duplicate a block elsewhere
            k = rng.randrange(1, 65)
            j = rng.randrange(n)
            buf[j:j] = buf[i : i + k]
        else:  # truncate, or splice with another seed
            if others and rng.random() < 0.5:
                other = rng.choice(others)
                j = rng.randrange(len(other)) if other else 0
                buf = buf[:i] + bytearray(other[j:])
            else:
                del buf[i:]
    return bytes(buf)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> float | None:
    """Resets the kernel's record of peak RSS (Linux: clear_refs 5) and
    returns the RSS now, so that what one load adds can be measured apart
    from what the mutators and earlier inputs used; None where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return None


def load_peak_mb(start: float | None) -> float:
    """Peak RSS added since reset_peak (the whole peak where no reset)."""
    if start is None:
        return peak_rss_mb()
    return _status_mb("VmHWM") - start


def record(target: Target, index: int, data: bytes, what: str) -> Path:
    folder = FINDINGS / target.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"input_{index:07d}{target.suffix or '.bin'}"
    path.write_bytes(data)
    path.with_suffix(path.suffix + ".txt").write_text(what)
    return path


def run(
    target: Target,
    count: int,
    seed: int,
    timeout: float = 2.0,
    max_rss_mb: float = 1024.0,
    quiet: bool = False,
    save: bool = True,
    mode: str = "mixed",
) -> dict:
    """Fuzzes one loader; returns counts of each outcome and the findings."""
    if target.name == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            return {"skipped": "the onnx package is not installed"}
    if not target.seeds:
        return {"skipped": "no seed files"}
    rng = random.Random(f"{target.name}:{seed}")
    seeds = [(p, p.read_bytes()) for p in target.seeds]
    others = [d for _, d in seeds]
    stats: dict = {"inputs": 0, "loaded": 0, "findings": [], "slowest_s": 0.0}
    current = FINDINGS / target.name / "current.bin"
    if save:
        current.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fastlstm-fuzz-") as tmp:
        tmp = Path(tmp)
        for k in range(count):
            seed_path, seed_data = rng.choice(seeds)
            work = tmp / f"{k % 2}"
            work.mkdir(exist_ok=True)
            for f in work.iterdir():
                f.unlink()
            data = make_input(target, seed_data, rng, others, work, mode)
            name = seed_path.name if target.name.startswith("tf1") else "input"
            path = work / (
                name + ("" if target.name.startswith("tf1") else target.suffix)
            )
            path.write_bytes(data)
            if save:
                current.write_bytes(data)
            start_rss = reset_peak()
            t0 = time.perf_counter()
            problem = None
            # a real hang (inside libhdf5, say) cannot be interrupted from
            # Python: the watchdog prints every thread's stack and exits, and
            # current.bin keeps the input that hung
            faulthandler.dump_traceback_later(max(30.0, 10 * timeout), exit=True)
            try:
                target.load(path, seed_path)
                stats["loaded"] += 1
            except ALLOWED as exc:
                name = type(exc).__name__
                stats[name] = stats.get(name, 0) + 1
                if not str(exc).strip():
                    problem = f"{name} with an empty message"
            except BaseException as exc:  # noqa: BLE001 - every other outcome is a finding
                if isinstance(exc, KeyboardInterrupt):
                    raise
                problem = f"{type(exc).__module__}.{type(exc).__name__}: {exc}\n" + (
                    traceback.format_exc()
                )
            elapsed = time.perf_counter() - t0
            faulthandler.cancel_dump_traceback_later()
            stats["slowest_s"] = max(stats["slowest_s"], elapsed)
            if problem is None and elapsed > timeout:
                problem = f"took {elapsed:.2f} s (limit {timeout} s)"
            added = load_peak_mb(start_rss)
            stats["max_load_mb"] = max(stats.get("max_load_mb", 0.0), round(added))
            if problem is None and added > max_rss_mb:
                problem = (
                    f"the load added {added:.0f} MB of RSS (limit {max_rss_mb} MB)"
                )
            stats["inputs"] += 1
            if problem is not None:
                where = (
                    record(target, k, data, f"seed {seed_path}\n{problem}")
                    if save
                    else None
                )
                stats["findings"].append((k, str(where), problem.splitlines()[0]))
                if not quiet:
                    print(
                        f"[{target.name}] input {k}: {problem.splitlines()[0]}",
                        flush=True,
                    )
            if not quiet and k and k % 5000 == 0:
                rate = k / (time.perf_counter() - t_start)
                print(
                    f"[{target.name}] {k} inputs, {rate:.0f}/s, {_summary(stats)}",
                    flush=True,
                )
    if save and current.exists():
        current.unlink()
    stats["seconds"] = round(time.perf_counter() - t_start, 1)
    stats["peak_rss_mb"] = round(peak_rss_mb())
    return stats


def _summary(stats: dict) -> str:
    keys = [k for k in stats if k not in ("findings",)]
    return (
        ", ".join(f"{k}={stats[k]}" for k in keys)
        + f", findings={len(stats['findings'])}"
    )


def main(argv: list[str] | None = None) -> int:
    all_targets = targets()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loader", default="all", choices=["all", *all_targets])
    ap.add_argument("--count", type=int, default=1000, help="inputs per loader")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per input")
    ap.add_argument("--max-rss-mb", type=float, default=1024.0)
    ap.add_argument("--mode", default="mixed", choices=["bytes", "structure", "mixed"])
    args = ap.parse_args(argv)
    names = list(all_targets) if args.loader == "all" else [args.loader]
    failed = False
    for name in names:
        stats = run(
            all_targets[name],
            args.count,
            args.seed,
            args.timeout,
            args.max_rss_mb,
            mode=args.mode,
        )
        if "skipped" in stats:
            print(f"[{name}] skipped: {stats['skipped']}")
            continue
        print(f"[{name}] done: {_summary(stats)}", flush=True)
        failed |= bool(stats["findings"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
