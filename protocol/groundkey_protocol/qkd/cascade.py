"""Cascade reconciliation, vectorized over every frame of a batch.

Variants (block size schedules from REFERENCES §4; Q is the estimated QBER, n the
frame length, every block size clamped to ``[1, n]``):

- ``cascade-original`` (Brassard–Salvail): k1 = ⌈0.73/Q⌉, doubling, 4 passes.
- ``cascade-yan`` (Yan et al.): k1 = ⌈0.80/Q⌉, k2 = 5·k1, then ⌈n/2⌉, 10 passes.
- ``cascade-biconf``: k1 = ⌈0.92/Q⌉, k2 = 3·k1, then BICONF rounds: a random half
  of the frame (a fresh permutation, first ⌈n/2⌉ positions) whose parity is
  compared, until 10 consecutive clean rounds per frame (at most 64 rounds).

Pass 0 uses the identity order, pass p ≥ 1 the permutation drawn from
``np.random.default_rng([seed, p])`` (public, same for all frames).

Protocol (Bob drives, Alice answers with one :class:`CascadeReply` per
:class:`CascadeQuery`; one round trip per step serves the whole batch). Every
frame moves through its passes on its own, in waves: all blocks (of any pass so
far) whose parity differs from Alice's are bisected at once, and the bits found
are flipped when the frame's last search of the wave ends (so every search ends
on a true error); a flip toggles the bit's block in every pass, which opens the
frame's next wave (the cascade effect). A frame with no differing block enters
its next pass. Top-level parities of passes with many blocks come from a
``top_pass`` query; passes that disclose one parity per frame (Yan's halves,
BICONF rounds) ask for it as a range, and the fixed passes of a frame ask for all
such parities at once (they are disclosed in any case). When few searches are
left (the tail that sets the number of round trips), the searches that set their
frame's wave length ask for two to four levels at once (the left half of every
node below), a few extra parities (counted like all others) for fewer round
trips.

No per-bit Python loops: Alice answers from a prefix XOR of her bits in each pass
order (her bits never change, so every range parity is two lookups), and from
packed block masks for whole blocks of passes with few blocks; Bob gathers his
ranges and takes one running XOR (all levels of a reply at once; ranges of passes
0 and 1 eight bits a word from his bits kept in those orders), and keeps every
Alice parity he learned in a flat table indexed by (pass, frame, node) so that a
reopened block fast-forwards through the levels he knows without a round trip.

Leakage: every parity Alice reveals counts one bit for its frame. Bob never asks
for a parity he knows or can infer (right half = parent XOR left half; from
pass 1 on the last block of a pass = frame parity XOR the others), so nothing is
revealed twice. Bob's queries reveal nothing beyond what the parities already do
(the error positions of a binary symmetric channel are independent of the key).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import CascadeDone, CascadeQuery, CascadeReply, LinkMessage
from groundkey_protocol.qkd.reconcile import ReconcileAlice, ReconcileBob, ReconcileParams

__all__ = ["CascadeAlice", "CascadeBob", "PassSpec", "cascade_schedule"]

BICONF_CLEAN_ROUNDS = 10
BICONF_MAX_ROUNDS = 64
_MASK_BLOCKS = 8  # passes with at most this many blocks use packed masks for top parities
_I64 = np.int64
_LOOK2 = 32  # at most this many active searches: ask two levels at once
_LOOK3 = 8  # at most this many: three levels
_LOOK4 = 2  # at most this many: four levels
_LOOK_SLACK = 0  # searches within this many levels of their frame's longest
_LONG_RANGE = 2048  # Bob reads ranges at least this long from a prefix XOR
_WORD_READ = 4096  # Bob reads ranges of passes 0 and 1 eight bits a word from this many bits
_ALL = (1 << 64) - 1
# byte masks of a little-endian word: bytes from r on (head), bytes below t (tail)
_HEAD = np.array([(_ALL << (8 * r)) & _ALL for r in range(8)], dtype=np.uint64)
_TAIL = np.array([0] + [(1 << (8 * t)) - 1 for t in range(1, 9)], dtype=np.uint64)


@dataclass(frozen=True, slots=True)
class PassSpec:
    """One Cascade pass: block size, and whether only the first block's parity is used."""

    block_bits: int
    first_block_only: bool = False


def cascade_schedule(method: str, qber: float, frame_bits: int) -> list[PassSpec]:
    """The fixed passes of ``method`` (biconf: its two Cascade passes; rounds follow)."""
    n = frame_bits

    def clamp(k: float) -> int:
        return int(min(max(math.ceil(k), 1), n))

    if method == "cascade-original":
        k1 = clamp(0.73 / qber)
        return [PassSpec(clamp(k1 * 2**i)) for i in range(4)]
    if method == "cascade-yan":
        k1 = clamp(0.80 / qber)
        half = clamp(n / 2)
        return [PassSpec(k1), PassSpec(clamp(5 * k1))] + [PassSpec(half)] * 8
    if method == "cascade-biconf":
        k1 = clamp(0.92 / qber)
        return [PassSpec(k1), PassSpec(clamp(3 * k1))]
    raise ValueError(f"unknown Cascade variant {method!r}")


class _Passes:
    """Pass specs and permutations, shared by both roles (grown lazily for BICONF).

    The permutations of passes ``0..count-1`` are kept concatenated (pass q at
    ``q·n``) with their inverses, so one gather serves ranges of many passes.
    """

    def __init__(self, params: ReconcileParams, frame_bits: int) -> None:
        self.method = params.method
        self.seed = params.seed
        self.n = frame_bits
        self.specs = cascade_schedule(params.method, params.qber, frame_bits)
        self.biconf = params.method == "cascade-biconf"
        self.max_passes = len(self.specs) + (BICONF_MAX_ROUNDS if self.biconf else 0)
        self._perm_cat, self._inv_cat = _permutations(self.seed, self.n, len(self.specs))
        self._count = len(self.specs)
        self._masks: dict[int, NDArray[np.uint64]] = {}

    def spec(self, q: int) -> PassSpec:
        if q < len(self.specs):
            return self.specs[q]
        return PassSpec(math.ceil(self.n / 2), first_block_only=True)

    def nblocks(self, q: int) -> int:
        return -(-self.n // self.spec(q).block_bits)

    def top_disclosed(self, q: int) -> int:
        """Top-level parities revealed per frame in pass ``q``.

        From pass 1 on, the last block's parity follows from the frame parity known
        after pass 0, so it is not sent; BICONF rounds reveal only the first block.
        """
        if self.spec(q).first_block_only:
            return 1
        return self.nblocks(q) - (1 if q > 0 else 0)

    def _grow(self, q: int) -> None:
        if q < self._count:
            return
        count = min(self.max_passes, max(q + 1, 2 * self._count))
        extra = [_permutation(self.seed, p, self.n) for p in range(self._count, count)]
        self._perm_cat = np.concatenate([self._perm_cat] + [p for p, _ in extra])
        self._inv_cat = np.concatenate([self._inv_cat] + [i for _, i in extra])
        self._count = count

    def perm(self, q: int) -> NDArray[np.int64]:
        self._grow(q)
        return self._perm_cat[q * self.n : (q + 1) * self.n]

    def inv(self, q: int) -> NDArray[np.int64]:
        self._grow(q)
        return self._inv_cat[q * self.n : (q + 1) * self.n]

    def perm_cat(self, q_max: int) -> NDArray[np.int64]:
        """Permutations of passes 0..q_max (at least) concatenated: pass q at q·n."""
        self._grow(q_max)
        return self._perm_cat

    def inv_cat(self, q_max: int) -> NDArray[np.int64]:
        """Inverse permutations of passes 0..q_max (at least) concatenated."""
        self._grow(q_max)
        return self._inv_cat

    def _block_masks(self, q: int) -> NDArray[np.uint64]:
        """Packed membership masks of the blocks of pass ``q``: (nblocks, words)."""
        if q not in self._masks:
            k = self.spec(q).block_bits
            self._masks[q] = _block_masks(self.seed, q, self.n, k, self.perm(q))
        return self._masks[q]

    def top_parities(
        self,
        bits: NDArray[np.uint8],
        q: int,
        permuted: NDArray[np.uint8] | None = None,
    ) -> NDArray[np.uint8]:
        """Parities of all blocks of pass ``q`` for every row of ``bits``: (rows, nblocks)
        (``permuted``: ``bits`` already in pass ``q`` order, if the caller has it)."""
        k = self.spec(q).block_bits
        if q > 0 and self.nblocks(q) <= _MASK_BLOCKS:
            # few big blocks: AND with packed masks and popcount, no permuted copy
            packed = _pack64(bits)
            masked = packed[:, None, :] & self._block_masks(q)[None, :, :]
            counts = np.asarray(np.bitwise_count(masked), dtype=np.int64).sum(axis=2)
            return np.asarray(counts & 1, dtype=np.uint8)
        if permuted is None:
            permuted = bits if q == 0 else np.take(bits, self.perm(q), axis=1)
        if self.n % k == 0:
            # uint8 sums wrap modulo 256, which keeps the parity
            blocks = permuted.reshape(bits.shape[0], -1, k)
            return np.asarray(blocks.sum(axis=2, dtype=np.uint8) & 1, dtype=np.uint8)
        acc = np.zeros((permuted.shape[0], self.n + 1), dtype=np.uint8)
        np.bitwise_xor.accumulate(permuted, axis=1, out=acc[:, 1:])
        bounds = np.append(np.arange(0, self.n, k), self.n)
        return np.asarray(acc[:, bounds[1:]] ^ acc[:, bounds[:-1]], dtype=np.uint8)


@functools.lru_cache(maxsize=12)
def _permutation(seed: int, p: int, n: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Pass ``p``'s public permutation and its inverse."""
    if p == 0:
        perm = np.arange(n, dtype=_I64)
    else:
        perm = np.random.default_rng([seed, p]).permutation(n).astype(_I64, copy=False)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(n, dtype=_I64)
    perm.flags.writeable = False
    inv.flags.writeable = False
    return perm, inv


@functools.lru_cache(maxsize=4)
def _permutations(seed: int, n: int, count: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Passes ``0..count-1`` permutations and inverses, concatenated (cached: both
    roles draw the same)."""
    perm_cat = np.empty(count * n, dtype=_I64)
    inv_cat = np.empty(count * n, dtype=_I64)
    ramp = np.arange(n, dtype=_I64)
    perm_cat[:n] = ramp
    inv_cat[:n] = ramp
    for p in range(1, count):
        perm = np.random.default_rng([seed, p]).permutation(n)
        perm_cat[p * n : (p + 1) * n] = perm
        inv_cat[p * n + perm] = ramp
    perm_cat.flags.writeable = False
    inv_cat.flags.writeable = False
    return perm_cat, inv_cat


_MASKS: dict[tuple[int, int, int, int], NDArray[np.uint64]] = {}


def _block_masks(seed: int, p: int, n: int, k: int, perm: NDArray[np.int64]) -> NDArray[np.uint64]:
    """Packed block masks of pass ``p`` (public: cached, both roles use the same)."""
    key = (seed, p, n, k)
    masks = _MASKS.get(key)
    if masks is None:
        member = np.zeros((-(-n // k), n), dtype=np.uint8)
        for b, row in enumerate(member):
            row[perm[b * k : (b + 1) * k]] = 1
        masks = _pack64(member)
        masks.flags.writeable = False
        if len(_MASKS) >= 32:
            _MASKS.clear()
        _MASKS[key] = masks
    return masks


def _pack64(bits: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """Rows of 0/1 bytes packed into 64-bit words (zero padded)."""
    packed = np.packbits(bits, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        zeros = np.zeros((packed.shape[0], pad), dtype=np.uint8)
        packed = np.concatenate([packed, zeros], axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


def _distinct(values: NDArray[np.int64]) -> NDArray[np.int64]:
    """Sorted distinct values (``np.unique`` without its per-call overhead on small arrays)."""
    out = np.sort(values)
    if out.size > 1:
        step = out[1:] != out[:-1]
        if np.count_nonzero(step) < step.size:
            return out[np.concatenate(([True], step))]
    return out


def _prefix_rows(
    table: NDArray[np.uint8],
    row0: int,
    bits: NDArray[np.uint8],
    frames: NDArray[np.int64],
    perm: NDArray[np.int64] | None,
) -> None:
    """Write the prefix XOR of ``bits[frames]`` (in ``perm`` order) into rows ``row0 +
    frames`` of ``table`` from column 1 (column 0 stays 0); ``frames`` sorted, distinct.

    A contiguous run of frames is read and written in place (no gather, no copy).
    """
    lo, hi = int(frames[0]), int(frames[-1]) + 1
    if hi - lo == frames.size:
        src = bits[lo:hi]
        permuted = src if perm is None else src.take(perm, axis=1)
        table[row0 + lo : row0 + hi, 1:] = _xor_prefix(permuted)
        return
    src = bits[frames]
    permuted = src if perm is None else src.take(perm, axis=1)
    table[row0 + frames, 1:] = _xor_prefix(permuted)


def _xor_prefix(bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Running XOR along each row of 0/1 bytes, eight bytes a word: a prefix within
    each little-endian word by shifts, then one running XOR of the words' parities."""
    rows, n = bits.shape
    buf = np.empty((rows, -(-n // 8) * 8), dtype=np.uint8)
    buf[:, :n] = bits
    buf[:, n:] = 0
    words = buf.view("<u8")
    words ^= words << np.uint64(8)
    words ^= words << np.uint64(16)
    words ^= words << np.uint64(32)
    carry = words >> np.uint64(56)  # parity of each word
    np.bitwise_xor.accumulate(carry, axis=1, out=carry)
    words[:, 1:] ^= carry[:, :-1] * np.uint64(0x0101010101010101)
    return buf[:, :n]


def _arr(data: bytes, dtype: str, what: str) -> NDArray[np.int64]:
    size = np.dtype(dtype).itemsize
    if len(data) % size:
        raise ProtocolError(
            f"{what}: {len(data)} bytes is not a multiple of {size}", protocol="cascade"
        )
    return np.frombuffer(data, dtype=dtype).astype(_I64)


class CascadeAlice(ReconcileAlice):
    """Answers Bob's parity queries over the reference bits; otherwise stateless."""

    def __init__(self, bits: NDArray[np.uint8], params: ReconcileParams) -> None:
        super().__init__(bits, params)
        passes = self._passes = _Passes(params, self.frame_bits)
        count = passes.max_passes
        self._kq = np.array([passes.spec(q).block_bits for q in range(count)], dtype=_I64)
        masked = [q for q in range(1, count) if passes.nblocks(q) <= _MASK_BLOCKS]
        self._masked = np.zeros(count, dtype=bool)
        self._masked[masked] = True
        self._min_masked_k = min((int(self._kq[q]) for q in masked), default=self.frame_bits + 1)
        # prefix XOR of the bits in each pass order: (pass, frame) row at (q·F + f)·(n + 1)
        self._prefix = np.zeros(0, dtype=np.uint8)
        self._prefix_done = np.zeros((count, self.frames), dtype=bool)
        self._tops: dict[int, NDArray[np.uint8]] = {}

    def _start(self) -> list[LinkMessage]:
        return []

    def _fill_prefix(self, q: NDArray[np.int64], f: NDArray[np.int64]) -> None:
        """Compute the prefix XOR rows of the (pass, frame) pairs not yet done.

        Alice's bits never change, so one O(n) pass per (pass, frame) makes every
        later range parity O(1); pairs nobody asks about are never computed.
        """
        frames, n1 = self.frames, self.frame_bits + 1
        room = self._prefix.size // (frames * n1)
        q_max = int(q.max())
        if q_max >= room:
            fixed = len(self._passes.specs)
            room = min(self._passes.max_passes, max(q_max + 1, 2 * room, fixed))
            grown = np.zeros(room * frames * n1, dtype=np.uint8)
            grown[: self._prefix.size] = self._prefix
            self._prefix = grown
        rows = self._prefix.reshape(room * frames, n1)
        for qq in _distinct(q).tolist():
            todo = _distinct(f[q == qq])
            perm = None if qq == 0 else self._passes.perm(qq)
            _prefix_rows(rows, qq * frames, self._bits, todo, perm)
            self._prefix_done[qq, todo] = True

    def _top_query(self, q: int, rows: NDArray[np.int64]) -> NDArray[np.uint8]:
        """Top-level parities of pass ``q`` for ``rows``: from the prefix XOR rows of
        passes with many blocks (computed now, as ranges in them follow)."""
        if self._masked[q]:
            return np.asarray(self._top_table(q)[rows], dtype=np.uint8)
        n, n1 = self.frame_bits, self.frame_bits + 1
        todo = rows[~self._prefix_done[q, rows]]
        if todo.size:
            self._fill_prefix(np.full(todo.size, q, dtype=_I64), todo)
        bounds = np.append(np.arange(0, n, int(self._kq[q]), dtype=_I64), n)
        at = self._prefix.reshape(-1, n1)[(q * self.frames + rows)[:, None], bounds[None, :]]
        return np.asarray(at[:, 1:] ^ at[:, :-1], dtype=np.uint8)

    def _top_table(self, q: int) -> NDArray[np.uint8]:
        """All top-level parities of pass ``q`` (pass with few blocks), (frames, nblocks)."""
        if q not in self._tops:
            self._tops[q] = self._passes.top_parities(self._bits, q)
        return self._tops[q]

    def _range_parities(
        self,
        f: NDArray[np.int64],
        q: NDArray[np.int64],
        s: NDArray[np.int64],
        e: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        if (e - s).max() >= self._min_masked_k:
            # whole blocks of passes with few blocks: from the packed-mask table
            k = self._kq[q]
            whole = self._masked[q] & (s % k == 0) & (e == np.minimum(s + k, self.frame_bits))
            if np.count_nonzero(whole):
                out = np.empty(f.size, dtype=np.uint8)
                for qq in _distinct(q[whole]).tolist():
                    sel = whole & (q == qq)
                    out[sel] = self._top_table(qq)[f[sel], s[sel] // k[sel]]
                part = ~whole
                if np.count_nonzero(part):
                    out[part] = self._range_parities(f[part], q[part], s[part], e[part])
                return out
        todo = ~self._prefix_done[q, f]
        if np.count_nonzero(todo):
            self._fill_prefix(q[todo], f[todo])
        base = (q * self.frames + f) * (self.frame_bits + 1)
        prefix = self._prefix
        return np.asarray(prefix[base + e] ^ prefix[base + s], dtype=np.uint8)

    def _receive(self, message: LinkMessage) -> list[LinkMessage]:
        if isinstance(message, CascadeDone):
            if message.disclosed_bits != int(self.disclosed_bits.sum()):
                raise ProtocolError(
                    f"Bob counted {message.disclosed_bits} disclosed bits, "
                    f"Alice {int(self.disclosed_bits.sum())}",
                    protocol="cascade",
                )
            self.done = True
            return []
        if not isinstance(message, CascadeQuery):
            raise ProtocolError(f"unexpected {type(message).__name__}", protocol="cascade")
        pieces: list[NDArray[np.uint8]] = []
        passes = self._passes
        if message.top_pass >= 0:
            q = message.top_pass
            if q >= passes.max_passes:
                raise ProtocolError(f"no pass {q}", protocol="cascade")
            rows = _arr(message.top_frames, "<u4", "top_frames")
            if rows.size == 0:
                rows = np.arange(self.frames, dtype=_I64)
            if rows.max() >= self.frames:
                raise ProtocolError("top_frames out of range", protocol="cascade")
            par = self._top_query(q, rows)[:, : passes.top_disclosed(q)]
            pieces.append(par.reshape(-1))
            np.add.at(self.disclosed_bits, rows, par.shape[1])
        f = _arr(message.frames, "<u4", "frames")
        q_arr = _arr(message.passes, "u1", "passes")
        s = _arr(message.starts, "<u4", "starts")
        e = _arr(message.stops, "<u4", "stops")
        if not f.size == q_arr.size == s.size == e.size:
            raise ProtocolError("range arrays differ in length", protocol="cascade")
        if f.size:
            if (
                f.max() >= self.frames
                or q_arr.max() >= passes.max_passes
                or (s >= e).any()
                or e.max() > self.frame_bits
            ):
                raise ProtocolError("parity range out of bounds", protocol="cascade")
            pieces.append(self._range_parities(f, q_arr, s, e))
            self.disclosed_bits += np.bincount(f, minlength=self.frames)
        parities = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
        reply = CascadeReply(
            block_id=self.params.block_id,
            step=message.step,
            count=int(parities.size),
            parities=np.packbits(parities).tobytes(),
        )
        return [reply]


# rows of Bob's search table: frame, pass, [start, stop) in pass order, block id,
# tree base of (pass, frame), permutation base q·n, bit base f·n, and whether the block
# was searched before (only then can Bob know parities below its top level)
_F, _Q, _S, _E, _G, _KB, _PB, _FB, _RV = range(9)
# entries of a lookahead level below the first: asking search, parent entry, left child
_L_OWNER, _L_PARENT, _L_IS_LEFT = 7, 8, 9


class CascadeBob(ReconcileBob):
    """Drives Cascade: asks for parities, bisects differing blocks, flips his bits.

    Each frame runs its searches in waves: all its differing blocks are bisected
    at once and the bits found are flipped when the frame's last search of the
    wave ends (so every search ends on a true error); frames do not wait for each
    other. Blocks of all passes live in flat tables (pass ``q``'s block ``b`` of
    frame ``f`` at ``_boff[q] + f·nblocks(q) + b``): Alice's parity, whether it is
    known, Bob's parity (kept current on every flip) and whether a search runs in
    it. Every Alice parity learned below the top level goes into ``_tree``, indexed
    by (pass, frame) and the node's midpoint (inner nodes) or ``n + start`` (leaves).
    """

    def __init__(self, bits: NDArray[np.uint8], params: ReconcileParams) -> None:
        super().__init__(np.array(bits, dtype=np.uint8, copy=True), params)
        passes = self._passes = _Passes(params, self.frame_bits)
        frames, n = self.frames, self.frame_bits
        count = passes.max_passes
        # Bob's bits in pass 0 and pass 1 order, one after the other (flips keep both
        # current), viewed as words too: ranges of these passes are contiguous there
        size = 2 * frames * n
        self._cwords = np.zeros(size // 8 + 2, dtype="<u8")
        self._cbits = self._cwords.view(np.uint8)
        self._cbits[: frames * n] = self._bits.reshape(-1)
        self._bits = self._cbits[: frames * n].reshape(frames, n)
        self._bits_flat = self._bits.reshape(-1)
        self._fixed = len(passes.specs)
        self._k = np.array([passes.spec(q).block_bits for q in range(count)], dtype=_I64)
        self._nb = -(-n // self._k)
        self._td = np.array([passes.top_disclosed(q) for q in range(count)], dtype=_I64)
        self._boff = np.concatenate([[0], np.cumsum(self._nb * frames)]).astype(_I64)
        total = int(self._boff[-1])
        self._alice = np.zeros(total, dtype=np.uint8)
        self._known = np.zeros(total, dtype=bool)
        self._bob = np.zeros(total, dtype=np.uint8)
        self._busy = np.zeros(total, dtype=bool)
        self._seen = np.zeros(total, dtype=bool)  # blocks searched before
        self._made = 0  # passes whose block parities Bob keeps
        self._tree = np.zeros(0, dtype=np.uint8)  # 0 unknown, 1 + parity when known
        self._perm_cat = self._inv_cat = np.zeros(0, dtype=_I64)
        self._make_passes(1)  # later passes when a frame first enters them (fewer toggles)
        # prefix XOR of Bob's bits per (pass, frame) row q·F + f, for long ranges
        self._prefix = np.zeros(0, dtype=np.uint8)
        self._prefix_ok = np.zeros(count * frames, dtype=bool)
        self._frame_parity = np.zeros(frames, dtype=np.uint8)
        self._cur = np.full(frames, -1, dtype=_I64)  # pass each frame is in
        self._done = np.zeros(frames, dtype=bool)
        self._waiting = np.zeros(frames, dtype=bool)  # for its current pass's top parities
        self._asked = np.zeros((count, frames), dtype=bool)  # top parities asked for
        self._clean = np.zeros(frames, dtype=_I64)  # BICONF clean-round streaks
        self._flipped = np.zeros(frames, dtype=bool)  # a flip in the frame's current pass
        self._srch = np.zeros((9, 0), dtype=_I64)  # active searches (rows _F.._RV)
        self._sa = np.zeros(0, dtype=np.uint8)  # Alice's parity of each search's interval
        self._found = np.zeros((9, 0), dtype=_I64)  # ended searches, flips not yet applied
        self._cand: list[NDArray[np.int64]] = []  # block ids to check for opening
        self._recheck = True  # some frame may have run out of work in its pass
        self._step = 0
        empty = np.zeros(0, dtype=_I64)
        # what the outstanding query asked: top pass and rows, search levels, one-range tops
        self._ask_top = (-1, empty)
        self._ask_levels: list[tuple[NDArray[np.int64], ...]] = []
        self._ask_small = (empty, empty)
        self._ask_flat = (empty, empty, empty, empty)  # the searches' ranges, concatenated
        self.flips = 0

    # -- tables ------------------------------------------------------------------

    def _make_passes(self, upto: int) -> None:
        """Keep Bob's block parities (and tree room) for passes below ``upto``."""
        if upto <= self._made:
            return
        frames, n = self.frames, self.frame_bits
        room = self._tree.size // (2 * n * frames)
        if upto > room:
            room = min(self._passes.max_passes, max(upto, 2 * room, self._fixed))
            tree = np.zeros(room * frames * 2 * n, dtype=np.uint8)
            tree[: self._tree.size] = self._tree
            self._tree = tree
        for q in range(self._made, upto):
            permuted = None
            if q == 1:
                permuted = self._cbits[frames * n : 2 * frames * n].reshape(frames, n)
                np.take(self._bits, self._passes.perm(1), axis=1, out=permuted)
            par = self._passes.top_parities(self._bits, q, permuted)
            self._bob[self._boff[q] : self._boff[q + 1]] = par.reshape(-1)
        self._made = upto
        self._perm_cat = self._passes.perm_cat(upto - 1)
        self._inv_cat = self._passes.inv_cat(upto - 1)
        rows = np.arange(upto, dtype=_I64)[:, None]
        self._flip_cols = (
            rows * n,
            self._boff[:upto, None],
            self._nb[:upto, None],
            self._k[:upto, None],
        )

    def _node(
        self, base: NDArray[np.int64], s: NDArray[np.int64], e: NDArray[np.int64]
    ) -> NDArray[np.int64]:
        """Tree index of ``[s, e)``: its midpoint, or ``n + s`` for a single position."""
        return cast("NDArray[np.int64]", base + ((s + e) >> 1) + self.frame_bits * ((e - s) == 1))

    def _store_tops(self, q: int, rows: NDArray[np.int64], sent: NDArray[np.uint8]) -> None:
        """Alice's top-level parities of pass ``q`` for ``rows`` (inferring the last block)."""
        if q == 0:
            vals = sent
            self._frame_parity[rows] = np.bitwise_xor.reduce(sent, axis=1)
        elif self._passes.spec(q).first_block_only:
            vals = sent
        else:
            last = self._frame_parity[rows] ^ (sent.sum(axis=1) & 1).astype(np.uint8)
            vals = np.concatenate([sent, last[:, None]], axis=1)
        nb = int(self._nb[q])
        gids = self._boff[q] + rows[:, None] * nb + np.arange(vals.shape[1], dtype=_I64)
        self._alice[gids] = vals
        self._known[gids] = True
        self._cand.append(gids.reshape(-1))
        self._waiting[rows[self._cur[rows] == q]] = False
        self._recheck = True

    # -- receiving -----------------------------------------------------------------

    def _start(self) -> list[LinkMessage]:
        self._settle()
        return [self._advance()]

    def _receive(self, message: LinkMessage) -> list[LinkMessage]:
        if not isinstance(message, CascadeReply) or message.step != self._step:
            raise ProtocolError(f"unexpected {type(message).__name__}", protocol="cascade")
        top_q, top_rows = self._ask_top
        n_top = int(top_rows.size * self._td[top_q]) if top_q >= 0 else 0
        n_search = sum(level[0].size for level in self._ask_levels)
        small_f, small_q = self._ask_small
        expected = n_top + n_search + small_f.size
        if message.count != expected or len(message.parities) != -(-expected // 8):
            raise ProtocolError(f"reply holds {message.count} parities", protocol="cascade")
        parities = np.unpackbits(np.frombuffer(message.parities, dtype=np.uint8))[:expected]
        if n_top:
            self._store_tops(top_q, top_rows, parities[:n_top].reshape(top_rows.size, -1))
        at = n_top
        tree = self._tree
        for depth, level in enumerate(self._ask_levels):
            left = parities[at : at + level[0].size]
            at += level[0].size
            parent = self._sa if depth == 0 else tree[level[6]] - 1
            tree[level[4]] = left + 1
            tree[level[5]] = (left ^ parent) + 1
        if small_f.size:
            vals = parities[at:]
            for qq in _distinct(small_q).tolist():
                sel = small_q == qq
                self._store_tops(int(qq), small_f[sel], vals[sel][:, None])
        if n_search:
            self._walk(parities[n_top : n_top + n_search])
        self._settle()
        return [self._advance()]

    def _walk(self, alice_left: NDArray[np.uint8]) -> None:
        """Bisect the active searches through the levels just answered: Bob's parities
        of every asked range from one gather, then one cheap step per level."""
        levels = self._ask_levels
        n = self.frame_bits
        f, q, s, mid = self._ask_flat
        go_left = self._parities(q * n, f * n, s, mid - s) != alice_left
        srch = self._srch
        on = go_prev = np.ones(levels[0][0].size, dtype=bool)  # entries on their search's path
        at = 0
        for depth, level in enumerate(levels):
            count = level[0].size
            go, left = go_left[at : at + count], alice_left[at : at + count]
            if depth:
                # a child is on the path if its parent was and the parent's step chose it
                parent, is_left = level[_L_PARENT], level[_L_IS_LEFT]
                on = on[parent] & (go_prev[parent] == is_left)
                hit = on.nonzero()[0]
                if hit.size == 0:
                    break
                owner = level[_L_OWNER][hit]
                go, left, m = go[hit], left[hit], level[3][hit]
                srch[_E, owner] = np.where(go, m, srch[_E, owner])
                srch[_S, owner] = np.where(go, srch[_S, owner], m)
                self._sa[owner] = np.where(go, left, self._sa[owner] ^ left)
            else:
                m = level[3]
                srch[_E] = np.where(go, m, srch[_E])
                srch[_S] = np.where(go, srch[_S], m)
                self._sa = np.where(go, left, self._sa ^ left)
            go_prev = go_left[at : at + count]
            at += count
        self._take_found()

    # -- advancing without round trips -----------------------------------------------

    def _settle(self) -> None:
        """Advance everything Bob can without asking Alice anything."""
        descend = True  # searches may have known next levels (after the walk, or opening)
        while True:
            if descend:
                self._descend()
                descend = False
            if self._found.shape[1] and self._apply_flips():
                continue
            if self._cand and self._open():
                descend = True
                continue
            if not self._advance_frames():
                return

    def _descend(self) -> None:
        """Bisect active searches through every level whose parity Bob already knows."""
        n = self.frame_bits
        while self._srch.shape[1]:
            srch = self._srch
            if not srch[_RV].any():
                return  # the tree knows nothing below the top of blocks searched first
            s, e = srch[_S], srch[_E]
            mid = (s + e) >> 1
            half = mid - s
            vals = self._tree[srch[_KB] + ((s + mid) >> 1) + n * (half == 1)]
            known = vals != 0
            hits = np.count_nonzero(known)
            if hits == 0:
                return
            sel = None if hits == known.size else known.nonzero()[0]
            if sel is None:
                alice_left = vals - 1
                bob_left = self._parities(srch[_PB], srch[_FB], s, half)
                go_left = bob_left != alice_left
                new_s = np.where(go_left, s, mid)
                srch[_E] = np.where(go_left, mid, e)
                srch[_S] = new_s
                self._sa = np.where(go_left, alice_left, self._sa ^ alice_left)
            else:
                sub = srch[:, sel]
                ss, ms = sub[_S], mid[sel]
                alice_left = vals[sel] - 1
                bob_left = self._parities(sub[_PB], sub[_FB], ss, half[sel])
                go_left = bob_left != alice_left
                srch[_E, sel] = np.where(go_left, ms, sub[_E])
                srch[_S, sel] = np.where(go_left, ss, ms)
                self._sa[sel] = np.where(go_left, alice_left, self._sa[sel] ^ alice_left)
            self._take_found()

    def _parities(
        self,
        perm_base: NDArray[np.int64],
        bit_base: NDArray[np.int64],
        s: NDArray[np.int64],
        lengths: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        """Parity of Bob's bits at positions ``[s, s + length)`` of each range's pass order."""
        if lengths.max() >= _LONG_RANGE:
            return self._parities_long(perm_base, bit_base, s, lengths)
        ends = lengths.cumsum()
        total = int(ends[-1])
        if total >= _WORD_READ:
            low = perm_base < 2 * self.frame_bits
            count = np.count_nonzero(low)
            if count == low.size:
                return self._word_parities(perm_base * self.frames + bit_base + s, lengths)
            if count:
                out = np.empty(s.size, dtype=np.uint8)
                out[low] = self._parities(perm_base[low], bit_base[low], s[low], lengths[low])
                high = ~low
                out[high] = self._parities(perm_base[high], bit_base[high], s[high], lengths[high])
                return out
        firsts = ends - lengths
        # one index ramp per segment, then one running XOR (reduceat is slow on short ones)
        ramp = np.arange(total, dtype=_I64)
        if total > 4096 and not perm_base.any():  # all in pass 0 (identity order)
            ramp += (bit_base + s - firsts).repeat(lengths)
            orig = ramp
        else:
            ramp += (perm_base + s - firsts).repeat(lengths)
            orig = self._perm_cat.take(ramp)
            orig += bit_base.repeat(lengths)
        acc = np.empty(total + 1, dtype=np.uint8)
        acc[0] = 0
        np.bitwise_xor.accumulate(self._bits_flat.take(orig), out=acc[1:])
        return np.asarray(acc[ends] ^ acc[firsts], dtype=np.uint8)

    def _word_parities(
        self, start: NDArray[np.int64], lengths: NDArray[np.int64]
    ) -> NDArray[np.uint8]:
        """Parities of ranges ``[start, start + length)`` of ``_cbits``, eight bits (one
        byte each) per word: masked end words, one running XOR, then a byte fold."""
        stop = start + lengths
        first_word = start >> 3
        last_word = (stop - 1) >> 3
        count = last_word - first_word + 1
        ends = count.cumsum()
        firsts = ends - count
        ramp = np.arange(int(ends[-1]), dtype=_I64)
        ramp += (first_word - firsts).repeat(count)
        words = self._cwords.take(ramp)
        words[firsts] &= _HEAD[start & 7]
        words[ends - 1] &= _TAIL[stop - (last_word << 3)]
        acc = np.empty(words.size + 1, dtype=np.uint64)
        acc[0] = 0
        np.bitwise_xor.accumulate(words, out=acc[1:])
        x = acc[ends] ^ acc[firsts]
        x ^= x >> np.uint64(32)
        x ^= x >> np.uint64(16)
        x ^= x >> np.uint64(8)
        return np.asarray(x & np.uint64(1), dtype=np.uint8)

    def _parities_long(
        self,
        perm_base: NDArray[np.int64],
        bit_base: NDArray[np.int64],
        s: NDArray[np.int64],
        lengths: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        """Long ranges from a prefix XOR of Bob's bits in the pass order, one row per
        (pass, frame), made when first needed and kept until the frame's next flip."""
        frames, n, n1 = self.frames, self.frame_bits, self.frame_bits + 1
        long = lengths >= _LONG_RANGE
        out = np.empty(s.size, dtype=np.uint8)
        rows = perm_base[long] // n * frames + bit_base[long] // n
        missing = _distinct(rows[~self._prefix_ok[rows]])
        if missing.size:
            room = self._prefix.size // (frames * n1)
            need = int(missing.max()) // frames + 1
            if need > room:
                room = min(self._passes.max_passes, max(need, 2 * room, self._fixed))
                grown = np.zeros(room * frames * n1, dtype=np.uint8)
                grown[: self._prefix.size] = self._prefix
                self._prefix = grown
            table = self._prefix.reshape(-1, n1)
            mq, mf = np.divmod(missing, frames)
            for qq in _distinct(mq).tolist():
                perm = None if qq == 0 else self._passes.perm(qq)
                _prefix_rows(table, qq * frames, self._bits, mf[mq == qq], perm)
            self._prefix_ok[missing] = True
        start = rows * n1 + s[long]
        out[long] = self._prefix[start + lengths[long]] ^ self._prefix[start]
        short = ~long
        if np.count_nonzero(short):
            out[short] = self._parities(perm_base[short], bit_base[short], s[short], lengths[short])
        return out

    def _take_found(self) -> None:
        """Move searches down to one position into ``_found``."""
        srch = self._srch
        end = (srch[_E] - srch[_S]) == 1
        if np.count_nonzero(end):
            self._found = np.concatenate([self._found, srch[:, end]], axis=1)
            keep = ~end
            self._srch = srch[:, keep]
            self._sa = self._sa[keep]

    def _apply_flips(self) -> bool:
        """Flip the bits found in frames whose wave ended; toggle their blocks in every pass."""
        found = self._found
        if self._srch.shape[1]:
            busy = np.zeros(self.frames, dtype=bool)
            busy[self._srch[_F]] = True
            hold = busy[found[_F]]
            if np.count_nonzero(hold) == hold.size:
                return False
            self._found = found[:, hold]
            found = found[:, ~hold]
        else:
            self._found = found[:, :0]
        self._busy[found[_G]] = False
        self._cand.append(found[_G])
        self._recheck = True  # frames whose wave ended may have nothing left
        n = self.frame_bits
        flat = _distinct(found[_FB] + self._perm_cat[found[_PB] + found[_S]])
        self._bits_flat[flat] ^= 1
        self.flips += int(flat.size)
        ff, ii = np.divmod(flat, n)
        self._flipped[ff] = True
        self._prefix_ok.reshape(-1, self.frames)[:, ff] = False
        perm_rows, boff, nb, k = self._flip_cols
        pos = self._inv_cat[perm_rows + ii]  # (passes, flips)
        if self._made > 1:  # keep Bob's bits in pass 1 order current
            self._cbits[(self.frames + ff) * n + pos[1]] ^= 1
        blocks = boff + ff * nb + pos // k
        gids = blocks.reshape(-1)
        if gids.size > 4096:
            self._bob ^= (np.bincount(gids, minlength=self._bob.size) & 1).astype(np.uint8)
        else:
            np.bitwise_xor.at(self._bob, gids, 1)
        # blocks of passes no frame has reached yet are checked when a frame enters them
        self._cand.append(blocks[: int(self._cur.max()) + 1].reshape(-1))
        return True

    def _open(self) -> bool:
        """Start searches in differing, known, idle blocks of the frames' passes so far."""
        c = np.concatenate(self._cand) if len(self._cand) > 1 else self._cand[0]
        self._cand = []
        c = c[self._known[c] & (self._alice[c] != self._bob[c]) & ~self._busy[c]]
        if c.size == 0:
            return False
        c = _distinct(c)
        q = np.searchsorted(self._boff, c, side="right") - 1
        f, b = np.divmod(c - self._boff[q], self._nb[q])
        ok = q <= self._cur[f]
        if np.count_nonzero(ok) < ok.size:
            c, q, f, b = c[ok], q[ok], f[ok], b[ok]
            if c.size == 0:
                return False
        n = self.frame_bits
        k = self._k[q]
        s = b * k
        self._busy[c] = True
        seen = self._seen[c]
        self._seen[c] = True
        kb = (q * self.frames + f) * (2 * n)
        new = np.stack([f, q, s, np.minimum(s + k, n), c, kb, q * n, f * n, seen])
        self._srch = np.concatenate([self._srch, new], axis=1)
        self._sa = np.concatenate([self._sa, self._alice[c]])
        self._take_found()
        return True

    def _advance_frames(self) -> bool:
        """Move frames with nothing left to do in their pass on (or finish them)."""
        if not self._recheck:
            return False
        self._recheck = False
        idle = ~(self._done | self._waiting)
        idle[self._srch[_F]] = False
        idle[self._found[_F]] = False
        rows = idle.nonzero()[0]
        if rows.size == 0:
            return False
        cur = self._cur[rows]
        if self._passes.biconf:
            left = rows[cur >= self._fixed]  # leaving a BICONF round
            self._clean[left] = np.where(self._flipped[left], 0, self._clean[left] + 1)
        nxt = cur + 1
        more = nxt < self._fixed
        if self._passes.biconf:
            more |= (nxt < self._passes.max_passes) & (self._clean[rows] < BICONF_CLEAN_ROUNDS)
        self._done[rows[~more]] = True
        rows, nxt = rows[more], nxt[more]
        self._cur[rows] = nxt
        self._flipped[rows] = False
        self._recheck = True
        for qq in _distinct(nxt).tolist():
            sel = rows[nxt == qq]
            self._make_passes(qq + 1)
            if self._td[qq] == 0:
                self._store_tops(qq, sel, np.zeros((sel.size, 0), dtype=np.uint8))
                continue
            known = self._known[self._boff[qq] + sel * self._nb[qq]]
            ready = sel[known]
            if ready.size:
                nb = int(self._nb[qq])
                gids = self._boff[qq] + ready[:, None] * nb + np.arange(nb, dtype=_I64)
                self._cand.append(gids.reshape(-1))
            self._waiting[sel[~known]] = True
        return True

    # -- asking ------------------------------------------------------------------------

    def _advance(self) -> LinkMessage:
        """The next query (Bob has settled everything he can), or ``CascadeDone``."""
        frames = self.frames
        if np.count_nonzero(self._done) == frames:
            self.done = True
            return CascadeDone(
                block_id=self.params.block_id, disclosed_bits=int(self.disclosed_bits.sum())
            )
        empty = np.zeros(0, dtype=_I64)
        top_q, top_rows = -1, empty
        small_f, small_q = empty, empty
        if np.count_nonzero(self._waiting):
            need = self._waiting.nonzero()[0]
            need = need[~self._asked[self._cur[need], need]]
            q = self._cur[need]
            small = self._td[q] == 1
            if small.any():
                small_f, small_q = self._small_tops(need[small], q[small])
            if not small.all():
                top_q = int(q[~small].min())
                top_rows = need[q == top_q]
                self._asked[top_q, top_rows] = True
                self.disclosed_bits[top_rows] += self._td[top_q]
        levels = self._ask_levels = self._search_levels()
        pieces = [level[:4] for level in levels]
        if small_f.size:
            small_e = np.minimum(self._k[small_q], self.frame_bits)
            pieces.append((small_f, small_q, np.zeros(small_f.size, dtype=_I64), small_e))
        self._ask_top = (top_q, top_rows)
        self._ask_small = (small_f, small_q)
        if len(pieces) == 1:
            f, q, s, e = pieces[0]
        elif pieces:
            f, q, s, e = (np.concatenate(col) for col in zip(*pieces, strict=True))
        else:
            f = q = s = e = empty
        searched = sum(level[0].size for level in levels)
        self._ask_flat = (f[:searched], q[:searched], s[:searched], e[:searched])
        if f.size:
            self.disclosed_bits += np.bincount(f, minlength=frames)
        self._step += 1
        return CascadeQuery(
            block_id=self.params.block_id,
            step=self._step,
            top_pass=top_q,
            top_frames=b"" if top_rows.size == frames else top_rows.astype("<u4").tobytes(),
            frames=f.astype("<u4").tobytes(),
            passes=q.astype("u1").tobytes(),
            starts=s.astype("<u4").tobytes(),
            stops=e.astype("<u4").tobytes(),
        )

    def _search_levels(self) -> list[tuple[NDArray[np.int64], ...]]:
        """The left halves to ask for, per level: frame, pass, start, mid, tree index of
        the left half, of the right half and of the interval, and (levels below the
        first) the asking search, the parent entry and whether it is a left child.

        One level of every active search; when few searches are left (the tail that
        sets the number of round trips), the searches that set their frame's wave
        length (most levels to go) get two to four levels at once (every node's
        left half), trading a few parities for round trips.
        """
        srch = self._srch
        count = srch.shape[1]
        if count == 0:
            return []
        node = self._node
        f, q, s, e, base = srch[_F], srch[_Q], srch[_S], srch[_E], srch[_KB]
        mid = (s + e) >> 1
        levels: list[tuple[NDArray[np.int64], ...]] = [
            (f, q, s, mid, node(base, s, mid), node(base, mid, e), base)
        ]
        if count > _LOOK2:
            return levels
        togo = np.frexp(e - s - 1)[1]  # levels left: ⌈log2(length)⌉
        longest = np.zeros(self.frames, dtype=togo.dtype)
        np.maximum.at(longest, f, togo)
        more = 3 if count <= _LOOK4 else 2 if count <= _LOOK3 else 1
        extra = np.where(togo + _LOOK_SLACK >= longest[f], more, 0)
        # rows: frame, pass, tree base, start, stop, search, extra levels wanted
        rows = np.empty((7, count), dtype=_I64)
        rows[:5] = f, q, base, s, e
        rows[5] = np.arange(count, dtype=_I64)
        rows[6] = extra
        for _ in range(more):
            m = rows.shape[1]
            kids = np.concatenate([rows, rows], axis=1)
            kids[4, :m] = mid  # left children [s, mid), right children [mid, e)
            kids[3, m:] = mid
            kids[6] -= 1
            parent = np.concatenate([np.arange(m, dtype=_I64)] * 2)
            is_left = np.arange(2 * m) < m
            keep = ((kids[4] - kids[3]) >= 2) & (kids[6] >= 0)
            rows, parent, is_left = kids[:, keep], parent[keep], is_left[keep]
            if rows.shape[1] == 0:
                break
            f, q, base, s, e = rows[:5]
            mid = (s + e) >> 1
            left_node, right_node, own_node = node(base, s, mid), node(base, mid, e), base + mid
            levels.append(
                (
                    f,
                    q,
                    s,
                    mid,
                    left_node,
                    right_node,
                    own_node,
                    rows[5],
                    parent,
                    is_left.astype(_I64),
                )
            )
        return levels

    def _small_tops(
        self, rows: NDArray[np.int64], q: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(frame, pass) of one-parity top levels to ask for: the frames' current pass,
        and of the fixed passes every later one (disclosed in any case, so ask now)."""
        later = [p for p in range(self._fixed) if self._td[p] == 1]
        if later:
            cand = np.array(later, dtype=_I64)
            want = (cand[None, :] >= q[:, None]) & ~self._asked[cand][:, rows].T
            fi, pi = np.nonzero(want)
            f_out, q_out = rows[fi], cand[pi]
        else:
            f_out, q_out = rows[:0], q[:0]
        beyond = q >= self._fixed
        f_out = np.concatenate([f_out, rows[beyond]])
        q_out = np.concatenate([q_out, q[beyond]])
        self._asked[q_out, f_out] = True
        return f_out, q_out
