"""Verification of reconciled frames by polynomial hashing over GF(2^64).

A frame of L bits is cut into K-1 big-endian 64-bit words m_1..m_{K-1} (zero
padded), followed by the word m_K = L, and hashed at a point x in GF(2^64)
(modulus x^64 + x^4 + x^3 + x + 1) as

    h_x(m) = sum_i m_i · x^(K+1-i)

For two different frames the difference is a non-zero polynomial of degree <= K
in x, so a uniformly random x makes them collide with probability <= K/2^64
(the classic polynomial-evaluation ε-almost-universal family, e.g. Stinson,
"Universal hashing and authentication codes", 1994). With r independent points
the tag has 64·r bits and collision probability <= (K/2^64)^r; :func:`tag_points`
picks the least r reaching ε_cor. Alice draws the points fresh after
reconciliation ends. Tag bits count as leaked.

All frames of a batch are hashed at once: the carry-less products word × power
are 64 vectorized shift/XOR steps, summed (XOR) unreduced as 128-bit values and
reduced once per frame.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["gf64_mul", "poly_hash64", "tag_points"]

_U64 = np.uint64
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def _clmul(
    x: NDArray[np.uint64], y: NDArray[np.uint64]
) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Carry-less 64×64 -> 128-bit product, elementwise: (hi, lo)."""
    x, y = np.broadcast_arrays(x.astype(_U64), y.astype(_U64))
    lo = np.zeros(x.shape, dtype=_U64)
    hi = np.zeros(x.shape, dtype=_U64)
    one = _U64(1)
    for b in range(64):
        mask = ((y >> _U64(b)) & one) * _ONES
        lo ^= (x << _U64(b)) & mask
        if b:
            hi ^= (x >> _U64(64 - b)) & mask
    return hi, lo


def _reduce(hi: NDArray[np.uint64], lo: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """(hi·x^64 + lo) mod (x^64 + x^4 + x^3 + x + 1)."""
    u1, u3, u4 = _U64(1), _U64(3), _U64(4)
    r = lo ^ hi ^ (hi << u1) ^ (hi << u3) ^ (hi << u4)
    o = (hi >> _U64(63)) ^ (hi >> _U64(61)) ^ (hi >> _U64(60))
    return np.asarray(r ^ o ^ (o << u1) ^ (o << u3) ^ (o << u4), dtype=_U64)


def gf64_mul(x: NDArray[np.uint64], y: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Product in GF(2^64), elementwise."""
    return _reduce(*_clmul(x, y))


def _powers(x: int, count: int) -> NDArray[np.uint64]:
    """x^1 .. x^count in GF(2^64)."""
    pw = np.array([x], dtype=_U64)
    while pw.size < count:
        pw = np.concatenate([pw, gf64_mul(pw, np.array(pw[-1], dtype=_U64))])
    return pw[:count]


def _words(bits: NDArray[np.uint8]) -> NDArray[np.uint64]:
    frames, n = bits.shape
    packed = np.packbits(bits, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((frames, pad), dtype=np.uint8)], axis=1)
    words = packed.view(">u8").astype(_U64)
    length = np.full((frames, 1), n, dtype=_U64)
    return np.concatenate([words, length], axis=1)


def poly_hash64(bits: NDArray[np.uint8], points: list[int]) -> NDArray[np.uint64]:
    """Tags of every frame (rows of ``bits``) at each point: shape (frames, len(points))."""
    bits = np.atleast_2d(np.asarray(bits, dtype=np.uint8))
    words = _words(bits)
    k = words.shape[1]
    out = np.zeros((bits.shape[0], len(points)), dtype=_U64)
    for j, x in enumerate(points):
        powers = _powers(int(x) & 0xFFFFFFFFFFFFFFFF, k)[::-1]
        hi, lo = _clmul(words, powers[None, :])
        out[:, j] = _reduce(np.bitwise_xor.reduce(hi, axis=1), np.bitwise_xor.reduce(lo, axis=1))
    return out


def tag_points(frame_bits: int, eps_cor: float, frames: int = 1) -> int:
    """Least r with frames·(K/2^64)^r <= eps_cor (union bound over the block's frames)."""
    k = -(-frame_bits // 64) + 1
    per_point = math.log2(k) - 64.0
    return max(1, math.ceil((math.log2(eps_cor) - math.log2(frames)) / per_point))
