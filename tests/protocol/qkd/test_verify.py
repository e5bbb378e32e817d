"""GF(2^64) polynomial hashing against a plain-Python reference."""

from __future__ import annotations

import numpy as np

from groundkey_protocol.qkd.verify import gf64_mul, poly_hash64, tag_points

POLY = (1 << 64) | 0b11011


def ref_mul(a: int, b: int) -> int:
    r = 0
    for i in range(64):
        if b >> i & 1:
            r ^= a << i
    for i in range(127, 63, -1):
        if r >> i & 1:
            r ^= POLY << (i - 64)
    return r


def ref_hash(bits: np.ndarray, x: int) -> int:
    """Horner over the 64-bit words of the frame, then the length word, times x."""
    padded = np.concatenate([bits, np.zeros((-bits.size) % 64, dtype=np.uint8)])
    words = [int("".join(map(str, padded[i : i + 64])), 2) for i in range(0, padded.size, 64)]
    words.append(bits.size)
    h = 0
    for w in words:
        h = ref_mul(h ^ w, x)
    return h


def test_gf64_mul_matches_reference() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**64, 300, dtype=np.uint64)
    b = rng.integers(0, 2**64, 300, dtype=np.uint64)
    got = gf64_mul(a, b)
    assert all(int(g) == ref_mul(int(x), int(y)) for g, x, y in zip(got, a, b, strict=True))
    top = np.array([2**64 - 1], dtype=np.uint64)
    assert int(gf64_mul(top, top)[0]) == ref_mul(2**64 - 1, 2**64 - 1)


def test_poly_hash_matches_horner_and_separates_frames() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 63, 64, 65, 200):
        bits = rng.integers(0, 2, (3, n), dtype=np.uint8)
        points = [int(rng.integers(0, 2**63)) * 2 + 1, 0xDEADBEEF]
        tags = poly_hash64(bits, points)
        for f in range(3):
            for j, x in enumerate(points):
                assert int(tags[f, j]) == ref_hash(bits[f], x)
    bits = rng.integers(0, 2, (50, 10_000), dtype=np.uint8)
    flipped = bits.copy()
    flipped[np.arange(50), rng.integers(0, 10_000, 50)] ^= 1
    point = [int(rng.integers(0, 2**63))]
    assert (poly_hash64(bits, point) != poly_hash64(flipped, point)).all()


def test_tag_points_reach_eps_cor() -> None:
    assert tag_points(100_000, 1e-15, 10) == 1  # 10 · 1564 / 2^64 ≈ 8.5e-16
    assert tag_points(100_000, 1e-30, 10) == 2
    assert tag_points(10**9, 1e-15, 1000) == 2
