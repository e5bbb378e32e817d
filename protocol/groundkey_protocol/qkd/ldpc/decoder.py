"""Syndrome belief propagation (layered sum-product), vectorized over frames.

Running posteriors live in a ``(block column, Z, frames)`` float32 array, so the
``Z`` variables a circulant of shift ``s`` connects to a layer are two contiguous
slices (``[s:]`` then ``[:s]``): no gathers by index. One layer (block row) holds
its check-to-variable messages as ``(degree, Z, frames)``.

Sum-product runs in the *ratio domain*: every posterior and message is kept as ``E =
e^L`` (``L`` the LLR, positive = bit 0), so the variable update is a division and a
product instead of a difference and a sum, and the tanh rule needs no transcendental
function: ``tanh(L/2) = 1 - 2/(E + 1)`` and ``e^{2·atanh(y)} = (1 + y)/(1 - y)``. A
layer is, per edge: ``v = total/m`` (gather), clip ``v`` to ``e^±60``, ``t = 1 -
2/(v + 1)`` (three passes), the check's product ``P = s·Π t``, ``m = (1 + y)/(1 -
y)`` for ``y = P/t``, computed as ``(t + P)/(t - P)`` (three passes), ``total =
v·m`` (scatter), with ``s = ±(1 - 2^-16)`` the syndrome bit. The clip keeps every
number a normal float32 (``m`` lies within ``2^±17``, so nothing leaves ``e^±84``):
no overflow, no subnormals (slow on some CPUs), no ratio stuck at 0 or ∞; beyond
``|L| = 60`` float32 gives ``t = ±1`` anyway. The syndrome factor bounds every
check's product, so an all-but-one quotient stays below 1 despite rounding (messages
within LLR ±11.8). The product over "all but one" is the check's full product
divided by one's own factor; a layer where some check's full product is below 10^-30
in magnitude (an erased input, i.e. a punctured symbol in the first iteration, or
many weak ones) takes exact prefix times suffix products instead (a loop over the
degree; exact with zero inputs). A frame is done as soon as its hard decision
(``total < 1``) meets the target syndrome, checked every iteration on hard decisions
bit-packed along the frames (one ``np.take`` of words per layer); once a quarter of
the frames in the working set are done, it is compacted in place (no fresh pages).

Why the ratio domain: numpy's float32 ``tanh`` and ``arctanh`` are fast only where
they are vectorized (AVX-512 builds: 0.16 and 0.27 ns per element, measured before),
and elsewhere they are scalar: on an AMD EPYC with AVX2 only, 4.7 and 31 ns per
element against 0.13–0.19 ns for an add, multiply or divide. The tanh form this
replaced (six passes, two of them ``tanh``/``arctanh``) decoded 16 frames of 9·10^4
key bits at QBER 2 % at 0.26 Mbit/s there; this form (then eleven cheap passes, now
ten) at 2.43 Mbit/s, with the same decisions and iteration counts for every frame
(``tests/protocol/qkd/test_ldpc_decoder.py`` also checks it against a float64
textbook decoder). On the AVX-512 machine the tanh form took 1.13 ns per edge and
frame; these ten passes, by the unit costs measured there, would take ~1.3 ns (not
measured: no such machine was at hand).

Tried and slower: a lookup-table φ (``np.take`` is a scalar gather),
``multiply.accumulate`` along the degree axis (a strided inner loop, ~20× slower
than a loop over rows), one fancy-index gather/scatter per layer instead of
slices (even for one frame). Normalized min-sum would need about as many passes
(abs, min, second min, sign bits, select, scale) and loses efficiency at check
degrees of 40–70.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from groundkey_protocol.qkd.ldpc.construction import QcLdpcCode

__all__ = ["BpDecoder", "DecodeResult", "bsc_llr"]

FloatArray = npt.NDArray[np.float32]
BitArray = npt.NDArray[np.uint8]
WordArray = npt.NDArray[np.unsignedinteger[Any]]
IndexArray = npt.NDArray[np.intp]


def bsc_llr(qber: float) -> float:
    """Channel LLR magnitude ``ln((1-q)/q)`` of a binary symmetric channel."""
    q = min(max(qber, 1e-6), 0.5 - 1e-6)
    return float(np.log((1.0 - q) / q))


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """Hard decisions ``bits (frames, n)``, ``ok`` (syndrome met), ``iterations`` used."""

    bits: BitArray
    ok: npt.NDArray[np.bool_]
    iterations: npt.NDArray[np.int32]

    def __repr__(self) -> str:  # the bits are key material
        return f"DecodeResult(frames={self.ok.size}, ok={int(self.ok.sum())})"


#: ``1 - 2^-16``: the syndrome factor's magnitude. It bounds every check's product,
#: so an all-but-one quotient stays below 1 in magnitude with room for the rounding
#: of up to ~2^8 factors (2^-24 each), and ``(1 + y)/(1 - y)`` needs no clip before it.
_SYNDROME_FACTOR = np.float32(1.0 - 2.0**-16)
#: Posterior and extrinsic ratios ``e^L`` are kept within ``e^±60`` (``v`` is clipped
#: in every layer), so ``v·m`` and ``total/m`` (``m`` within ``2^±17``) stay within
#: ``e^±84``: normal float32 numbers, no overflow, no subnormals (slow on some CPUs),
#: no ratio stuck at 0 or ∞. ``|L| > 60`` gives ``t = ±1`` in float32 anyway.
_LLR_CAP = np.float32(60.0)
_RATIO_MAX = np.float32(np.exp(60.0))
_RATIO_MIN = np.float32(np.exp(-60.0))
#: Elements moved per call when the working set is compacted.
_COMPACT_CHUNK = 1 << 16
#: Below this, a check's full product is not divided (prefix/suffix products instead).
_MIN_PRODUCT = np.float32(1e-30)


def _word_width(frames: int) -> int:
    """Bits per row when ``frames`` bits are packed: 8, 16, 32 or a multiple of 64."""
    return next((w for w in (8, 16, 32) if frames <= w), 64 * -(-frames // 64))


def _pack_rows(padded: npt.NDArray[np.bool_]) -> WordArray:
    """``padded (rows, width)`` bits as ``(rows, words)`` unsigned words: bit ``f % w`` of
    word ``f // w`` is column ``f``, for ``w = min(width, 64)``."""
    rows, width = padded.shape
    packed = np.packbits(padded, bitorder="little").reshape(rows, width // 8)
    return packed.view(f"<u{min(width // 8, 8)}")


def _pack_frames(bits: npt.NDArray[np.bool_]) -> WordArray:
    """``bits (rows, frames)`` packed along frames by :func:`_pack_rows` (zero padding)."""
    rows, frames = bits.shape
    padded = np.zeros((rows, _word_width(frames)), dtype=bool)
    padded[:, :frames] = bits
    return _pack_rows(padded)


class _Views:
    """Per-layer views into the working arrays for one working-set size (frames)."""

    def __init__(
        self,
        layers: list[tuple[list[tuple[int, int]], slice]],
        z: int,
        total: FloatArray,
        msg_buf: FloatArray,
        sfac: FloatArray,
        bufs: tuple[FloatArray, FloatArray, FloatArray],
    ) -> None:
        fa = total.shape[2]
        # per layer: (total slice, message slice, v2c slice) triples, and the arrays
        self.slices: list[list[tuple[FloatArray, FloatArray, FloatArray]]] = []
        self.arrays: list[tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]] = []
        at = 0
        for blocks, rows in layers:
            size = len(blocks) * z * fa
            shape = (len(blocks), z, fa)
            msg = msg_buf[at : at + size].reshape(shape)
            at += size
            v, t, p = (b[:size].reshape(shape) for b in bufs)
            triples: list[tuple[FloatArray, FloatArray, FloatArray]] = []
            for k, (j, s) in enumerate(blocks):
                triples.append((total[j, s:], msg[k, : z - s], v[k, : z - s]))
                if s:
                    triples.append((total[j, :s], msg[k, z - s :], v[k, z - s :]))
            self.slices.append(triples)
            self.arrays.append((v, t, p, msg, sfac[rows]))


def _ratio_of_tanh(y: FloatArray, scratch: FloatArray) -> None:
    """In place: ``y = tanh(L/2)`` becomes the ratio ``e^L = (1 + y)/(1 - y)`` (``1 + y``
    is exact where ``y`` is near -1)."""
    np.subtract(1, y, out=scratch)
    np.add(y, 1, out=y)
    np.divide(y, scratch, out=y)


def _compact(buf: FloatArray, rows: int, frames: int, kept: IndexArray) -> None:
    """In place: ``buf`` as ``(rows, frames)`` becomes ``(rows, kept.size)`` (the kept
    frames), by chunks of rows so that no chunk overwrites rows not yet read and no
    full-size copy (fresh pages) is made."""
    src = buf[: rows * frames].reshape(rows, frames)
    dst = buf[: rows * kept.size].reshape(rows, kept.size)
    step = max(1, _COMPACT_CHUNK // frames)
    for lo in range(0, rows, step):
        np.take(src[lo : lo + step], kept, axis=1, out=dst[lo : lo + step])


class BpDecoder:
    """Layered sum-product decoder for one :class:`QcLdpcCode`.

    One layer is one block row: its ``Z`` checks touch each variable at most once,
    so a layer reads the running posteriors of its variables, updates its ``Z·d``
    check-to-variable messages for all frames of the batch (sum-product, ratio domain), and
    writes the posteriors back. Layered scheduling converges in about half the
    iterations of flooding. ``batch`` bounds the frames decoded together (memory
    ~ ``edges × batch × 4`` bytes; default: ~64 MiB worth).
    """

    def __init__(
        self, code: QcLdpcCode, *, max_iterations: int = 80, batch: int | None = None
    ) -> None:
        self.code = code
        self.max_iterations = max_iterations
        edges = int((code.base >= 0).sum()) * code.z
        # messages of one batch stay within ~64 MiB (float32)
        self.batch = batch if batch is not None else min(128, max(4, (1 << 24) // edges))
        z = code.z
        # per block row: (block column, shift) of each circulant, and its check rows
        self._layers: list[tuple[list[tuple[int, int]], slice]] = []
        # per block row: the variable of every edge, (degree · Z) in (circulant, row) order
        self._edge_vars: list[IndexArray] = []
        r = np.arange(z, dtype=np.intp)
        for i in range(code.mb):
            cols = np.flatnonzero(code.base[i] >= 0)
            blocks = [(int(j), int(code.base[i, j])) for j in cols]
            self._layers.append((blocks, slice(i * z, (i + 1) * z)))
            self._edge_vars.append(
                np.concatenate([j * z + (r + s) % z for j, s in blocks]).astype(np.intp)
            )
        self._edges = sum(int(v.size) for v in self._edge_vars)

    def __repr__(self) -> str:
        return f"BpDecoder({self.code!r}, max_iterations={self.max_iterations})"

    def decode(self, llr: npt.ArrayLike, syndrome: npt.ArrayLike) -> DecodeResult:
        """Decode ``llr (frames, n)`` (positive = bit 0) toward ``syndrome (frames, m)``."""
        llr_a = np.asarray(llr, dtype=np.float32)
        syn_a = np.asarray(syndrome, dtype=np.uint8)
        frames = llr_a.shape[0]
        if llr_a.shape != (frames, self.code.n) or syn_a.shape != (frames, self.code.m):
            raise ValueError("llr must be (frames, n) and syndrome (frames, m)")
        bits = np.zeros((frames, self.code.n), dtype=np.uint8)
        ok = np.zeros(frames, dtype=bool)
        iterations = np.zeros(frames, dtype=np.int32)
        for lo in range(0, frames, self.batch):
            hi = min(lo + self.batch, frames)
            b, k, it = self._decode_batch(llr_a[lo:hi], syn_a[lo:hi])
            bits[lo:hi], ok[lo:hi], iterations[lo:hi] = b, k, it
        return DecodeResult(bits, ok, iterations)

    def _unsatisfied(
        self, total: FloatArray, synd_words: WordArray, hard_buf: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """Per frame: does the hard decision of ``total (nb, Z, frames)`` miss the syndrome?

        ``synd_words`` is the target syndrome packed by :func:`_pack_frames`;
        ``hard_buf`` is scratch of at least ``n · _word_width(frames)`` bools.
        """
        code = self.code
        frames = total.shape[2]
        width = _word_width(frames)
        # the hard decisions, padded to whole words, in reused memory (no page faults)
        padded = hard_buf[: code.n * width].reshape(code.n, width)
        np.less(total.reshape(code.n, frames), 1, out=padded[:, :frames])
        padded[:, frames:] = False
        hard = _pack_rows(padded)
        miss = np.zeros(hard.shape[1], dtype=hard.dtype)
        for (blocks, rows), var in zip(self._layers, self._edge_vars, strict=True):
            gathered = np.take(hard, var, axis=0).reshape(len(blocks), code.z, -1)
            parity = np.bitwise_xor.reduce(gathered, axis=0)
            parity ^= synd_words[rows]
            miss |= np.bitwise_or.reduce(parity, axis=0)
        bad = np.unpackbits(miss.view(np.uint8), bitorder="little")[:frames]
        return bad.astype(bool)

    def _decode_batch(
        self, llr: FloatArray, syndrome: BitArray
    ) -> tuple[BitArray, npt.NDArray[np.bool_], npt.NDArray[np.int32]]:
        frames = llr.shape[0]
        code = self.code
        n, z = code.n, code.z
        # running posteriors as ratios e^L (block column, z, frame), and all
        # layers' messages, in flat buffers that compaction reuses in place
        tot_buf = np.empty(n * frames, dtype=np.float32)
        start = tot_buf.reshape(n, frames)
        np.clip(llr.T, -_LLR_CAP, _LLR_CAP, out=start)
        np.exp(start, out=start)
        msg_buf = np.ones(self._edges * frames, dtype=np.float32)
        synd = np.ascontiguousarray(syndrome.T).astype(bool)  # (m, frames)
        synd_words = _pack_frames(synd)
        # syndrome bit as the factor ±(1 - 2^-16) of every check's product
        sfac = np.where(synd, -_SYNDROME_FACTOR, _SYNDROME_FACTOR).astype(np.float32)
        most = max(len(b) for b, _ in self._layers) * z * frames
        hard_buf = np.empty(n * _word_width(frames), dtype=bool)
        bufs = (
            np.empty(most, dtype=np.float32),
            np.empty(most, dtype=np.float32),
            np.empty(most, dtype=np.float32),
        )
        active = np.arange(frames)
        bits = np.zeros((frames, n), dtype=np.uint8)
        ok = np.zeros(frames, dtype=bool)
        iterations = np.full(frames, self.max_iterations, dtype=np.int32)
        fa = frames
        total = tot_buf.reshape(code.nb, z, fa)
        views: _Views | None = None
        # frames whose result is recorded but that still sit in the working set:
        # compacting the arrays costs a pass over them, so it waits until enough finish
        recorded = np.zeros(frames, dtype=bool)
        for it in range(self.max_iterations + 1):
            bad = self._unsatisfied(total, synd_words, hard_buf)
            finished = ~bad if it < self.max_iterations else np.ones_like(bad)
            new = finished & ~recorded
            if new.any():
                idx = active[new]
                bits[idx] = (total[:, :, new] < 1).reshape(n, -1).T
                ok[idx] = ~bad[new]
                iterations[idx] = it
                recorded |= new
                keep = ~recorded
                if not keep.any():
                    break
                if keep.sum() <= 0.75 * keep.size:
                    kept = np.flatnonzero(keep)
                    active = active[kept]
                    recorded = recorded[kept]
                    synd = np.ascontiguousarray(synd[:, kept])
                    synd_words = _pack_frames(synd)
                    sfac = np.ascontiguousarray(sfac[:, kept])
                    _compact(tot_buf, n, fa, kept)
                    _compact(msg_buf, self._edges, fa, kept)
                    fa = kept.size
                    total = tot_buf[: n * fa].reshape(code.nb, z, fa)
                    views = None
            if views is None:
                views = _Views(self._layers, z, total, msg_buf, sfac, bufs)
            layer = self._layer
            for triples, arrays in zip(views.slices, views.arrays, strict=True):
                layer(triples, *arrays)
        return bits, ok, iterations

    @staticmethod
    def _layer(
        pairs: list[tuple[FloatArray, FloatArray, FloatArray]],
        v: FloatArray,
        t: FloatArray,
        p: FloatArray,
        msg: FloatArray,
        s: FloatArray,
    ) -> None:
        """One layer in the ratio domain (``E = e^L``): ``v = total / m`` (clipped),
        ``t = tanh(L_v/2) = 1 - 2/(v + 1)``, ``y = s·Π_{others} t``,
        ``m = (1 + y)/(1 - y)`` (:meth:`_check_messages`), ``total = v·m``."""
        divide = np.divide
        for tot, old, v2c in pairs:
            divide(tot, old, v2c)
        np.clip(v, _RATIO_MIN, _RATIO_MAX, out=v)
        np.add(v, 1, out=t)
        divide(2, t, out=t)
        np.subtract(1, t, out=t)
        d = len(t)
        if d == 1:
            np.copyto(msg[0], s)  # a degree-1 check fixes its variable
            _ratio_of_tanh(msg, t)
        else:
            BpDecoder._check_messages(t, p, msg, s)
        BpDecoder._scatter(pairs)

    @staticmethod
    def _check_messages(t: FloatArray, p: FloatArray, msg: FloatArray, s: FloatArray) -> None:
        """``msg = m_k`` of every edge from ``t`` (``d >= 2`` rows; ``t`` is clobbered).

        The full product ``P = s·Π t`` divided by one's own factor is ``y = P/t``, and
        ``m = (1 + y)/(1 - y) = (t + P)/(t - P)``: three passes. ``|P| <= (1 - 2^-16)|t|``,
        so neither ``t + P`` nor ``t - P`` is 0. A layer where some product is tiny (an
        erased input, or many weak ones) takes prefix times suffix products instead.
        """
        multiply = np.multiply
        prod, mag = p[0], p[1]
        np.multiply.reduce(t, axis=0, out=prod)
        multiply(prod, s, prod)
        np.abs(prod, out=mag)
        if mag.min() >= _MIN_PRODUCT:
            np.add(t, prod, out=msg)
            np.subtract(t, prod, out=t)
            np.divide(msg, t, out=msg)
            return
        # prefix products p[k] = s·t[0]···t[k]; suffix products in place of t:
        # t[k] <- t[k]···t[d-1]; then y_k = p[k-1]·t[k+1]. No clip: a rounded
        # product of s and factors in [-1, 1] stays within ±|s|
        d = len(t)
        t_rows, p_rows, m_rows = list(t), list(p), list(msg)
        multiply(t_rows[0], s, p_rows[0])
        for k in range(1, d - 1):
            multiply(p_rows[k - 1], t_rows[k], p_rows[k])
        for k in range(d - 2, 0, -1):
            multiply(t_rows[k + 1], t_rows[k], t_rows[k])
        multiply(t_rows[1], s, m_rows[0])
        multiply(p[: d - 2], t[2:], msg[1 : d - 1])
        np.copyto(m_rows[d - 1], p_rows[d - 2])
        _ratio_of_tanh(msg, t)

    @staticmethod
    def _scatter(pairs: list[tuple[FloatArray, FloatArray, FloatArray]]) -> None:
        """``total = v·m`` for every circulant of the layer."""
        multiply = np.multiply
        for tot, new, v2c in pairs:
            multiply(v2c, new, tot)
