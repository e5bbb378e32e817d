"""Quasi-cyclic LDPC mother codes, generated deterministically from a seed.

A code is a base matrix ``B`` (``mb × nb``, entry ``-1`` for a zero block, else the
shift ``0 <= s < Z`` of a ``Z × Z`` circulant permutation) lifted to ``H`` of size
``(mb·Z) × (nb·Z)``. Block row ``i``, block column ``j`` with shift ``s`` puts a 1 at
``H[i·Z + z, j·Z + (z + s) % Z]``.

Layout of the base graph (IRA style, as DVB-S2 and 5G NR):

* ``kb = nb - mb`` information columns with an irregular degree profile (a fraction
  of high-degree columns, a bulk of degree 3 or 4 and, at rates 0.75–0.925 with
  ``Z >= 200``, 15 % of degree 2; see ``_PROFILES``), placed by progressive edge
  growth (PEG) on the base graph: every new edge goes to a check farthest from the
  column in the current graph, ties to the lowest degree; a degree-2 column avoids
  a pair of block rows that already has one (three degree-2 columns on one pair
  close lifted 6-cycles whatever their shifts: weight-6 codewords);
* ``mb`` parity columns of degree 2 forming a block cycle (identity blocks on the
  diagonal, random shifts below it, so chains of parity bits do not line up into
  low-weight codewords). A set of parity columns is linearly dependent only if it
  contains a whole cycle of the parity part, so the even block columns used for
  puncturing are independent, which is what makes puncturing them leak nothing
  (see :mod:`.rate`).

Circulant shifts are drawn at random among those closing the fewest lifted 4-cycles
(none, once ``Z`` is large enough for the row density; codes of rate >= 0.8 at
``Z = 50``, i.e. 10^4-bit codewords, keep a few). A cycle of degree-2 variables in
the lifted graph is a codeword of that weight, so the second shift of a degree-2
information column is the one whose new cycles are longest (a breadth-first search
in the lifted degree-2 subgraph). That subgraph has ~2 variables per check, so its
girth is bounded by its growth (7–12 at 10^5 bits and rates 0.8–0.92); the search
halves the number of shortest cycles at rate 0.9 and cuts it ~20-fold at 0.85. It
sees only cycles that use the new column once: a second degree-2 column on the
same pair of block rows whose shift difference is ``z/k`` away from the first's
closes cycles of ``2k`` variables, so such shifts are excluded (k < 16).

Construction 7 gives rates 0.88–0.895 the degree profile of rate 0.85 (see
``_PROFILES``); every other code is bit-identical to construction 6's.
Construction 6 added the last two rules. Both only redraw a choice that breaks
them, from the same random stream, so codes that had no such choice are
bit-identical to construction 5's (those without degree-2 information columns,
i.e. rates < 0.75 or > 0.925, or ``Z < 200``). Measured on 3.6·10^5-bit frames:
at QBER 1.5 % (rate 0.88) and f 1.15 the first-message FER fell from 6/64 (mostly
near-codewords on three degree-2 columns of one row pair) to 1/96; at rate 0.855
construction 5 had a weight-4 codeword family (shift difference z/2) on which BP
ended in most frames.
Nothing here needs an encoder: reconciliation only ever computes syndromes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

__all__ = [
    "BASE_COLUMNS",
    "CONSTRUCTION_VERSION",
    "DEG2_MIN_Z",
    "MOTHER_RATES",
    "QcLdpcCode",
    "build_code",
    "info_degree_profile",
]

#: Bumped whenever the construction changes, so cached codes are regenerated.
CONSTRUCTION_VERSION = 7
#: Representative mother rates (cache warm-up, tests). Codes of any rate (a multiple
#: of 1/BASE_COLUMNS, see :mod:`.rate`) use the profile tabulated nearest to it.
MOTHER_RATES: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)
#: Columns of every base graph; the lifting factor is ``n // BASE_COLUMNS``.
BASE_COLUMNS = 200

# (rate, ((degree, fraction of information columns), ...)); degrees above the number
# of block rows are capped to it. Rates 0.5 and 0.6 follow DVB-S2 (ETSI EN 302 307,
# 1/2: 40 % degree 8; 3/5: 1/3 degree 12; rest degree 3). Higher rates need more
# high-degree columns on the BSC and, at rates 0.75–0.925 (QBER ≈ 1–4 %), 15 %
# degree-2 information columns: they lift the fraction of degree-2 edges toward the
# stability bound, which the IRA parity columns alone leave far below it (Monte-Carlo
# density evolution: threshold f ≈ 1.07–1.11 against 1.09–1.14 without, at rates
# 0.8–0.92; measured on 10^5-bit frames, f 1.155 instead of 1.17 at QBER 2 % and
# 1.22 instead of 1.24 at 1 %). But a cycle of degree-2 variables is a codeword,
# and the lifted degree-2 subgraph has girth 7–12 here. Construction 5 let BP end
# on such a codeword, or two checks short of one, in ~1 % of the frames at rate
# 0.9, mostly on row pairs holding two or three degree-2 columns; construction 6
# keeps one per pair (see the module docstring) and none was seen in 1.5·10^3
# frames of 3.6·10^5 bits at QBER 1–2.5 %. The roles' per-frame check tag exposes
# a wrong codeword, and the blind round's reveal fixes it (see :mod:`.roles`).
# Tried at rate 0.915 on 3.6·10^5-bit frames, f 1.125: (20, .25), (3, .6), (2, .15)
# failed 57/64 frames, (20, .2), (4, .6), (2, .2) 64/64, the table's entry 3/64;
# the 0.85 entry at rate 0.915 13/48 at f 1.14 (table's: 2/256). Above rate 0.925
# (about a dozen block rows) the codes do without. Rates 0.88–0.895 (QBER 1.1–1.4 %
# on 1.44·10^6-bit frames) take the 0.85 entry (construction 7, the 0.89 row):
# measured there with 1.4546·10^6-bit codewords at the table's efficiency, the 0.9
# entry failed 4/16 (rate 0.895, f 1.126) and 5/16 (0.88, f 1.122), the 0.85
# entry 1/16 and 0/16; at rate 0.9 it is the other way round (5/16 against 1/16).
_DEG2_PROFILE = ((24, 0.2), (4, 0.65), (2, 0.15))
_PROFILES: tuple[tuple[float, tuple[tuple[int, float], ...]], ...] = (
    (0.5, ((8, 0.4), (3, 0.6))),
    (0.6, ((12, 1 / 3), (3, 2 / 3))),
    (0.7, ((16, 0.3), (3, 0.7))),
    (0.8, _DEG2_PROFILE),
    (0.85, _DEG2_PROFILE),
    (0.89, _DEG2_PROFILE),
    (0.9, ((20, 0.25), (4, 0.6), (2, 0.15))),
    (0.95, ((20, 0.2), (4, 0.8))),
)

IntArray = npt.NDArray[np.int64]
#: Smallest lifting factor whose codes get degree-2 information columns.
DEG2_MIN_Z = 200
#: Lifted cycles of degree-2 variables shorter than this are avoided when possible.
_DEG2_CYCLE_DEPTH = 48
#: Two degree-2 columns on the same pair of block rows must not close lifted cycles
#: of fewer than this many pairs (codewords of weight < 2·this).
_DEG2_MIN_ORDER = 16
#: Version keying the random stream: construction 6 kept version 5's draws, so the
#: codes it did not have to repair are bit-identical (and so are their measurements).
_STREAM_VERSION = 5


def info_degree_profile(rate: float, z: int | None = None) -> tuple[tuple[int, float], ...]:
    """Degree profile of the information columns for the nearest tabulated rate.

    With a lifting factor ``z`` below :data:`DEG2_MIN_Z` the degree-2 share goes to
    the next degree up: short codes cannot keep all lifted degree-2 cycles long,
    and measured, their low-weight codewords then show as an error floor.
    """
    profile = min(_PROFILES, key=lambda p: abs(p[0] - rate))[1]
    if z is None or z >= DEG2_MIN_Z or len(profile) < 2 or profile[-1][0] != 2:
        return profile
    *rest, (_, share) = profile
    last_deg, last_frac = rest[-1]
    return (*rest[:-1], (last_deg, last_frac + share))


@dataclass(frozen=True, eq=False)
class QcLdpcCode:
    """A quasi-cyclic LDPC code: ``base`` shifts (``-1`` = zero block) and lifting ``z``."""

    base: npt.NDArray[np.int32]
    z: int
    seed: int = 0

    def __post_init__(self) -> None:
        base = np.asarray(self.base, dtype=np.int32)
        if base.ndim != 2 or self.z < 1:
            raise ValueError("base must be 2-D and z >= 1")
        if np.any((base < -1) | (base >= self.z)):
            raise ValueError("base entries must be -1 or a shift in [0, z)")
        object.__setattr__(self, "base", base)

    def __repr__(self) -> str:
        return f"QcLdpcCode(n={self.n}, m={self.m}, rate={self.rate:.3f}, z={self.z})"

    @property
    def mb(self) -> int:
        return int(self.base.shape[0])

    @property
    def nb(self) -> int:
        return int(self.base.shape[1])

    @property
    def n(self) -> int:
        """Code length in bits."""
        return self.nb * self.z

    @property
    def m(self) -> int:
        """Number of checks (syndrome bits)."""
        return self.mb * self.z

    @property
    def rate(self) -> float:
        """Design rate ``1 - m/n``."""
        return 1.0 - self.m / self.n

    @property
    def parity_columns(self) -> IntArray:
        """Indices of the degree-2 parity variables (the last ``mb`` block columns)."""
        kb = self.nb - self.mb
        return np.arange(kb * self.z, self.n, dtype=np.int64)

    @cached_property
    def edges(self) -> tuple[IntArray, IntArray]:
        """``(check, variable)`` of every edge, sorted by check degree, check, column.

        Checks of one block row share a degree, so the edges of all checks of degree
        ``d`` form one contiguous run that reshapes to ``(checks, d)``.
        """
        row_deg = (self.base >= 0).sum(axis=1)
        order = np.argsort(row_deg, kind="stable")
        z = np.arange(self.z, dtype=np.int64)
        checks: list[IntArray] = []
        variables: list[IntArray] = []
        for i in order:
            cols = np.flatnonzero(self.base[i] >= 0)
            shifts = self.base[i, cols].astype(np.int64)
            # (Z, d): check i*Z+z connects to variable cols*Z + (z + shift) % Z
            var = cols[None, :] * self.z + (z[:, None] + shifts[None, :]) % self.z
            checks.append(np.repeat(i * self.z + z, cols.size))
            variables.append(var.ravel())
        return np.concatenate(checks), np.concatenate(variables)

    def syndrome(self, bits: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Syndromes ``H·x mod 2`` of ``bits`` with shape ``(frames, n)`` -> ``(frames, m)``."""
        x = np.asarray(bits, dtype=np.uint8)
        if x.ndim != 2 or x.shape[1] != self.n:
            raise ValueError(f"bits must have shape (frames, {self.n})")
        out = np.zeros((x.shape[0], self.m), dtype=np.uint8)
        blocks = x.reshape(x.shape[0], self.nb, self.z)
        z = self.z
        for i, j in zip(*np.nonzero(self.base >= 0), strict=True):
            s = int(self.base[i, j])
            # row r of the circulant reads column (r + s) % Z of block j: two slices
            rows = out[:, i * z : (i + 1) * z]
            rows[:, : z - s] ^= blocks[:, j, s:]
            rows[:, z - s :] ^= blocks[:, j, :s]
        return out


def _peg_base(
    degrees: npt.NDArray[np.int64], mb: int, rng: np.random.Generator
) -> npt.NDArray[np.bool_]:
    """PEG placement of information columns (given degrees) after a parity cycle."""
    kb = degrees.size
    adj = np.zeros((mb, kb + mb), dtype=bool)
    for i in range(mb):  # degree-2 parity cycle
        adj[i, kb + i] = True
        adj[(i + 1) % mb, kb + i] = True
    row_deg = adj.sum(axis=1)
    for col in np.argsort(-degrees, kind="stable"):
        for _ in range(int(degrees[col])):
            reached = np.zeros(mb, dtype=bool)
            frontier = adj[:, col].copy()
            candidates = ~frontier
            if frontier.any():
                # expand breadth-first until no new check is reached; keep the last
                # non-empty set of unreached checks (the farthest ones)
                while True:
                    reached |= frontier
                    cols = adj[frontier].any(axis=0)
                    nxt = adj[:, cols].any(axis=1) & ~reached
                    if not nxt.any() or (reached | nxt).all():
                        candidates = ~(reached | nxt)
                        if not candidates.any():
                            candidates = ~reached
                        break
                    frontier = nxt
            if not candidates.any():
                candidates = ~adj[:, col]
            cand = np.flatnonzero(candidates)
            low = cand[row_deg[cand] == row_deg[cand].min()]
            row = int(rng.choice(low))
            if degrees[col] == 2 and adj[:, col].any():
                # the second row of a degree-2 column: not a pair of rows that
                # already has one (redrawn only then, so other codes stay as they were)
                first = int(np.flatnonzero(adj[:, col])[0])
                paired = np.zeros(mb, dtype=bool)
                deg2_cols = np.flatnonzero(adj[first] & (adj.sum(axis=0) == 2))
                paired[np.flatnonzero(adj[:, deg2_cols].any(axis=1))] = True
                if paired[row]:
                    free = low[~paired[low]]
                    if free.size == 0:
                        free = cand[~paired[cand]]
                    if free.size:
                        row = int(rng.choice(free))
            adj[row, col] = True
            row_deg[row] += 1
    return adj


def _deg2_distances(
    edges: list[tuple[int, int, int, int]], mb: int, z: int, start: int, depth: int
) -> npt.NDArray[np.int64]:
    """Hop distances (capped at ``depth``) from check ``(start, 0)`` in the lifted
    subgraph of degree-2 variables; ``edges`` are ``(row1, shift1, row2, shift2)``.

    Variable ``t`` of such a block column joins checks ``(row1, t - shift1)`` and
    ``(row2, t - shift2)``, i.e. check ``(row1, c)`` to ``(row2, c + shift1 - shift2)``.
    """
    dist = np.full((mb, z), depth, dtype=np.int64)
    frontier = np.zeros((mb, z), dtype=bool)
    frontier[start, 0] = True
    dist[start, 0] = 0
    for level in range(1, depth):
        nxt = np.zeros_like(frontier)
        for r1, s1, r2, s2 in edges:
            nxt[r2] |= np.roll(frontier[r1], s1 - s2)
            nxt[r1] |= np.roll(frontier[r2], s2 - s1)
        nxt &= dist == depth
        if not nxt.any():
            break
        dist[nxt] = level
        frontier = nxt
    return dist


def _short_deg2_cycles(
    edges: list[tuple[int, int, int, int]], first: int, s1: int, row: int, z: int
) -> npt.NDArray[np.bool_]:
    """Per candidate second shift ``s2``: would the new degree-2 column close a cycle of
    fewer than :data:`_DEG2_MIN_ORDER` pairs with an existing one on the same two rows?

    Both map check ``(first, c)`` to ``(row, c + δ)``; alternating ``k`` times between
    them returns to the start when ``k·(δ_new - δ_old) ≡ 0 (mod z)``: a codeword of
    weight ``2k``. The breadth-first search sees only cycles that use the new column
    once, and with ``δ_new - δ_old = z/2`` (found at rate 0.855, ``z = 2000``) BP
    ended on these weight-4 words in most frames.
    """
    s2 = np.arange(z, dtype=np.int64)
    delta_new = (s1 - s2) % z
    short = np.zeros(z, dtype=bool)
    for r1, t1, r2, t2 in edges:
        if (r1, r2) == (first, row):
            delta_old = t1 - t2
        elif (r1, r2) == (row, first):
            delta_old = t2 - t1
        else:
            continue
        order = z // np.gcd((delta_new - delta_old) % z, z)
        short |= order < _DEG2_MIN_ORDER
    return short


def _assign_shifts(
    adj: npt.NDArray[np.bool_], z: int, rng: np.random.Generator
) -> npt.NDArray[np.int32]:
    """Random circulant shifts with the fewest lifted 4-cycles (none when ``z`` allows).

    Degree-2 information columns also keep the lifted cycles made only of degree-2
    variables (each one a codeword of that weight) as long as possible: their second
    shift is the one farthest from the first in that subgraph.
    """
    mb, nb = adj.shape
    kb = nb - mb
    base = np.full((mb, nb), -1, dtype=np.int32)
    deg2: list[tuple[int, int, int, int]] = []
    for i in range(mb):  # parity cycle: identity on the diagonal, random below it
        base[i, kb + i] = 0
        base[(i + 1) % mb, kb + i] = int(rng.integers(z))
        deg2.append((i, 0, (i + 1) % mb, int(base[(i + 1) % mb, kb + i])))
    assigned = base >= 0
    depth = min(z, _DEG2_CYCLE_DEPTH)
    for j in range(kb):
        rows = np.flatnonzero(adj[:, j])
        for row in rows:
            conflicts = np.zeros(z, dtype=np.int64)
            # 4-cycle i-j-r-c: s(i,j) - s(r,j) + s(r,c) - s(i,c) != 0 mod z
            for r in np.flatnonzero(assigned[:, j]):
                cols = np.flatnonzero(assigned[row] & assigned[r])
                if cols.size:
                    bad = (base[r, j] - base[r, cols] + base[row, cols]) % z
                    np.add.at(conflicts, bad, 1)
            best = np.flatnonzero(conflicts == conflicts.min())
            pick = -1
            if rows.size == 2 and row == rows[1]:
                first, s1 = int(rows[0]), int(base[rows[0], j])
                dist = _deg2_distances(deg2, mb, z, first, depth)[row]
                # the new column joins (first, 0) to (row, s1 - s2)
                reach = dist[(s1 - best) % z]
                best = best[reach == reach.max()]
                pick = int(rng.choice(best))
                short = _short_deg2_cycles(deg2, first, s1, int(row), z)
                if short[pick]:
                    # redrawn only then, so codes without such a pick stay as they were
                    good = best[~short[best]]
                    if good.size == 0:
                        good = np.flatnonzero((conflicts == conflicts.min()) & ~short)
                    if good.size:
                        pick = int(rng.choice(good))
            base[row, j] = int(rng.choice(best)) if pick < 0 else pick
            assigned[row, j] = True
        if rows.size == 2:
            deg2.append((int(rows[0]), int(base[rows[0], j]), int(rows[1]), int(base[rows[1], j])))
    return base


def build_code(
    rate: float,
    n: int,
    *,
    seed: int = 1,
    profile: tuple[tuple[int, float], ...] | None = None,
) -> QcLdpcCode:
    """Generate the QC-LDPC mother code of ``rate`` and length ``n`` (a multiple of 100).

    Deterministic in ``(rate, n, seed)`` and :data:`CONSTRUCTION_VERSION`.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError("rate must be in (0, 1)")
    if n % BASE_COLUMNS or n < 10 * BASE_COLUMNS:
        raise ValueError(f"n must be a multiple of {BASE_COLUMNS} and at least {10 * BASE_COLUMNS}")
    z = n // BASE_COLUMNS
    nb = BASE_COLUMNS
    mb = round(nb * (1.0 - rate))
    kb = nb - mb
    rng = np.random.default_rng([seed, _STREAM_VERSION, round(rate * 1000), n])
    degrees = np.empty(kb, dtype=np.int64)
    start = 0
    if profile is None:
        profile = info_degree_profile(rate, z)
    for k, (deg, frac) in enumerate(profile):
        count = kb - start if k == len(profile) - 1 else round(frac * kb)
        degrees[start : start + count] = min(deg, mb)
        start += count
    adj = _peg_base(degrees, mb, rng)
    return QcLdpcCode(base=_assign_shifts(adj, z, rng), z=z, seed=seed)
