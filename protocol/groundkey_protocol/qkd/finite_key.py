"""Finite-key security of decoy-state BB84 with three intensities.

Lim, Curty, Walenta, Xu, Zbinden, "Concise security bounds for practical
decoy-state quantum key distribution", PRA 89, 022307 (2014), eqs. (1)-(5) as
restated in REFERENCES §4. The key comes from the X basis, the phase error is
bounded from the Z basis. Natural logarithms appear in the Hoeffding terms
(ln(21/ε_sec)) and in γ's ``c·d·ln 2``; every other logarithm is base 2.

Intensities are ordered μ1 > μ2 + μ3, μ2 > μ3 >= 0 (signal, decoy, vacuum-ish).
Counts are per intensity k (index 0, 1, 2 for μ1, μ2, μ3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DecoyCounts", "FiniteKey", "binary_entropy", "finite_key_length", "gamma"]


def binary_entropy(p: float) -> float:
    """h(p) in bits; 0 at p <= 0 or p >= 1."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


def gamma(a: float, b: float, c: float, d: float) -> float:
    """γ(a, b, c, d) of Lim et al. (b → 0 or 1 gives the limit 0)."""
    if b <= 0.0 or b >= 1.0:
        return 0.0
    inner = (c + d) / (c * d * (1.0 - b) * b) * 21.0**2 / a**2
    return math.sqrt((c + d) * (1.0 - b) * b / (c * d * math.log(2.0)) * math.log2(inner))


@dataclass(frozen=True, slots=True)
class DecoyCounts:
    """Sifted detections per intensity and basis, and Z-basis errors per intensity.

    Counts are observed integers in a protocol run; expected (float) counts work too.
    """

    intensities: tuple[float, float, float]
    probabilities: tuple[float, float, float]
    n_x: tuple[float, float, float]
    n_z: tuple[float, float, float]
    m_z: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class FiniteKey:
    """Bounds and key length of one block; ``key_bits`` <= 0 means no key (see ``reason``)."""

    s_x0: float
    s_x1: float
    s_z1: float
    v_z1: float
    phi_x: float
    key_bits: int
    reason: str = ""


def _tau(n: int, mu: Sequence[float], p: Sequence[float]) -> float:
    return sum(pk * math.exp(-mk) * mk**n / math.factorial(n) for mk, pk in zip(mu, p, strict=True))


def _bounds(
    counts: Sequence[float], mu: Sequence[float], p: Sequence[float], eps_sec: float
) -> tuple[list[float], list[float]]:
    total = sum(counts)
    delta = math.sqrt(total / 2.0 * math.log(21.0 / eps_sec))
    minus = [math.exp(mk) / pk * (nk - delta) for nk, mk, pk in zip(counts, mu, p, strict=True)]
    plus = [math.exp(mk) / pk * (nk + delta) for nk, mk, pk in zip(counts, mu, p, strict=True)]
    return minus, plus


def _vacuum_and_single(
    counts: Sequence[float], mu: Sequence[float], p: Sequence[float], eps_sec: float
) -> tuple[float, float]:
    mu1, mu2, mu3 = mu
    tau0, tau1 = _tau(0, mu, p), _tau(1, mu, p)
    nm, np_ = _bounds(counts, mu, p, eps_sec)
    s0 = max(0.0, tau0 * (mu2 * nm[2] - mu3 * np_[1]) / (mu2 - mu3))
    s1 = (
        mu1
        * tau1
        * (nm[1] - np_[2] - (mu2**2 - mu3**2) / mu1**2 * (np_[0] - s0 / tau0))
        / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
    )
    return s0, max(0.0, s1)


def finite_key_length(
    counts: DecoyCounts, *, leaked_ec_bits: float, eps_sec: float, eps_cor: float
) -> FiniteKey:
    """Secret key length ℓ (Lim et al. eq. (1)) and the bounds it rests on.

    ``leaked_ec_bits`` is λ_EC: every bit disclosed by reconciliation and verification.
    """
    mu, p = counts.intensities, counts.probabilities
    mu1, mu2, mu3 = mu
    if not (mu1 > mu2 + mu3 and mu2 > mu3 >= 0.0):
        raise ValueError(f"intensities must satisfy μ1 > μ2 + μ3, μ2 > μ3 >= 0: {mu}")
    s_x0, s_x1 = _vacuum_and_single(counts.n_x, mu, p, eps_sec)
    _, s_z1 = _vacuum_and_single(counts.n_z, mu, p, eps_sec)
    tau1 = _tau(1, mu, p)
    mm, mp = _bounds(counts.m_z, mu, p, eps_sec)
    v_z1 = max(0.0, tau1 * (mp[1] - mm[2]) / (mu2 - mu3))
    if s_z1 <= 0.0 or s_x1 <= 0.0:
        return FiniteKey(s_x0, s_x1, s_z1, v_z1, 0.5, 0, "no single-photon events bounded")
    ratio = v_z1 / s_z1
    phi_x = ratio + gamma(eps_sec, ratio, s_z1, s_x1) if ratio < 0.5 else 0.5
    if phi_x >= 0.5:
        return FiniteKey(s_x0, s_x1, s_z1, v_z1, 0.5, 0, "phase error bound >= 1/2")
    raw = (
        s_x0
        + s_x1 * (1.0 - binary_entropy(phi_x))
        - leaked_ec_bits
        - 6.0 * math.log2(21.0 / eps_sec)
        - math.log2(2.0 / eps_cor)
    )
    key_bits = math.floor(raw)
    reason = "" if key_bits > 0 else "finite-key length <= 0"
    return FiniteKey(s_x0, s_x1, s_z1, v_z1, phi_x, max(key_bits, 0), reason)
