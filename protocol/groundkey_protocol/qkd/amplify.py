"""Privacy amplification: 2-universal hashing of the reconciled key down to ℓ bits.

Two exact families, chosen by name (:data:`FAMILIES`); Alice draws a fresh
uniform seed for every block and sends it.

``toeplitz`` — the modified Toeplitz matrix (I_m | T) of Hayashi & Tsurumaru
("More efficient privacy amplification with less random seeds via dual universal
hash function", IEEE Trans. Inf. Theory 62(4), 2016): y = x[:m] ⊕ T·x[m:] with T
the m × (n - m) Toeplitz matrix of n - 1 seed bits. 2-universal: for x ≠ x' with
difference (d1, d2), if d2 ≠ 0 then T·d2 is uniform over the seeds (Toeplitz
matrices are an XOR-universal family: Carter & Wegman 1979; Krawczyk, CRYPTO '94),
so d1 = T·d2 with probability 2^-m; if d2 = 0 then d1 ≠ 0 and they never collide.
Against the plain m × n Toeplitz product (:func:`toeplitz_hash`, also exact and
kept for reference) it needs m fewer seed bits and a convolution of n - 1 instead
of n + m - 1 terms: 1.3× less FFT work at ℓ = 0.3·n.

:func:`toeplitz_hash` — y = T·x over GF(2), T[i, j] = s[i - j + n - 1] for an
(m × n) Toeplitz matrix of n + m - 1 seed bits. The integer sums Σ_j s[i - j + n - 1]·x[j]
are a circular convolution of size N >= n + m - 1 (no wrap-around reaches the m
needed outputs) computed with float64 FFTs, rounded, cast to int64, then mod 2.
Large sizes use the four-step FFT (N = N1·N2: batched real FFTs of length N1,
twiddle, batched complex FFTs of length N2, spectrum kept in transposed order,
N1 ≈ √N/3), about 2× faster here than one long FFT because every pass is
cache-friendly; its twiddle table and working arrays (32·N bytes, 330 MB at the
benchmark size) are kept for the next block, reused when N is at most 10 % above
that block's need (:func:`clear_fft_cache` frees them).

Exactness. Each exact sum is an integer <= n, so rounding is exact when every
computed sum is within 1/2 of it. With unit roundoff ε = 2^-53, a computed FFT
of length N satisfies ||ŷ - y||_2 <= δ·||y||_2 with δ = c·ε·log2 N (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., Thm 24.2, radix 2;
pocketfft's mixed radices behave alike). c = 8 covers butterfly and twiddle
errors, including the four-step twiddle, a product of two exp tables whose
arguments are reduced exactly in integers. For 0/1 data the pointwise product
and the inverse then give a max-norm error <= δ·(√n·L + n·√L + √N·n), with
L = n + m - 1 seed bits, using ||x||_1 <= n, ||x||_2 <= √n, ||s||_2 <= √L and
||x ⊛ s||_2 <= √N·n. :func:`_error_bound` evaluates this; inputs are chunked
(at most 2^24 bits, fewer if the bound reaches 1/4) and the chunks' integer
sums added. At the benchmark size (n = 10^7, m = 3·10^6; T of (I | T) is 3·10^6 ×
7·10^6, N = 1.024·10^7) the bound is 0.0015 (0.0024 for the plain 3·10^6 × 10^7 T).
As a second, a posteriori check every computed sum must lie within 1/4 of an
integer. Tests compare against a naive GF(2) product (both FFT paths), an
all-ones worst case and a dense 10^6-output block.

``mas`` — Dietzfelbinger's multiply-add-shift: for an n-bit input x and
w = n + m - 1, h_{a,b}(x) = ((a·x + b) mod 2^w) >> (w - m) with a, b uniform in
[0, 2^w). Strongly universal (pairwise independent, hence 2-universal with
collision probability exactly 2^-m): M. Dietzfelbinger, "Universal hashing and
k-wise independent random variables via integer arithmetic without primes",
STACS 1996, Theorem 3; restated as Lemma 3.3 of M. Thorup, "High speed hashing
for integers and strings", arXiv:1504.06804. The big-integer product runs in GMP
(gmpy2) when available, else in Python's int (exact, slower). Seed: 2w bits.

Bits are ``uint8`` 0/1 arrays; integers are read big-endian (first bit most
significant).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FAMILIES",
    "Family",
    "amplify",
    "clear_fft_cache",
    "mas_hash",
    "modified_toeplitz_hash",
    "seed_bits",
    "toeplitz_hash",
]

_CHUNK_BITS = 1 << 24
_FOUR_STEP_MIN = 1 << 16  # convolutions shorter than this use one plain real FFT
_EPS = 2.0**-53


def _fast_size(n: int) -> int:
    """Smallest 2^a·3^b·5^c >= n (sizes numpy's pocketfft handles fastest)."""
    best = 1 << max(0, (n - 1).bit_length())
    f5 = 1
    while f5 < best:
        f35 = f5
        while f35 < best:
            size = f35
            while size < n:
                size *= 2
            best = min(best, size)
            f35 *= 3
        f5 *= 5
    return best


def _error_bound(nc: int, m: int, size: int) -> float:
    """A priori bound on |computed - exact| of every convolution sum (see module docstring)."""
    length = nc + m - 1
    delta = 8.0 * max(1, (size - 1).bit_length()) * _EPS
    return delta * (math.sqrt(nc) * length + nc * math.sqrt(length) + math.sqrt(size) * nc)


def _conv_plain(x: NDArray[np.uint8], seed: NDArray[np.uint8], m: int) -> NDArray[np.float64]:
    n = x.size
    size = _fast_size(n + m - 1)
    fx = np.fft.rfft(x.astype(np.float64), size)
    fx *= np.fft.rfft(seed.astype(np.float64), size)
    return np.fft.irfft(fx, size)[n - 1 : n - 1 + m]


def _twiddles(n1: int, n2: int) -> NDArray[np.complex128]:
    """W[k1, j2] = exp(-2πi·k1·j2 / (n1·n2)) for k1 <= n1/2, from two small exact tables."""
    size = n1 * n2
    rows = n1 // 2 + 1
    q = 1 << max(0, (rows.bit_length() + 1) // 2)
    j2 = np.arange(n2, dtype=np.int64)[None, :]
    lo = np.exp((-2j * np.pi / size) * ((np.arange(q, dtype=np.int64)[:, None] * j2) % size))
    hi_k = np.arange(-(-rows // q), dtype=np.int64)[:, None] * q
    hi = np.exp((-2j * np.pi / size) * ((hi_k * j2) % size))
    table: NDArray[np.complex128] = (hi[:, None, :] * lo[None, :, :]).reshape(-1, n2)[:rows]
    table.flags.writeable = False
    return table


@dataclass(frozen=True, slots=True)
class _FourStepPlan:
    """What a four-step FFT convolution of size n1·n2 needs besides its inputs: the
    twiddle table and the working arrays (32·N bytes in all). Kept for the next block
    of a similar size: fresh arrays of 10^7 elements cost ~5 ms each in page faults."""

    n1: int
    n2: int
    twiddles: NDArray[np.complex128]
    real: NDArray[np.float64]
    spectrum: NDArray[np.complex128]
    spectrum2: NDArray[np.complex128]


# The plan kept from the last convolution (at most one). A caller takes it out while
# it works, so concurrent callers (threads) never share working arrays.
_kept_plans: dict[tuple[int, int], _FourStepPlan] = {}


def _take_plan(length: int) -> _FourStepPlan:
    """A plan for a convolution of ``length`` terms: the kept one if it is large enough
    and at most 10 % larger (blocks of a pass differ a little in size), else a new one."""
    for key in list(_kept_plans):
        if length <= key[0] * key[1] <= 1.1 * length:
            plan = _kept_plans.pop(key, None)
            if plan is not None:
                return plan
    n1 = 1 << max(1, (length.bit_length() - 3) // 2)  # ~sqrt/3: measured best
    n2 = _fast_size(-(-length // n1))
    rows = n1 // 2 + 1
    return _FourStepPlan(
        n1,
        n2,
        _twiddles(n1, n2),
        np.empty((n1, n2), dtype=np.float64),
        np.empty((rows, n2), dtype=np.complex128),
        np.empty((rows, n2), dtype=np.complex128),
    )


def _keep_plan(plan: _FourStepPlan) -> None:
    _kept_plans.clear()
    _kept_plans[(plan.n1, plan.n2)] = plan


def clear_fft_cache() -> None:
    """Drop the kept four-step plan (benchmarks; frees its 32·N bytes)."""
    _kept_plans.clear()


def _conv_four_step(x: NDArray[np.uint8], seed: NDArray[np.uint8], m: int) -> NDArray[np.float64]:
    """Circular convolution of size N = n1·n2 >= n + m - 1 by the four-step FFT,
    outputs n-1 .. n+m-2.

    Index j = j1·n2 + j2: real FFTs over j1 (n2 short strided transforms, batched and
    cache-friendly), twiddle, complex FFTs over j2. The spectrum stays in this
    transposed order; the pointwise product and the inverse do not care.
    """
    n = x.size
    plan = _take_plan(n + m - 1)
    n1 = plan.n1
    w, buf = plan.twiddles, plan.real
    flat = buf.reshape(-1)

    def forward(a: NDArray[np.uint8], spec: NDArray[np.complex128]) -> NDArray[np.complex128]:
        flat[: a.size] = a
        flat[a.size :] = 0.0
        np.fft.rfft(buf, axis=0, out=spec)
        spec *= w
        return np.fft.fft(spec, axis=1, out=spec)

    prod = forward(x, plan.spectrum)
    prod *= forward(seed, plan.spectrum2)
    np.fft.ifft(prod, axis=1, out=prod)
    # times conj(W), without a conjugated copy of the table: conj(conj(P)·W)
    np.conjugate(prod, out=prod)
    prod *= w
    np.conjugate(prod, out=prod)
    np.fft.irfft(prod, n1, axis=0, out=buf)
    out = flat[n - 1 : n - 1 + m].copy()
    _keep_plan(plan)
    return out


def _toeplitz_sums(x: NDArray[np.uint8], seed: NDArray[np.uint8], m: int) -> NDArray[np.int64]:
    """Exact integer sums Σ_j seed[i - j + n - 1]·x[j] for i < m."""
    length = x.size + m - 1
    conv = _conv_plain(x, seed, m) if length < _FOUR_STEP_MIN else _conv_four_step(x, seed, m)
    sums = np.rint(conv)
    # a posteriori guard on top of the a priori bound: never observed to trigger
    off = np.subtract(conv, sums, out=conv)
    np.abs(off, out=off)
    if off.size and float(off.max()) > 0.25:
        raise ArithmeticError("toeplitz: FFT rounding margin exceeded")
    return sums.astype(np.int64)


def toeplitz_hash(bits: NDArray[np.uint8], seed: NDArray[np.uint8], m: int) -> NDArray[np.uint8]:
    """y = T·x mod 2 with T[i, j] = seed[i - j + n - 1]; ``seed`` holds n + m - 1 bits."""
    x = np.asarray(bits, dtype=np.uint8).reshape(-1)
    s = np.asarray(seed, dtype=np.uint8).reshape(-1)
    n = x.size
    if not m >= 1 or n < 1 or s.size != n + m - 1:
        raise ValueError(f"toeplitz: need n >= 1, m >= 1, seed of n+m-1 bits (n={n}, m={m})")
    chunk = _CHUNK_BITS
    while chunk > 1 and _error_bound(chunk, m, 4 * (chunk + m)) >= 0.25:  # N <= 4L
        chunk //= 2
    acc: NDArray[np.int64] | None = None
    for j0 in range(0, n, chunk):
        xc = x[j0 : j0 + chunk]
        nc = xc.size
        # T restricted to columns j0..j0+nc-1 is Toeplitz with the seed window below.
        lo = n - j0 - nc
        sums = _toeplitz_sums(xc, s[lo : lo + nc + m - 1], m)
        acc = sums if acc is None else acc + sums
    assert acc is not None
    acc &= 1
    return acc.astype(np.uint8)


def modified_toeplitz_hash(
    bits: NDArray[np.uint8], seed: NDArray[np.uint8], m: int
) -> NDArray[np.uint8]:
    """y = (I_m | T)·x mod 2 = x[:m] ⊕ T·x[m:] with T the m × (n - m) Toeplitz matrix of
    ``seed`` (n - 1 bits; m <= n)."""
    x = np.asarray(bits, dtype=np.uint8).reshape(-1)
    s = np.asarray(seed, dtype=np.uint8).reshape(-1)
    n = x.size
    if not 1 <= m <= n or s.size != n - 1:
        raise ValueError(f"toeplitz: need 1 <= m <= n and a seed of n-1 bits (n={n}, m={m})")
    head = x[:m].copy()
    if m < n:
        head ^= toeplitz_hash(x[m:], s, m)
    return head


def _to_int(bits: NDArray[np.uint8]) -> int:
    n = bits.size
    if n == 0:
        return 0
    return int.from_bytes(np.packbits(bits).tobytes(), "big") >> ((-n) % 8)


def _from_int(value: int, m: int) -> NDArray[np.uint8]:
    nbytes = -(-m // 8)
    raw = np.frombuffer(value.to_bytes(nbytes, "big"), dtype=np.uint8)
    return np.unpackbits(raw)[nbytes * 8 - m :].copy()


def _bigint(value: int) -> Any:
    try:
        gmpy2 = importlib.import_module("gmpy2")
    except ImportError:  # pragma: no cover - gmpy2 is a dependency
        return value
    return gmpy2.mpz(value)


def mas_hash(bits: NDArray[np.uint8], seed: NDArray[np.uint8], m: int) -> NDArray[np.uint8]:
    """Multiply-add-shift hash of ``bits`` (n) to m bits; ``seed`` holds 2(n + m - 1) bits."""
    x = np.asarray(bits, dtype=np.uint8).reshape(-1)
    s = np.asarray(seed, dtype=np.uint8).reshape(-1)
    n = x.size
    w = n + m - 1
    if not m >= 1 or n < 1 or s.size != 2 * w:
        raise ValueError(f"mas: need n >= 1, m >= 1, seed of 2(n+m-1) bits (n={n}, m={m})")
    a = _bigint(_to_int(s[:w]))
    b = _bigint(_to_int(s[w:]))
    xi = _bigint(_to_int(x))
    h = ((a * xi + b) % (_bigint(1) << w)) >> (w - m)
    return _from_int(int(h), m)


@dataclass(frozen=True, slots=True)
class Family:
    """A hash family: seed length for (n, m) and the hash itself."""

    name: str
    seed_bits: Callable[[int, int], int]
    hash: Callable[[NDArray[np.uint8], NDArray[np.uint8], int], NDArray[np.uint8]]


FAMILIES: dict[str, Family] = {
    "toeplitz": Family("toeplitz", lambda n, m: max(n - 1, 0), modified_toeplitz_hash),
    "mas": Family("mas", lambda n, m: 2 * (n + m - 1), mas_hash),
}


def _family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown hash family {name!r}; known: {sorted(FAMILIES)}") from None


def seed_bits(family: str, n: int, m: int) -> int:
    """Seed length in bits for hashing n bits to m bits."""
    return _family(family).seed_bits(n, m)


def amplify(
    family: str, bits: NDArray[np.uint8], seed: NDArray[np.uint8], m: int
) -> NDArray[np.uint8]:
    """Hash ``bits`` down to ``m`` bits with ``family`` and ``seed``."""
    return _family(family).hash(bits, seed, m)
