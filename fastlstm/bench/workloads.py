"""The weights and inputs every engine runs: canonical layouts (see
peers.py), well-conditioned (N(0, 0.1)) so that long sequences stay
accurate, and seeded so that every engine and process gets the same."""

from __future__ import annotations

import numpy as np


def weights(I: int, H: int, seed: int = 0) -> dict:
    """LSTM weights: N(0, 0.1), forget-gate bias +1."""
    rng = np.random.default_rng(seed)
    b = rng.normal(0, 0.1, 4 * H).astype(np.float32)
    b[H : 2 * H] += 1.0
    return {
        "kernel": rng.normal(0, 0.1, (I, 4 * H)).astype(np.float32),
        "recurrent_kernel": rng.normal(0, 0.1, (H, 4 * H)).astype(np.float32),
        "bias": b,
    }


def gru_weights(I: int, H: int, seed: int = 0) -> dict:
    """GRU weights: N(0, 0.1), gate blocks z, r, n."""
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


def sequence_input(B: int, T: int, I: int) -> np.ndarray:
    """The (B, T, I) input of sequence cases (the Keras process makes the
    same)."""
    return np.random.default_rng(3).normal(size=(B, T, I)).astype(np.float32)


def flops_per_step(I: int, H: int, B: int = 1, gates: int = 4) -> float:
    return 2.0 * B * gates * H * (I + H)


def gates_of(w: dict) -> int:
    return 3 if w.get("cell") == "gru" else 4
