"""Rate adaptation by puncturing and shortening (Elkouss, Martinez-Mateo, Martin 2011).

A frame of ``frame_bits`` key bits is embedded in a codeword of a mother code of
length ``n = frame_bits + d`` (``d ≈ δ·n``, δ = 0.01, or 0.1 for frames under 4·10^4
bits, see :data:`DELTA`; ``n`` rounded up to the base graph size). Of the ``d``
extra symbols, ``s`` are *shortened* (values public: zeros, or revealed later) and
``p = d - s`` *punctured* (private random bits Alice draws, that Bob does not see).
The adapted rate is ``R = (k - s) / frame_bits`` with ``k = n - m``; choosing ``s``
(and the mother code) sets ``R`` to ``1 - f·h(Q)`` for the estimated QBER ``Q`` and
target efficiency ``f``. The frame size itself comes from the QBER too
(:func:`frame_bits_for`: 1.44·10^6 key bits up to 1.5 %, 3.6·10^5 up to 2.5 %,
where 9·10^4-bit frames cannot reach f 1.15; 9·10^4 above).

Leakage: Alice sends the ``m`` syndrome bits of (key, punctured, shortened). The
punctured bits are uniform and independent of the key and their columns of ``H``
are linearly independent (degree-2 parity columns of even block index, which hold
no whole cycle of the degree-2 subgraph), so the syndrome reveals ``m - p`` bits
about the key; revealing a punctured value later costs one bit. With ``p <= m/2``
every check has at most one punctured neighbour ("untainted" puncturing; with an
odd number of block rows, block row 0 may have two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from groundkey_protocol.qkd.ldpc.construction import BASE_COLUMNS, MOTHER_RATES, QcLdpcCode

__all__ = [
    "DELTA",
    "DELTA_SHORT",
    "FRAME_PLAN",
    "SHORT_DELTA_MIN_FRAME_BITS",
    "Positions",
    "RatePlan",
    "binary_entropy",
    "code_length",
    "default_delta",
    "default_efficiency",
    "frame_bits_for",
    "mother_rates_for",
    "plan_positions",
    "plan_rate",
]

#: Fraction of the codeword used for puncturing + shortening, for frames of at
#: least :data:`SHORT_DELTA_MIN_FRAME_BITS` key bits: about two lifting factors'
#: worth (``Z = n/200``), room for the fewer than ``Z`` punctured symbols
#: :func:`plan_rate` needs. The rate is set by the number of block rows, so no more
#: is needed, and every shortened symbol is a known bit the decoder still pays for
#: (its edges): measured against δ = 0.1 on 9·10^4-bit frames at QBER 2 %, f 1.15,
#: 6.8 instead of 7.6 edges per key bit, the same FER and iterations, 14 % faster.
DELTA = 0.01
#: Shorter frames keep δ = 0.1 (:data:`DELTA_SHORT`): their codes (``Z < 200``,
#: no degree-2 information columns) are picked by the mother rate, which δ shifts,
#: and the efficiency table's short columns were calibrated with it (with δ = 0.01,
#: 9·10^3-bit frames failed 12/300 at QBER 8 % and 7/300 at 1 %).
DELTA_SHORT = 0.1
SHORT_DELTA_MIN_FRAME_BITS = 40_000
#: Block rows of the lowest- and highest-rate mother codes (rates 0.45 and 0.95).
MIN_BLOCK_ROWS = BASE_COLUMNS // 20
MAX_BLOCK_ROWS = BASE_COLUMNS * 55 // 100
IntArray = npt.NDArray[np.int64]

# Target efficiency of the first message against the QBER, for 9·10^3-, 4.5·10^4-,
# 9·10^4-, 3.6·10^5- and 1.44·10^6-bit frames (interpolated in log frame size,
# clamped), calibrated on the project's codes for a first-message frame error rate
# of about 10^-2 or lower (measured: tests/protocol/qkd/test_ldpc_acceptance.py;
# `groundkey bench reconcile`). The 4.5·10^4 column predates the degree-2 profiles
# and is conservative now. The 3.6·10^5 column was measured at QBER 0.5–2.5 %, the
# 1.44·10^6 column at 0.5–1.5 % (the frame plan's ranges, see FRAME_PLAN); above
# them they repeat the column of the next smaller frames.
_EFFICIENCY_TABLE: tuple[tuple[float, float, float, float, float, float], ...] = (
    (0.005, 1.7, 1.45, 1.45, 1.4, 1.31),
    (0.01, 1.48, 1.32, 1.22, 1.145, 1.13),
    (0.015, 1.44, 1.3, 1.2, 1.145, 1.13),
    (0.02, 1.4, 1.27, 1.15, 1.125, 1.125),
    (0.03, 1.32, 1.22, 1.13, 1.13, 1.13),
    (0.05, 1.25, 1.17, 1.12, 1.12, 1.12),
    (0.08, 1.17, 1.12, 1.1, 1.1, 1.1),
    (0.11, 1.15, 1.1, 1.12, 1.12, 1.12),
)
_TABLE_FRAME_BITS = (9_000, 45_000, 90_000, 360_000, 1_440_000)


def binary_entropy(q: float) -> float:
    """``h(q) = -q log2 q - (1-q) log2 (1-q)``."""
    if q <= 0.0 or q >= 1.0:
        return 0.0
    return -q * math.log2(q) - (1.0 - q) * math.log2(1.0 - q)


#: Key bits per frame by QBER: ``(highest QBER, frame bits)``, first match. The
#: finite-length gap to a code's threshold shrinks roughly like 1/√n, and at low QBER
#: a frame holds few errors (~900 in 9·10^4 bits at 1 %). Measured at QBER 1 % on
#: the rate-0.91 code (threshold f ≈ 1.10–1.11), first-message failures at f 1.12:
#: 12/48 frames of 3.6·10^5 key bits, 0/12 of 1.44·10^6; at f 1.10: 28/48 and 8/12.
#: So 1.44·10^6-bit frames (1.4546·10^6-bit codewords) up to QBER 1.5 % reach f 1.13
#: at 1 %, 3.6·10^5 up to 2.5 %, 9·10^4 above, where they already reach f ≤ 1.15.
#: A block with fewer key bits is one shorter frame, its efficiency interpolated
#: (:func:`default_efficiency`).
FRAME_PLAN: tuple[tuple[float, int], ...] = (
    (0.015, 1_440_000),
    (0.025, 360_000),
    (1.0, 90_000),
)


def frame_bits_for(qber: float) -> int:
    """Key bits per frame recommended at ``qber`` (:data:`FRAME_PLAN`).

    Public parameters only, so both ends derive the same frame size from the agreed
    QBER estimate before they cut the sifted key into frames.
    """
    return next(bits for q, bits in FRAME_PLAN if qber <= q)


def mother_rates_for(frame_bits: int) -> tuple[float, ...]:
    """The representative :data:`MOTHER_RATES` a frame size of :data:`FRAME_PLAN` is used
    with: those between the codes :func:`plan_rate` picks at the ends of its QBER range
    (from 0.5 %, up to 11 %), else the nearest one; every one for other sizes. What
    the daemon builds into its code cache at start."""
    low = 0.005
    for high, bits in FRAME_PLAN:
        if bits == frame_bits:
            ends = [plan_rate(bits, q).mother_rate for q in (low, min(high, 0.11))]
            lo, hi = min(ends), max(ends)
            inside = tuple(r for r in MOTHER_RATES if lo <= r <= hi)
            return inside or (min(MOTHER_RATES, key=lambda r: abs(r - (lo + hi) / 2)),)
        low = high
    return MOTHER_RATES


def default_efficiency(qber: float, frame_bits: int = _TABLE_FRAME_BITS[0]) -> float:
    """Target reconciliation efficiency ``f`` of the first message at ``qber``."""
    qs = [row[0] for row in _EFFICIENCY_TABLE]
    per_size = [
        float(np.interp(qber, qs, [row[k + 1] for row in _EFFICIENCY_TABLE]))
        for k in range(len(_TABLE_FRAME_BITS))
    ]
    logs = [math.log(b) for b in _TABLE_FRAME_BITS]
    return float(np.interp(math.log(max(frame_bits, 1)), logs, per_size))


def default_delta(frame_bits: int) -> float:
    """δ for ``frame_bits``: :data:`DELTA`, or :data:`DELTA_SHORT` for short frames."""
    return DELTA if frame_bits >= SHORT_DELTA_MIN_FRAME_BITS else DELTA_SHORT


def code_length(frame_bits: int, delta: float | None = None) -> int:
    """Mother-code length for ``frame_bits`` key bits: ``frame_bits/(1-δ)`` rounded up
    (δ: :func:`default_delta` unless given)."""
    if delta is None:
        delta = default_delta(frame_bits)
    n = math.ceil(frame_bits / (1.0 - delta) / BASE_COLUMNS) * BASE_COLUMNS
    return max(n, 10 * BASE_COLUMNS)


@dataclass(frozen=True, slots=True)
class RatePlan:
    """Mother code, punctured and shortened counts for one frame size and QBER."""

    mother_rate: float
    n: int
    m: int
    frame_bits: int
    punctured: int
    shortened: int

    @property
    def rate(self) -> float:
        """Adapted rate ``(k - s) / frame_bits``."""
        return (self.n - self.m - self.shortened) / self.frame_bits

    @property
    def syndrome_leak_bits(self) -> int:
        """Bits the syndrome discloses about the key: ``m - p``."""
        return self.m - self.punctured

    def efficiency(self, qber: float) -> float:
        """``f = (m - p) / (frame_bits · h(qber))``."""
        return self.syndrome_leak_bits / (self.frame_bits * binary_entropy(qber))


def plan_rate(
    frame_bits: int,
    qber: float,
    *,
    efficiency: float | None = None,
    delta: float | None = None,
) -> RatePlan:
    """Pick the mother code and ``(p, s)`` whose adapted rate is ``1 - f·h(qber)``.

    The mother code has as many block rows ``mb`` as needed for the syndrome to
    carry ``f·h(Q)·frame_bits`` bits, rounded up to a whole block row (``Z`` checks,
    i.e. rates in steps of 1/200), and the remainder (fewer than ``Z`` bits) is
    punctured, so adaptation is almost all shortening, which costs far less
    decoding margin than puncturing. ``mb`` is clamped to the rates 0.45–0.95.
    """
    if frame_bits < 1:
        raise ValueError("frame_bits must be positive")
    f = default_efficiency(qber, frame_bits) if efficiency is None else efficiency
    target = 1.0 - f * binary_entropy(qber)
    n = code_length(frame_bits, delta)
    d = n - frame_bits
    z = n // BASE_COLUMNS
    need = frame_bits * (1.0 - target)  # syndrome bits about the key
    mb = min(max(math.ceil(need / z - 1e-9), MIN_BLOCK_ROWS), MAX_BLOCK_ROWS)
    m = mb * z
    p = min(max(round(m - need), 0), d, m // 2)
    return RatePlan(1.0 - mb / BASE_COLUMNS, n, m, frame_bits, p, d - p)


@dataclass(frozen=True, slots=True)
class Positions:
    """Where the key, punctured and shortened symbols sit in the codeword."""

    key: IntArray
    punctured: IntArray  # in reveal order
    shortened: IntArray


def plan_positions(code: QcLdpcCode, plan: RatePlan, *, seed: int = 0) -> Positions:
    """Place the symbols of ``plan`` in ``code`` (deterministic in ``seed``).

    Punctured: even parity block columns (one per check) in a seeded order, then
    odd ones. Shortened: seeded random information positions. Key: the rest, in
    codeword order.
    """
    if plan.n != code.n or plan.m != code.m:
        raise ValueError("plan does not match the code")
    rng = np.random.default_rng([seed, plan.n, plan.m, plan.punctured])
    z, mb, kb = code.z, code.mb, code.nb - code.mb
    blocks = np.arange(mb)
    parity = [(kb + blocks[blocks % 2 == par])[:, None] * z + np.arange(z) for par in (0, 1)]
    candidates = np.concatenate([rng.permutation(p.ravel()) for p in parity])
    punctured = candidates[: plan.punctured].astype(np.int64)
    shortened = np.sort(rng.choice(kb * z, size=plan.shortened, replace=False)).astype(np.int64)
    mask = np.ones(code.n, dtype=bool)
    mask[punctured] = False
    mask[shortened] = False
    return Positions(np.flatnonzero(mask).astype(np.int64), punctured, shortened)
