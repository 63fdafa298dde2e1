"""Call overhead of an exported model: nn.LSTM(I=H=32) + nn.Linear, exported
with ``torch.onnx.export(..., dynamo=False)``, run at B=1, T=200 by fastlstm
and by ONNX Runtime on one thread (median of repeated calls after a
warm-up), with and without dynamic axes. The two engines alternate in
rounds (the VM's speed drifts between seconds); the table gives the medians
over rounds and the range of the per-round ratios.

    python benchmarks/onnx_overhead.py [--calls 1000] [--rounds 7]

Needs torch, onnx and onnxruntime. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import platform
import time
import warnings

import numpy as np


def median_us(fn, calls: int) -> float:
    for _ in range(200):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import onnx
    import onnxruntime as ort
    import torch

    import fastlstm

    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(32, 32, batch_first=True)
            self.fc = torch.nn.Linear(32, 4)

        def forward(self, x):
            return self.fc(self.lstm(x)[0])

    net = Net().eval()
    x = torch.randn(1, 200, 32)
    xn = x.numpy()
    print(f"Machine: {platform.processor() or platform.machine()}; one thread\n")
    print(
        "| export | fastlstm | onnxruntime | ORT / fastlstm "
        "(rounds' range) | max abs diff |"
    )
    print("|---|---|---|---|---|")
    for dynamic in (False, True):
        f = io.BytesIO()
        axes = {"x": {0: "B", 1: "T"}} if dynamic else None
        torch.onnx.export(
            net, (x,), f, dynamo=False, input_names=["x"], dynamic_axes=axes
        )
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(
            f.getvalue(), so, providers=["CPUExecutionProvider"]
        )
        model = fastlstm.from_onnx(onnx.load_from_string(f.getvalue()))
        diff = float(np.abs(model(xn)[0] - sess.run(None, {"x": xn})[0]).max())
        rounds = []
        for _ in range(args.rounds):
            ours = median_us(lambda m=model: m(xn), args.calls)
            theirs = median_us(lambda s=sess: s.run(None, {"x": xn}), args.calls)
            rounds.append((ours, theirs, theirs / ours))
        ours, theirs, ratio = (float(np.median(c)) for c in zip(*rounds))
        lo, hi = min(r[2] for r in rounds), max(r[2] for r in rounds)
        label = "dynamic axes" if dynamic else "static shapes"
        print(
            f"| {label} | {ours:.1f} us | {theirs:.1f} us | "
            f"{ratio:.2f} ({lo:.2f}-{hi:.2f}) | {diff:.1e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
