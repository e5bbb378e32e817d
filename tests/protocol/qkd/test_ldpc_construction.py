"""QC-LDPC mother codes: determinism, structure, syndromes."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from groundkey_protocol.qkd.ldpc.construction import (
    BASE_COLUMNS,
    DEG2_MIN_Z,
    MOTHER_RATES,
    QcLdpcCode,
    build_code,
    info_degree_profile,
)


def _dense(code: QcLdpcCode) -> np.ndarray:
    checks, variables = code.edges
    h = np.zeros((code.m, code.n), dtype=np.uint8)
    h[checks, variables] = 1
    return h


@pytest.mark.parametrize("rate", MOTHER_RATES)
def test_codes_are_deterministic_and_have_the_design_rate(rate: float) -> None:
    a = build_code(rate, 10_000)
    b = build_code(rate, 10_000)
    assert np.array_equal(a.base, b.base)
    assert a.n == 10_000
    assert a.z == 10_000 // BASE_COLUMNS
    assert a.rate == pytest.approx(rate)
    assert not np.array_equal(a.base, build_code(rate, 10_000, seed=2).base)


@pytest.mark.parametrize(
    ("rate", "n"), [(0.9, 50_000), (0.8, 50_000), (0.6, 10_000), (0.5, 10_000)]
)
def test_structure_degrees_and_no_4_cycles(rate: float, n: int) -> None:
    """No 4-cycles once Z allows (rows of rates >= 0.8 are too dense for Z = 50 to avoid all)."""
    code = build_code(rate, n)
    checks, variables = code.edges
    # every edge appears once (no parallel edges), parity columns have degree 2
    assert np.unique(checks * code.n + variables).size == checks.size
    col_deg = np.bincount(variables, minlength=code.n)
    assert np.all(col_deg[code.parity_columns] == 2)
    assert col_deg.min() >= 2
    # no lifted 4-cycles: for two block rows, the shift differences over their
    # shared block columns are all distinct (mod Z)
    b, z = code.base, code.z
    for i in range(code.mb):
        for r in range(i + 1, code.mb):
            cols = np.flatnonzero((b[i] >= 0) & (b[r] >= 0))
            diff = (b[i, cols] - b[r, cols]) % z
            assert np.unique(diff).size == diff.size


def test_syndrome_matches_dense_parity_check_matrix() -> None:
    code = build_code(0.7, 2_000)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, (5, code.n), dtype=np.uint8)
    expected = (_dense(code).astype(np.int64) @ x.T.astype(np.int64)).T % 2
    assert np.array_equal(code.syndrome(x), expected)
    # linearity: H(x ^ y) = Hx ^ Hy
    y = rng.integers(0, 2, (5, code.n), dtype=np.uint8)
    assert np.array_equal(code.syndrome(x ^ y), code.syndrome(x) ^ code.syndrome(y))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="multiple"):
        build_code(0.5, 10_001)
    with pytest.raises(ValueError, match="rate"):
        build_code(1.2, 10_000)
    code = build_code(0.5, 2_000)
    with pytest.raises(ValueError, match="shape"):
        code.syndrome(np.zeros((1, 10), dtype=np.uint8))
    assert "rate=0.500" in repr(code)


def _deg2_girth(code: QcLdpcCode) -> int:
    """Shortest cycle of degree-2 variables in the lifted graph (= lightest such codeword)."""
    checks, variables = code.edges
    deg = np.bincount(variables, minlength=code.n)
    sel = deg[variables] == 2
    pairs = checks[sel][np.argsort(variables[sel], kind="stable")].reshape(-1, 2)
    adj: list[list[tuple[int, int]]] = [[] for _ in range(code.m)]
    for e, (a, b) in enumerate(pairs.tolist()):
        adj[a].append((b, e))
        adj[b].append((a, e))
    best = code.m
    for row in range(code.mb):  # by the QC symmetry, one start check per block row
        start = row * code.z
        dist, via, queue = {start: 0}, {start: -1}, deque([start])
        while queue:
            u = queue.popleft()
            if 2 * dist[u] + 1 >= best:
                break
            for v, e in adj[u]:
                if e == via[u]:
                    continue
                if v in dist:
                    best = min(best, dist[u] + dist[v] + 1)
                else:
                    dist[v], via[v] = dist[u] + 1, e
                    queue.append(v)
    return best


def test_degree_two_information_columns_only_on_long_codes() -> None:
    """Long codes of rates 0.75–0.925 get 15 % degree-2 information columns, whose
    lifted degree-2 cycles (codewords) are kept as long as the graph's growth allows;
    short codes (Z < DEG2_MIN_Z) do without, and so do the lowest and highest rates
    (where the parity chain, one long cycle, is the only degree-2 structure)."""
    long = build_code(0.8, 100_000)
    assert long.z >= DEG2_MIN_Z
    assert np.array_equal(long.base, build_code(0.8, 100_000).base)
    kb = long.nb - long.mb
    col_deg = (long.base >= 0).sum(axis=0)
    assert int((col_deg[:kb] == 2).sum()) == round(0.15 * kb)
    assert _deg2_girth(long) >= 12
    assert _deg2_girth(build_code(0.85, 100_000)) >= 10
    assert _deg2_girth(build_code(0.9, 100_000)) >= 8
    for rate, n in ((0.8, 10_000), (0.6, 100_000), (0.94, 100_000), (0.95, 100_000)):
        code = build_code(rate, n)
        info_deg = (code.base >= 0).sum(axis=0)[: code.nb - code.mb]
        assert np.all(info_deg >= 3), (rate, n)
    assert _deg2_girth(build_code(0.95, 40_000)) >= 100  # the parity chain alone


def _short_pair_cycles(code: QcLdpcCode, min_pairs: int) -> list[tuple[int, int, int]]:
    """Pairs of degree-2 block columns on the same two block rows whose lifted graph
    alternates back to the start in fewer than ``min_pairs`` pairs (a codeword of
    weight 2·pairs): ``(column, column, pairs)``."""
    z, found = code.z, []
    by_rows: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for j in np.flatnonzero((code.base >= 0).sum(axis=0) == 2):
        r1, r2 = np.flatnonzero(code.base[:, j] >= 0)
        delta = int(code.base[r1, j] - code.base[r2, j]) % z
        by_rows.setdefault((int(r1), int(r2)), []).append((int(j), delta))
    for cols in by_rows.values():
        for k, (a, da) in enumerate(cols):
            for b, db in cols[:k]:
                pairs = z // np.gcd((da - db) % z, z)
                if pairs < min_pairs:
                    found.append((b, a, int(pairs)))
    return found


@pytest.mark.parametrize(("rate", "n"), [(0.785, 100_000), (0.88, 100_000), (0.86, 200_000)])
def test_degree_two_columns_share_no_pair_of_block_rows(rate: float, n: int) -> None:
    """Construction 5 put up to three degree-2 columns on one pair of block rows: any
    three close lifted 6-cycles (weight-6 codewords: at rate 0.88, n = 4·10^5, most
    first-message failures were near them), and two whose shift differences differ
    by z/k close cycles of 2k variables (k = 2 at rate 0.785, n = 10^5). Construction
    6 gives every pair of block rows at most one degree-2 column."""
    code = build_code(rate, n)
    deg2 = np.flatnonzero((code.base >= 0).sum(axis=0) == 2)
    assert deg2.size > code.mb  # the parity chain and degree-2 information columns
    pairs = {tuple(np.flatnonzero(code.base[:, j] >= 0)) for j in deg2}
    assert len(pairs) == deg2.size
    assert _short_pair_cycles(code, 16) == []
    assert _deg2_girth(code) >= 7  # what the growth of the degree-2 subgraph allows


def test_rates_just_below_0_9_take_the_rate_0_85_profile() -> None:
    """Construction 7: rates 0.88–0.895 (QBER 1.1–1.4 % on 1.44·10^6-bit frames) use
    the rate-0.85 degree profile, which decoded there where the rate-0.9 one failed
    a quarter of the frames; rate 0.9 and up keep the denser profile."""
    dense = info_degree_profile(0.9, 7_273)
    assert dense[0] == (20, 0.25)
    for block_rows in (21, 22, 23, 24):  # rates 0.895 ... 0.88, as plan_rate makes them
        rate = 1.0 - block_rows / 200
        assert info_degree_profile(rate, 7_273) == info_degree_profile(0.85, 7_273), rate
    assert info_degree_profile(1.0 - 20 / 200, 7_273) == dense
    assert info_degree_profile(1.0 - 19 / 200, 7_273) == dense
    # the profile is in the code: degree-24 columns (capped at the block rows)
    code = build_code(1.0 - 21 / 200, 40_000)
    info_deg = (code.base >= 0).sum(axis=0)[: code.nb - code.mb]
    assert int(info_deg.max()) == min(24, code.mb)
    assert int((info_deg == info_deg.max()).sum()) == round(0.2 * (code.nb - code.mb))
