"""fastlstm against its peers, same weights, one run.

    python benchmarks/run.py [--quick] [--out benchmarks/results]

Cases (float32, 1 thread unless said; medians over repeated timed runs after
warm-up; load and warm-up excluded):
  a  streaming step from Python, batch 1, 64 features, H in 32..512
  b  whole sequence, batch 1, T=1000, features = H, H in 32..512
  c  batches: B=64, T=100, I=128, H=256 and B=64, T=1000, I=128, H=512
  d  the bundled Keras model: fastlstm Model.predict vs Keras predict
  e  2 threads: case a and b at H=512

Each row gives the time, GFLOP/s, the ratio of each peer's time to
fastlstm's, and the max abs difference of each peer's output from
fastlstm's. Peers that are not installed are skipped with a note. Keras
runs in a subprocess (TensorFlow and PyTorch do not share a process well).
Writes <out>/latest.md, latest.json and latest.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402

FORGET = slice(1, 2)  # the f block, in units of H


def weights(I: int, H: int, seed: int = 0) -> dict:
    """Well-conditioned weights: N(0, 0.1), forget-gate bias +1."""
    rng = np.random.default_rng(seed)
    b = rng.normal(0, 0.1, 4 * H).astype(np.float32)
    b[H : 2 * H] += 1.0
    return {
        "kernel": rng.normal(0, 0.1, (I, 4 * H)).astype(np.float32),
        "recurrent_kernel": rng.normal(0, 0.1, (H, 4 * H)).astype(np.float32),
        "bias": b,
    }


def gru_weights(I: int, H: int, seed: int = 0) -> dict:
    """Well-conditioned GRU weights: N(0, 0.1), gate blocks z, r, n."""
    rng = np.random.default_rng(seed)
    return {
        "cell": "gru",
        "kernel": rng.normal(0, 0.1, (I, 3 * H)).astype(np.float32),
        "recurrent_kernel": rng.normal(0, 0.1, (H, 3 * H)).astype(np.float32),
        "bias": rng.normal(0, 0.1, 3 * H).astype(np.float32),
        "recurrent_bias": rng.normal(0, 0.1, 3 * H).astype(np.float32),
    }


def decaying_weights(I: int, H: int) -> dict:
    """A state that decays through the denormal range: forget gate ~0.05, no
    candidate input, so c and h shrink ~20x per step and pass 1e-38 within
    about 30 steps. Engines that do not flush denormals slow down."""
    rng = np.random.default_rng(5)
    b = np.zeros(4 * H, np.float32)
    b[H : 2 * H] = -3.0  # forget
    b[:H] = 2.0  # input gate open, but the candidate g = tanh(0) = 0
    return {
        "kernel": np.zeros((I, 4 * H), np.float32),
        "recurrent_kernel": rng.normal(0, 1e-3, (H, 4 * H)).astype(np.float32),
        "bias": b,
    }


def flops_per_step(I: int, H: int, B: int = 1, gates: int = 4) -> float:
    return 2.0 * B * gates * H * (I + H)


def gates_of(w: dict) -> int:
    return 3 if w.get("cell") == "gru" else 4


def median_time(fn, arg, quick: bool) -> float:
    """Median seconds per call: each sample runs enough calls for >= 20 ms
    (5 ms in quick mode)."""
    return median_times([(fn, arg)], quick)[0]


def median_times(calls: list, quick: bool) -> list:
    """median_time of each (fn, arg) in calls, their samples taken in turn
    (one sample of each, then the next round): a slow spell of a shared
    host then falls on every engine of the case alike instead of on
    whichever was being timed, and the ratios stay fair. Only for engines
    on one thread: a multi-threaded engine's workers spin for a while after
    each call (OpenBLAS, ONNX Runtime) and would slow the next engine."""
    target = 0.005 if quick else 0.02
    inner = []
    for fn, arg in calls:
        fn(arg)
        t0 = time.perf_counter()
        fn(arg)
        one = max(time.perf_counter() - t0, 1e-7)
        inner.append(max(1, int(target / one)))
    samples: list = [[] for _ in calls]
    for _ in range(5 if quick else 11):
        for (fn, arg), n, out in zip(calls, inner, samples):
            t0 = time.perf_counter()
            for _ in range(n):
                fn(arg)
            out.append((time.perf_counter() - t0) / n)
    return [float(np.median(s)) for s in samples]


class Timings:
    """Median seconds of each engine's call. On one thread the calls are
    timed together at the end, interleaved (see median_times). On several,
    each is timed as soon as it is added, right after that engine's own
    accuracy pass: another engine's pass just before would leave its BLAS
    or ONNX Runtime workers spinning on the cores this one needs (one run
    put fastlstm's 2-thread step at 276 us instead of 40 that way)."""

    def __init__(self, threads: int, quick: bool) -> None:
        self.threads, self.quick = threads, quick
        self.calls: list = []
        self.seconds: list = []

    def add(self, fn, arg) -> None:
        if self.threads == 1:
            self.calls.append((fn, arg))
        else:
            self.seconds.append(median_time(fn, arg, self.quick))

    def result(self) -> list:
        if self.threads == 1:
            return median_times(self.calls, self.quick)
        return self.seconds


def make_engines(threads: int, notes: list) -> list:
    engines = [peers.FastLSTM(threads)]
    for cls in (peers.OnnxRuntime, peers.Torch, peers.NumPy):
        try:
            engines.append(cls(threads) if cls is not peers.NumPy else cls())
        except ImportError as exc:
            notes.append(f"{cls.name} skipped: not installed ({exc.name})")
    return engines


def run_step_case(engines, H, I, threads, quick, w=None, label=None):
    w = weights(I, H) if w is None else w
    x = np.random.default_rng(1).normal(size=(1, I)).astype(np.float32)
    xs = np.random.default_rng(2).normal(size=(50, 1, I)).astype(np.float32)
    default = f"a step H={H}" if threads == 1 else f"e step H={H} 2 threads"
    row = {
        "case": label or default,
        "H": H,
        "I": I,
        "B": 1,
        "T": 1,
        "threads": threads,
        "results": {},
    }
    ref = None
    diffs, timings = {}, Timings(threads, quick)
    for eng in engines:
        fn, final = eng.step(w, 1)
        for x_t in xs:  # accuracy: 50 steps from a zero state
            fn(x_t)
        h = np.asarray(final(), np.float32)
        ref = h if ref is None else ref
        diffs[eng.name] = float(np.abs(h - ref).max())
        timings.add(eng.step(w, 1)[0], x)
    for eng, sec in zip(engines, timings.result()):
        row["results"][eng.name] = {
            "seconds": sec,
            "us": sec * 1e6,
            "gflops": flops_per_step(I, H, 1, gates_of(w)) / sec / 1e9,
            "max_abs_diff": diffs[eng.name],
        }
    return row


def run_seq_case(
    engines, B, T, I, H, threads, quick, label, keras_result=None, w=None, x=None
):
    w = weights(I, H) if w is None else w
    if x is None:
        x = np.random.default_rng(3).normal(size=(B, T, I)).astype(np.float32)
    row = {
        "case": label,
        "H": H,
        "I": I,
        "B": B,
        "T": T,
        "threads": threads,
        "results": {},
    }
    ref = None
    timed, diffs, timings = [], {}, Timings(threads, quick)
    for eng in engines:
        if quick and eng.name == "numpy" and B * T * H > 64 * 100 * 256:
            continue
        fn = eng.seq(w)
        y = np.asarray(fn(x), np.float32)
        ref = y if ref is None else ref
        diffs[eng.name] = float(np.abs(y - ref).max())
        timed.append(eng)
        timings.add(fn, x)
    for eng, sec in zip(timed, timings.result()):
        row["results"][eng.name] = {
            "seconds": sec,
            "us_per_step": sec / T * 1e6,
            "gflops": flops_per_step(I, H, B, gates_of(w)) * T / sec / 1e9,
            "max_abs_diff": diffs[eng.name],
        }
    if keras_result is not None:
        kr = dict(keras_result)
        y = kr.pop("y")
        kr["max_abs_diff"] = float(np.abs(y - ref).max())
        kr["us_per_step"] = kr["seconds"] / T * 1e6
        kr["gflops"] = flops_per_step(I, H, B) * T / kr["seconds"] / 1e9
        row["results"]["keras"] = kr
    return row


def memory_note(B: int, T: int, I: int, H: int) -> str:
    """Peak memory of one stateless call (tracemalloc: NumPy arrays and the
    kernel's workspace) plus the packed weights, against the call's own
    weights + inputs + outputs."""
    import tracemalloc

    import fastlstm

    w = weights(I, H)
    layer = fastlstm.LSTM(*w.values(), return_sequences=True, threads=1)
    x = np.random.default_rng(4).normal(size=(B, T, I)).astype(np.float32)
    layer(x)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    y = layer(x)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    packed = 4 * 4 * H * (I + H)
    data = packed + x.nbytes + y.nbytes
    return (
        f"memory, B={B} T={T} I={I} H={H}: peak {(peak + packed) / 1e6:.1f} MB "
        f"for {data / 1e6:.1f} MB of weights + inputs + outputs "
        f"({(peak + packed) / data:.2f}x)"
    )


# -- Keras, in its own process -------------------------------------------------


def keras_worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    threads = spec["threads"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    eng = peers.Keras(threads)
    out = {"version": eng.version(), "seq": {}, "model": {}}
    arrays = {}
    for key, (B, T, I, H) in spec["seq"].items():
        x = np.random.default_rng(3).normal(size=(B, T, I)).astype(np.float32)
        fn = eng.seq(weights(I, H))
        arrays[f"seq_{key}"] = np.asarray(fn(x), np.float32)
        out["seq"][key] = {"seconds": median_time(fn, x, spec["quick"])}
    if spec.get("model"):
        try:  # the bundled model is a tf.keras file: tf_keras reads it natively
            import tf_keras as model_keras

            out["model_keras"] = f"tf_keras {model_keras.__version__}"
        except ImportError:
            model_keras = eng.keras
        model = model_keras.models.load_model(spec["model"], compile=False)
        for key, x in np.load(spec["model_inputs"]).items():
            fn = lambda a: model.predict(a, verbose=0)  # noqa: E731
            arrays[f"model_{key}"] = np.asarray(fn(x), np.float32)
            out["model"][key] = {"seconds": median_time(fn, x, spec["quick"])}
    np.savez(spec["arrays"], **arrays)
    Path(spec["result"]).write_text(json.dumps(out))


def run_keras(seq_cases: dict, model_path, model_inputs, threads, quick, notes):
    tmp = Path(tempfile.mkdtemp())
    spec = {
        "seq": seq_cases,
        "threads": threads,
        "quick": quick,
        "model": str(model_path) if model_path else None,
        "model_inputs": str(model_inputs) if model_inputs else None,
        "arrays": str(tmp / "arrays.npz"),
        "result": str(tmp / "result.json"),
    }
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--keras-worker", str(tmp / "spec.json")],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        notes.append(f"keras skipped: {last}")
        return None
    result = json.loads((tmp / "result.json").read_text())
    arrays = dict(np.load(tmp / "arrays.npz"))
    return result, arrays


# -- report ----------------------------------------------------------------------


def machine() -> dict:
    from fastlstm import _core

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


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores"
        + (
            "; fastlstm's batch-1 input projections woven into the recurrent "
            "products (AVX-512)"
            if m.get("woven")
            else ""
        )
        + ("; its other input projections on AMX tiles" if m.get("amx") else "")
        + f"; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "Threads: 1 per engine (BLAS via threadpoolctl, torch.set_num_threads, ORT "
        "intra_op_num_threads, TF intra-op) unless the case says 2.",
        "",
        "| case | fastlstm | onnxruntime | pytorch | numpy | keras | fastlstm GFLOP/s "
        "| max abs diff vs fastlstm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        res = row["results"]
        unit = "us" if "us" in res.get("fastlstm", {}) else "us_per_step"
        base = res["fastlstm"]["seconds"]
        cells = []
        for name in ("fastlstm", "onnxruntime", "pytorch", "numpy", "keras"):
            r = res.get(name)
            if r is None:
                cells.append("–")
            elif name == "fastlstm":
                cells.append(f"**{r[unit]:.2f} us**")
            else:
                cells.append(f"{r[unit]:.2f} us ({r['seconds'] / base:.1f}x)")
        diffs = ", ".join(
            f"{n} {r['max_abs_diff']:.1e}" for n, r in res.items() if n != "fastlstm"
        )
        lines.append(
            f"| {row['case']} | "
            + " | ".join(cells)
            + f" | {res['fastlstm']['gflops']:.1f} | {diffs} |"
        )
    lines += [
        "",
        "Times are per step (streaming and sequence cases) or per call "
        "(model cases); (Nx) = peer time / fastlstm time.",
    ]
    for note in report["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report["notes"].append("plot skipped: matplotlib not installed")
        return
    rows = [r for r in report["rows"] if r["case"][0] in "ab"]
    names = ["fastlstm", "onnxruntime", "pytorch", "numpy", "keras"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.16
    for k, name in enumerate(names):
        vals = [
            r["results"]
            .get(name, {})
            .get("us", r["results"].get(name, {}).get("us_per_step", np.nan))
            for r in rows
        ]
        ax.bar(np.arange(len(rows)) + (k - 2) * width, vals, width, label=name)
    ax.set_xticks(
        np.arange(len(rows)),
        [r["case"] for r in rows],
        rotation=20,
        ha="right",
        fontsize=8,
    )
    ax.set_yscale("log")
    ax.set_ylabel("microseconds per step (log)")
    ax.set_title("LSTM inference, 1 thread, float32 (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer sizes, < 2 minutes")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--keras-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.keras_worker:
        keras_worker(args.keras_worker)
        return 0

    from threadpoolctl import threadpool_limits

    import fastlstm

    notes: list = []
    report = {
        "machine": machine(),
        "versions": {"fastlstm": fastlstm.__version__},
        "rows": [],
        "notes": notes,
    }
    quick = args.quick
    step_sizes = [32, 128, 512] if quick else [32, 64, 128, 256, 512]
    seq_sizes = [32, 128, 512] if quick else [32, 128, 256, 512]
    batch_cases = [(64, 100, 128, 256)] + ([] if quick else [(64, 1000, 128, 512)])

    # Keras first, in its own process, on the same weights and inputs
    seq_cases = {f"b{H}": (1, 1000, H, H) for H in seq_sizes}
    seq_cases.update({f"c{B}x{T}x{H}": (B, T, I, H) for B, T, I, H in batch_cases})
    files = fastlstm.__file__.rsplit("/", 1)[0] + "/examples"
    model_path = Path(files) / "example_model.h5"
    io = dict(np.load(Path(files) / "example_io.npz"))
    model_inputs = Path(tempfile.mkdtemp()) / "inputs.npz"
    np.savez(model_inputs, batch1=io["x"][:1], batch32=np.repeat(io["x"], 4, axis=0))
    keras = run_keras(seq_cases, model_path, model_inputs, 1, quick, notes)
    if keras:
        report["versions"]["keras"] = keras[0]["version"]

    with threadpool_limits(1):
        engines = make_engines(1, notes)
        for eng in engines:
            report["versions"][eng.name] = eng.version()
        for H in step_sizes:
            report["rows"].append(run_step_case(engines, H, 64, 1, quick))
        for H in seq_sizes:
            kr = None
            if keras:
                kr = {**keras[0]["seq"][f"b{H}"], "y": keras[1][f"seq_b{H}"]}
            report["rows"].append(
                run_seq_case(
                    engines, 1, 1000, H, H, 1, quick, f"b seq B=1 T=1000 H={H}", kr
                )
            )
        for B, T, I, H in batch_cases:
            key = f"c{B}x{T}x{H}"
            kr = None
            if keras:
                kr = {**keras[0]["seq"][key], "y": keras[1][f"seq_{key}"]}
            report["rows"].append(
                run_seq_case(
                    engines, B, T, I, H, 1, quick, f"c batch B={B} T={T} H={H}", kr
                )
            )
        # d: the bundled Keras model
        model = fastlstm.load(model_path)
        for key, x in np.load(model_inputs).items():
            y = model.predict(x)
            sec = median_time(model.predict, x, quick)
            row = {
                "case": f"d Keras model predict, {key}",
                "results": {
                    "fastlstm": {
                        "seconds": sec,
                        "us": sec * 1e6,
                        "gflops": float("nan"),
                        "max_abs_diff": 0.0,
                    }
                },
            }
            if keras:
                ks = keras[0]["model"][key]["seconds"]
                row["results"]["keras"] = {
                    "seconds": ks,
                    "us": ks * 1e6,
                    "gflops": float("nan"),
                    "max_abs_diff": float(np.abs(keras[1][f"model_{key}"] - y).max()),
                }
            report["rows"].append(row)

        # g: GRU layers (reset_after, PyTorch's and Keras' default)
        for H in step_sizes if quick else [32, 128, 512]:
            report["rows"].append(
                run_step_case(
                    engines, H, 64, 1, quick, gru_weights(64, H), f"g GRU step H={H}"
                )
            )
        for H in seq_sizes if quick else [32, 128, 512]:
            report["rows"].append(
                run_seq_case(
                    engines,
                    1,
                    1000,
                    H,
                    H,
                    1,
                    quick,
                    f"g GRU seq B=1 T=1000 H={H}",
                    w=gru_weights(H, H),
                )
            )
        report["rows"].append(
            run_seq_case(
                engines,
                64,
                100,
                128,
                256,
                1,
                quick,
                "g GRU batch B=64 T=100 H=256",
                w=gru_weights(128, 256),
            )
        )

        # f: a state decaying through denormals, from a non-zero start
        H = 128
        xd = np.zeros((1, 1000, H), np.float32)
        xd[:, 0] = 1.0
        wd = decaying_weights(H, H)
        wd["kernel"][:, 2 * H : 3 * H] = 0.5  # the first step writes a state
        report["rows"].append(
            run_seq_case(
                engines,
                1,
                1000,
                H,
                H,
                1,
                quick,
                "f decaying state (denormals) H=128",
                w=wd,
                x=xd,
            )
        )

    with threadpool_limits(2):
        engines2 = make_engines(2, [])
        report["rows"].append(run_step_case(engines2, 512, 64, 2, quick))
        report["rows"].append(
            run_seq_case(
                engines2,
                1,
                1000,
                512,
                512,
                2,
                quick,
                "e seq B=1 T=1000 H=512 2 threads",
            )
        )

    for B, T, I, H in [(1, 1000, 512, 512)] + batch_cases:
        notes.append(memory_note(B, T, I, H))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(report, out / "latest.png")
    (out / "latest.md").write_text(markdown(report))
    (out / "latest.json").write_text(json.dumps(report, indent=1, default=float))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
