"""Synthetic decoy-BB84 detection records for tests, demos and benchmarks.

Only the detected pulses are drawn (a 100 MHz pass has ~10^10 slots): slots are
a sorted random subset, each detection's intensity is drawn in proportion to
p_k·Q_k and it is an error with probability E_k, with the detection model of Ma,
Qi, Zhao, Lo, PRA 72, 012326 (2005): Q_k = Y0 + 1 - exp(-η μ_k),
E_k Q_k = Y0/2 + e_d (1 - exp(-η μ_k)). Bases are 50/50 at both ends; a
mismatched basis gives Bob a random bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from groundkey_protocol.qkd.sifting import Detections, SparsePulseTable

__all__ = ["SynthPass", "synthesize_pass"]


@dataclass(frozen=True, slots=True)
class SynthPass:
    """Alice's record and Bob's detections of one synthetic pass."""

    alice: SparsePulseTable
    bob: Detections
    pulses: int


def synthesize_pass(
    rng: np.random.Generator,
    *,
    detections: int,
    eta: float = 3.5e-4,
    y0: float = 1e-6,
    e_d: float = 0.012,
    intensities: tuple[float, float, float] = (0.8, 0.1, 0.0),
    probabilities: tuple[float, float, float] = (0.5, 0.25, 0.25),
) -> SynthPass:
    """``detections`` detection events with Micius-like defaults (QBER ≈ 1.3 %)."""
    mu = np.asarray(intensities, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    gain = y0 + 1.0 - np.exp(-eta * mu)
    err = (y0 / 2.0 + e_d * (1.0 - np.exp(-eta * mu))) / gain
    mean_gain = float((p * gain).sum())
    pulses = math.ceil(detections / mean_gain)
    gaps = rng.geometric(min(1.0, detections / pulses), size=detections).astype(np.int64)
    slots = np.cumsum(gaps)
    weights = p * gain / mean_gain
    level = rng.choice(3, size=detections, p=weights / weights.sum()).astype(np.uint8)
    a_basis = rng.integers(0, 2, detections, dtype=np.uint8)
    a_bit = rng.integers(0, 2, detections, dtype=np.uint8)
    b_basis = rng.integers(0, 2, detections, dtype=np.uint8)
    flip = (rng.random(detections) < err[level]).astype(np.uint8)
    random_bit = rng.integers(0, 2, detections, dtype=np.uint8)
    b_bit = np.where(a_basis == b_basis, a_bit ^ flip, random_bit).astype(np.uint8)
    return SynthPass(
        alice=SparsePulseTable(slots, a_basis, a_bit, level),
        bob=Detections(slots, b_basis, b_bit),
        pulses=pulses,
    )
