"""The benchmark's report: the machine, a Markdown table with each peer's
time as a ratio to fastlstm's, the JSON of every figure, and one PNG plot
per case."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from fastlstm import _core
from fastlstm.bench.cases import CASES

# column order; engines a row names beyond these follow them
ENGINES = ("fastlstm", "onnxruntime", "pytorch", "numpy", "keras")


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "amx": _core.amx_available(),
        "woven": _core.woven_available(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def engines_of(rows: list) -> list:
    seen = {name for row in rows for name in row["results"]}
    return [e for e in ENGINES if e in seen] + sorted(seen - set(ENGINES))


def _time(result: dict) -> float:
    return result.get("us", result.get("us_per_step", float("nan")))


def _header(report: dict) -> list:
    m = report["machine"]
    where = f"Machine: {m['cpu']}, {m['cores']} cores"
    if m.get("woven"):
        where += (
            "; fastlstm's batch-1 input projections woven into the recurrent "
            "products (AVX-512)"
        )
    if m.get("amx"):
        where += "; its other input projections on AMX tiles"
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return [
        f"{where}; Python {m['python']}; {versions}",
        "Threads: 1 per engine (BLAS via threadpoolctl, torch.set_num_threads, ORT "
        "intra_op_num_threads, TF intra-op) unless the case says 2.",
        "",
    ]


def markdown(report: dict) -> str:
    rows = report["rows"]
    names = engines_of(rows)
    lines = _header(report) + [
        "| case | " + " | ".join(names) + " | fastlstm GFLOP/s | max abs diff vs "
        "fastlstm |",
        "|" + "---|" * (len(names) + 3),
    ]
    for row in rows:
        res = row["results"]
        base = res["fastlstm"]["seconds"]
        cells = []
        for name in names:
            r = res.get(name)
            if r is None:
                cells.append("–")
            elif name == "fastlstm":
                cells.append(f"**{_time(r):.2f} us**")
            else:
                cells.append(f"{_time(r):.2f} us ({r['seconds'] / base:.1f}x)")
        diffs = ", ".join(
            f"{n} {r['max_abs_diff']:.1e}"
            for n, r in res.items()
            if n != "fastlstm" and r.get("max_abs_diff") is not None
        )
        gflops = res["fastlstm"]["gflops"]
        lines.append(
            f"| {row['case']} | "
            + " | ".join(cells)
            + f" | {'–' if np.isnan(gflops) else f'{gflops:.1f}'} | {diffs} |"
        )
    lines += [
        "",
        "Times are per step (streaming and sequence cases) or per call "
        "(model cases); (Nx) = peer time / fastlstm time.",
    ]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def plot_cases(report: dict, out: Path) -> list:
    """One bar chart per case (log scale, every engine of its rows), as
    <out>/case_<letter>.png; the paths written, or none with a note when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report["notes"].append("plots skipped: matplotlib not installed")
        return []
    written = []
    for letter, title in CASES.items():
        rows = [r for r in report["rows"] if r["case"].startswith(letter + " ")]
        if not rows:
            continue
        names = engines_of(rows)
        fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 2), 4.2))
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            vals = [_time(r["results"].get(name, {})) for r in rows]
            offset = (k - (len(names) - 1) / 2) * width
            ax.bar(np.arange(len(rows)) + offset, vals, width, label=name)
        ax.set_xticks(
            np.arange(len(rows)),
            [r["case"][2:] for r in rows],
            rotation=15,
            ha="right",
            fontsize=8,
        )
        ax.set_yscale("log")
        ax.set_ylabel("microseconds (log; lower is better)")
        ax.set_title(f"{letter}: {title}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"case_{letter}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
