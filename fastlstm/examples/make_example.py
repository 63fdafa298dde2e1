"""Writes example_stack.npz: the canonical weights of a two-layer LSTM stack
(16 features -> LSTM 64 -> LSTM 32) used by `fastlstm demo`. Deterministic;
run `python fastlstm/examples/make_example.py` to rebuild it."""

from pathlib import Path

import numpy as np


def main() -> None:
    rng = np.random.default_rng(2026)
    arrays = {}
    for k, (n_in, units) in enumerate([(16, 64), (64, 32)]):
        s = 1.0 / np.sqrt(n_in + units)
        bias = rng.normal(0, 0.1, 4 * units)
        bias[units : 2 * units] += 1.0  # forget gate bias, as Keras initializes it
        arrays[f"layer{k}/kernel"] = rng.normal(0, s, (n_in, 4 * units))
        arrays[f"layer{k}/recurrent_kernel"] = rng.normal(0, s, (units, 4 * units))
        arrays[f"layer{k}/bias"] = bias
    out = Path(__file__).with_name("example_stack.npz")
    np.savez_compressed(out, **{k: v.astype(np.float32) for k, v in arrays.items()})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
