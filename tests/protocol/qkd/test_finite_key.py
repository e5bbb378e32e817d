"""Finite-key length (Lim et al. 2014) against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from groundkey_protocol.qkd.finite_key import (
    DecoyCounts,
    binary_entropy,
    finite_key_length,
    gamma,
)

MICIUS = DecoyCounts(
    intensities=(0.8, 0.1, 0.0),
    probabilities=(0.5, 0.25, 0.25),
    n_x=(400_000, 30_000, 150),
    n_z=(400_000, 30_000, 150),
    m_z=(4_000, 600, 75),
)


def test_micius_like_case_by_hand() -> None:
    # By hand (eps_sec = 1e-9, eps_cor = 1e-15, λ_EC = 60000):
    #   τ0 = .5e^-.8 + .25e^-.1 + .25 = 0.700874, τ1 = .5·.8e^-.8 + .25·.1e^-.1 = 0.202353
    #   δ = sqrt(430150/2 · ln(21e9)) = 2260.94; n⁻_{X,μ3} = 4(150 - δ) < 0 so s_X0 = 0
    #   s_X1 = .8·τ1[n⁻_2 - n⁺_3 - (.01/.64) n⁺_1]/(.8·.1 - .01) = 196583.35 (= s_Z1)
    #   δ_m = sqrt(4675/2 · ln(21e9)) = 235.71, v_Z1 = τ1(m⁺_2 - m⁻_3)/.1 = 8776.46
    #   φ = v/s + γ = 0.0446453 + 0.0059497 = 0.0505947, h(φ) = 0.288918
    #   ℓ = 0 + 196583.35·0.711082 - 60000 - 6 log2(21e9) - log2(2e15) = 79530.3
    fk = finite_key_length(MICIUS, leaked_ec_bits=60_000, eps_sec=1e-9, eps_cor=1e-15)
    assert fk.s_x0 == 0.0
    assert fk.s_x1 == pytest.approx(196583.3466, rel=1e-8)
    assert fk.v_z1 == pytest.approx(8776.4616, rel=1e-8)
    assert fk.phi_x == pytest.approx(0.0505947285, rel=1e-8)
    assert fk.key_bits == 79530
    assert fk.reason == ""


def test_case_with_vacuum_contribution() -> None:
    counts = DecoyCounts(
        intensities=(0.5, 0.1, 2e-4),  # the paper's μ3
        probabilities=(0.6, 0.3, 0.1),
        n_x=(3_000_000, 250_000, 20_000),
        n_z=(2_000_000, 170_000, 13_000),
        m_z=(20_000, 2_500, 600),
    )
    fk = finite_key_length(counts, leaked_ec_bits=500_000, eps_sec=1e-10, eps_cor=1e-15)
    assert fk.s_x0 == pytest.approx(97886.2494, rel=1e-8)
    assert fk.s_x1 == pytest.approx(803077.0831, rel=1e-8)
    assert fk.s_z1 == pytest.approx(539418.8874, rel=1e-8)
    assert fk.v_z1 == pytest.approx(22459.9631, rel=1e-8)
    assert fk.phi_x == pytest.approx(0.0449516622, rel=1e-8)
    assert fk.key_bits == 188231
    # 200000 more disclosed bits and the key is gone: a result with a reason
    gone = finite_key_length(counts, leaked_ec_bits=700_000, eps_sec=1e-10, eps_cor=1e-15)
    assert gone.key_bits == 0
    assert "<= 0" in gone.reason


def test_tighter_epsilons_and_more_errors_cost_key() -> None:
    base = finite_key_length(MICIUS, leaked_ec_bits=60_000, eps_sec=1e-9, eps_cor=1e-15)
    tight = finite_key_length(MICIUS, leaked_ec_bits=60_000, eps_sec=1e-15, eps_cor=1e-15)
    assert tight.key_bits < base.key_bits
    # log2 vs ln: ε_cor enters as log2(2/ε_cor) bits exactly
    loose = finite_key_length(MICIUS, leaked_ec_bits=60_000, eps_sec=1e-9, eps_cor=1e-5)
    assert loose.key_bits - base.key_bits == pytest.approx(math.log2(1e10), abs=1)
    noisy = DecoyCounts(
        MICIUS.intensities, MICIUS.probabilities, MICIUS.n_x, MICIUS.n_z, (60_000, 9_000, 75)
    )
    fk = finite_key_length(noisy, leaked_ec_bits=60_000, eps_sec=1e-9, eps_cor=1e-15)
    assert fk.key_bits == 0
    assert fk.reason


def test_helpers() -> None:
    assert binary_entropy(0.5) == 1.0
    assert binary_entropy(0.0) == 0.0
    assert binary_entropy(0.11) == pytest.approx(0.4999, abs=1e-3)
    assert gamma(1e-9, 0.0, 1e5, 1e5) == 0.0
    with pytest.raises(ValueError, match="μ1 > μ2"):
        finite_key_length(
            DecoyCounts((0.1, 0.2, 0.0), (0.5, 0.25, 0.25), (1, 1, 1), (1, 1, 1), (0, 0, 0)),
            leaked_ec_bits=0,
            eps_sec=1e-9,
            eps_cor=1e-15,
        )


# --- Lim et al. 2014, Fig. 1 (dedicated fibre), leftmost curve n_X = 10^4 ----------
# The paper: "even if we use a block size of 10^4, cryptographic keys can still be
# distributed over a fiber length of 135 km". Its model (Sec. IV): μ3 = 2e-4,
# η_Bob = 0.1, p_dc = 6e-7, p_ap = 4e-2, 0.2 dB/km, e_mis = 5e-3, f_EC = 1.16,
# ε_cor = 1e-15, ε_sec = κ·ℓ with κ = 1e-15, detection D_k = 1 - (1 - 2p_dc)e^(-η k),
# R_k = D_k(1 + p_ap), errors e_k = p_dc + e_mis(1 - e^(-η k)) + p_ap D_k / 2, with the
# rate optimised over (q_x, p_μ1, p_μ2, μ1, μ2). Our bounds with a random search
# optimiser give keys up to 125 km and none from 130 km on; the test pins a key at
# 120 km and none at 150 km, bracketing the paper's 135 km.


def lim_fig1_key_bits(length_km: float, params: tuple[float, ...], n_x: float = 1e4) -> float:
    qx, p1, p2, mu1, mu2 = params
    p3, mu3 = 1 - p1 - p2, 2e-4
    if min(p1, p2, p3) <= 0.005 or not (mu1 > mu2 + mu3 and mu2 > mu3) or not 0 < qx < 1:
        return 0.0
    eta = 10 ** (-0.02 * length_km) * 0.1
    mu, p = np.array([mu1, mu2, mu3]), np.array([p1, p2, p3])
    det = 1 - (1 - 2 * 6e-7) * np.exp(-eta * mu)
    rate = det * 1.04
    err = 6e-7 + 5e-3 * (1 - np.exp(-eta * mu)) + 0.04 * det / 2
    gain = float((p * rate).sum())
    pulses = n_x / (qx * qx * gain)

    def triple(values: np.ndarray) -> tuple[float, float, float]:
        return (float(values[0]), float(values[1]), float(values[2]))

    counts = DecoyCounts(
        triple(mu),
        triple(p),
        triple(pulses * qx * qx * p * rate),
        triple(pulses * (1 - qx) ** 2 * p * rate),
        triple(pulses * (1 - qx) ** 2 * p * err),
    )
    e_obs = float((p * err).sum()) / gain
    leak = 1.16 * n_x * binary_entropy(e_obs)
    eps_sec = 1e-15 * n_x
    for _ in range(3):  # ε_sec = κ·ℓ: a few fixed-point steps
        fk = finite_key_length(counts, leaked_ec_bits=leak, eps_sec=eps_sec, eps_cor=1e-15)
        if fk.key_bits <= 0:
            return 0.0
        eps_sec = 1e-15 * fk.key_bits
    return float(fk.key_bits)


def test_lim_fig1_block_1e4_reaches_about_135_km() -> None:
    # optimum found by the random search at 120 km: q_x, p_μ1, p_μ2, μ1, μ2
    at_120 = lim_fig1_key_bits(120.0, (0.261, 0.0412, 0.521, 0.495, 0.104))
    assert 200 < at_120 < 600
    rng = np.random.default_rng(0)
    lo = np.array([0.05, 0.01, 0.01, 0.05, 0.005])
    hi = np.array([0.95, 0.95, 0.95, 1.2, 0.6])
    samples = lo + (hi - lo) * rng.random((4000, 5))
    assert max(lim_fig1_key_bits(150.0, tuple(x)) for x in samples) == 0.0
