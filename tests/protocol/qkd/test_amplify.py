"""Privacy amplification: Toeplitz vs a naive GF(2) product, multiply-add-shift vs int."""

from __future__ import annotations

import numpy as np
import pytest

import groundkey_protocol.qkd.amplify as amplify_mod
from groundkey_protocol.qkd.amplify import (
    amplify,
    mas_hash,
    modified_toeplitz_hash,
    seed_bits,
    toeplitz_hash,
)


def naive_toeplitz(x: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    n = x.size
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    matrix = seed[i - j + n - 1].astype(np.int64)
    product: np.ndarray = (matrix @ x.astype(np.int64)) % 2
    return product.astype(np.uint8)


SIZES = [
    (1, 1),
    (2, 1),
    (1, 2),
    (3, 3),
    (7, 5),
    (64, 64),
    (100, 37),
    (1000, 1),
    (1, 1000),
    (1023, 999),
    (2049, 3),
]


@pytest.fixture(params=["plain", "four_step"])
def fft_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the single real FFT and through the four-step FFT."""
    path: str = request.param
    monkeypatch.setattr(amplify_mod, "_FOUR_STEP_MIN", 1 << 62 if path == "plain" else 0)
    return path


@pytest.mark.parametrize(("n", "m"), SIZES)
def test_toeplitz_equals_naive_product(n: int, m: int, fft_path: str) -> None:
    rng = np.random.default_rng(n * 1000 + m)
    for _ in range(3):
        x = rng.integers(0, 2, n, dtype=np.uint8)
        seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
        np.testing.assert_array_equal(toeplitz_hash(x, seed, m), naive_toeplitz(x, seed, m))


@pytest.mark.parametrize(("n", "m"), [(n, m) for n, m in SIZES if m <= n] + [(5, 5), (2049, 2049)])
def test_modified_toeplitz_equals_naive_identity_concatenation(n: int, m: int) -> None:
    # the "toeplitz" family: (I_m | T)·x with T the m × (n - m) Toeplitz matrix
    rng = np.random.default_rng(n * 7 + m)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, seed_bits("toeplitz", n, m), dtype=np.uint8)
    assert seed.size == n - 1
    expected = x[:m].copy()
    if m < n:
        expected ^= naive_toeplitz(x[m:], seed, m)
    np.testing.assert_array_equal(modified_toeplitz_hash(x, seed, m), expected)
    np.testing.assert_array_equal(amplify("toeplitz", x, seed, m), expected)


def test_toeplitz_chunked_path_is_exact(monkeypatch: pytest.MonkeyPatch, fft_path: str) -> None:
    monkeypatch.setattr(amplify_mod, "_CHUNK_BITS", 37)
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2, 500, dtype=np.uint8)
    seed = rng.integers(0, 2, 500 + 211 - 1, dtype=np.uint8)
    np.testing.assert_array_equal(toeplitz_hash(x, seed, 211), naive_toeplitz(x, seed, 211))


def test_toeplitz_large_all_ones_is_exact(fft_path: str) -> None:
    # worst case for rounding: every sum is as large as it gets
    n, m = 1 << 20, 1000
    x = np.ones(n, dtype=np.uint8)
    seed = np.ones(n + m - 1, dtype=np.uint8)
    assert (toeplitz_hash(x, seed, m) == n % 2).all()


def test_toeplitz_large_dense_block_is_exact() -> None:
    # benchmark-like shape through the default (four-step) path; the reference uses
    # linearity: x = 1 + e over GF(2) with e sparse, T·1 from prefix sums of the seed
    rng = np.random.default_rng(11)
    n, m = 3_000_000, 1_000_003
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    flips = rng.choice(n, size=64, replace=False)
    x = np.ones(n, dtype=np.uint8)
    x[flips] = 0
    prefix = np.concatenate(([0], np.cumsum(seed, dtype=np.int64)))
    expected = (prefix[n : n + m] - prefix[:m]) & 1  # row i of T·1: seed[i .. i+n-1]
    for j in flips:
        expected ^= seed[n - 1 - j : n - 1 - j + m]
    np.testing.assert_array_equal(toeplitz_hash(x, seed, m), expected.astype(np.uint8))


def test_toeplitz_error_bound_leaves_wide_margin() -> None:
    # the a priori rounding bound at the benchmark size (10^7 -> 3·10^6 bits: the
    # Toeplitz part of (I | T) is 3·10^6 × 7·10^6, FFT size 10^7), and for the plain
    # Toeplitz product of the same shape
    assert amplify_mod._error_bound(7_000_000, 3_000_000, 10_240_000) < 0.01
    assert amplify_mod._error_bound(10_000_000, 3_000_000, 13_107_200) < 0.01


def test_toeplitz_shrinks_chunks_when_the_bound_requires(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds: list[tuple[int, int]] = []
    real = amplify_mod._error_bound

    def tight(nc: int, m: int, size: int) -> float:
        bounds.append((nc, m))
        return 1.0 if nc > 64 else real(nc, m, size)

    monkeypatch.setattr(amplify_mod, "_error_bound", tight)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, 300, dtype=np.uint8)
    seed = rng.integers(0, 2, 300 + 50 - 1, dtype=np.uint8)
    np.testing.assert_array_equal(toeplitz_hash(x, seed, 50), naive_toeplitz(x, seed, 50))
    assert bounds[-1][0] == 64


def ref_mas(x: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    n = x.size
    w = n + m - 1

    def to_int(b: np.ndarray) -> int:
        return int("".join(map(str, b)) or "0", 2)

    a, b, xi = to_int(seed[:w]), to_int(seed[w:]), to_int(x)
    h = ((a * xi + b) % (1 << w)) >> (w - m)
    return np.array([int(c) for c in format(h, f"0{m}b")], dtype=np.uint8)


@pytest.mark.parametrize(("n", "m"), SIZES)
def test_mas_equals_integer_reference(n: int, m: int) -> None:
    rng = np.random.default_rng(n + 17 * m)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, seed_bits("mas", n, m), dtype=np.uint8)
    np.testing.assert_array_equal(mas_hash(x, seed, m), ref_mas(x, seed, m))


@pytest.mark.parametrize("family", ["toeplitz", "mas"])
def test_collision_rate_is_two_universal(family: str) -> None:
    # two fixed distinct inputs collide for about 2^-m of the seeds
    rng = np.random.default_rng(3)
    n, m, trials = 40, 3, 4000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    y = x.copy()
    y[[3, 17]] ^= 1
    hits = 0
    for _ in range(trials):
        seed = rng.integers(0, 2, seed_bits(family, n, m), dtype=np.uint8)
        hits += bool((amplify(family, x, seed, m) == amplify(family, y, seed, m)).all())
    assert abs(hits / trials - 1 / 8) < 0.03


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="seed"):
        toeplitz_hash(np.ones(4, np.uint8), np.ones(4, np.uint8), 2)
    with pytest.raises(ValueError, match="m <= n"):
        modified_toeplitz_hash(np.ones(4, np.uint8), np.ones(3, np.uint8), 5)
    with pytest.raises(ValueError, match="n-1 bits"):
        modified_toeplitz_hash(np.ones(4, np.uint8), np.ones(4, np.uint8), 2)
    with pytest.raises(ValueError, match="unknown hash family"):
        seed_bits("sha", 4, 2)


def test_kept_fft_plan_is_never_shared_by_concurrent_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the four-step plan (working arrays) kept between calls is taken out while in use
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(amplify_mod, "_FOUR_STEP_MIN", 0)
    rng = np.random.default_rng(21)
    n, m = 3000, 1000
    jobs = [
        (rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n + m - 1, dtype=np.uint8))
        for _ in range(16)
    ]
    expected = [naive_toeplitz(x, s, m) for x, s in jobs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(lambda job: toeplitz_hash(job[0], job[1], m), jobs))
            for g, e in zip(got, expected, strict=True):
                np.testing.assert_array_equal(g, e)
    assert len(amplify_mod._kept_plans) == 1  # one plan kept for the next block
    amplify_mod.clear_fft_cache()
    assert not amplify_mod._kept_plans


def test_kept_plan_serves_a_slightly_smaller_block_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(amplify_mod, "_FOUR_STEP_MIN", 0)
    amplify_mod.clear_fft_cache()
    rng = np.random.default_rng(22)
    kept = []
    for n in (3000, 2900, 2800, 1500):  # the last needs less than 90 %: a new plan
        x = rng.integers(0, 2, n, dtype=np.uint8)
        seed = rng.integers(0, 2, n + 999, dtype=np.uint8)
        np.testing.assert_array_equal(toeplitz_hash(x, seed, 1000), naive_toeplitz(x, seed, 1000))
        kept.append(next(iter(amplify_mod._kept_plans)))
    assert kept[0] == kept[1] == kept[2] != kept[3]
