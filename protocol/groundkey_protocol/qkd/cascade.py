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
frame moves through its passes on its own; within a frame Bob bisects every
block (of any pass so far) whose parity differs from Alice's, all at once and
pipelined: a search that ends flips its bit at once, which toggles that bit's
block in every pass (opening new searches in the same step: the cascade effect)
and cancels any running search whose interval held the bit (its interval is no
longer odd; the block is reopened if it still differs). A frame with no
differing block enters its next pass. Top-level parities of passes with many
blocks come from a ``top_pass`` query; passes that disclose one parity per frame
(Yan's halves, BICONF rounds) ask for it as a range, and the fixed passes of a
frame ask for all such parities at once (they are disclosed in any case).

No per-bit Python loops: Alice answers from a prefix XOR of her bits in each pass
order (her bits never change, so every range parity is two lookups), and from
packed block masks for whole blocks of passes with few blocks; Bob gathers his
ranges and takes one running XOR, and keeps every Alice parity he learned in a
flat table indexed by (pass, frame, node) so that a reopened block fast-forwards
through the levels he knows without a round trip.

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
_LOOK_MAX = 16  # at most this many active searches: ask two levels at once
_LOOK_DEPTH = 2


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
            block_of = self.inv(q) // k
            member = block_of[None, :] == np.arange(self.nblocks(q))[:, None]
            self._masks[q] = _pack64(member.view(np.uint8))
        return self._masks[q]

    def top_parities(self, bits: NDArray[np.uint8], q: int) -> NDArray[np.uint8]:
        """Parities of all blocks of pass ``q`` for every row of ``bits``: (rows, nblocks)."""
        k = self.spec(q).block_bits
        if q > 0 and self.nblocks(q) <= _MASK_BLOCKS:
            # few big blocks: AND with packed masks and popcount, no permuted copy
            packed = _pack64(bits)
            masked = packed[:, None, :] & self._block_masks(q)[None, :, :]
            counts = np.asarray(np.bitwise_count(masked), dtype=np.int64).sum(axis=2)
            return np.asarray(counts & 1, dtype=np.uint8)
        permuted = bits if q == 0 else np.take(bits, self.perm(q), axis=1)
        acc = np.zeros((permuted.shape[0], self.n + 1), dtype=np.uint8)
        np.bitwise_xor.accumulate(permuted, axis=1, out=acc[:, 1:])
        bounds = np.append(np.arange(0, self.n, k), self.n)
        return np.asarray(acc[:, bounds[1:]] ^ acc[:, bounds[:-1]], dtype=np.uint8)

    def range_parities(
        self,
        bits: NDArray[np.uint8],
        f: NDArray[np.int64],
        q: NDArray[np.int64],
        s: NDArray[np.int64],
        e: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        """Parity of positions ``[s, e)`` (in pass ``q`` order) of frame ``f``, per range."""
        if f.size == 0:
            return np.zeros(0, dtype=np.uint8)
        n = self.n
        lengths = e - s
        ends = np.cumsum(lengths)
        total = int(ends[-1])
        firsts = ends - lengths
        # one index ramp per segment: position q·n + s + (i - first) in the permutations
        ramp = np.arange(total, dtype=_I64)
        ramp += np.repeat(q * n + s - firsts, lengths)
        orig = self.perm_cat(int(q.max()))[ramp]
        orig += np.repeat(f * n, lengths)
        values = bits.reshape(-1)[orig]
        # XOR of each segment from one running XOR (reduceat is slow on many short segments)
        acc = np.empty(total + 1, dtype=np.uint8)
        acc[0] = 0
        np.bitwise_xor.accumulate(values, out=acc[1:])
        return np.asarray(acc[ends] ^ acc[firsts], dtype=np.uint8)


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


def _pack64(bits: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """Rows of 0/1 bytes packed into 64-bit words (zero padded)."""
    packed = np.packbits(bits, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        zeros = np.zeros((packed.shape[0], pad), dtype=np.uint8)
        packed = np.concatenate([packed, zeros], axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


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
        self._passes = _Passes(params, self.frame_bits)
        self._prefix: dict[int, NDArray[np.uint8]] = {}
        self._prefix_done: dict[int, NDArray[np.bool_]] = {}
        self._tops: dict[int, NDArray[np.uint8]] = {}

    def _start(self) -> list[LinkMessage]:
        return []

    def _prefix_xor(self, q: int, rows: NDArray[np.int64]) -> NDArray[np.uint8]:
        """Prefix XOR of the bits in pass ``q`` order, (frames, n + 1), filled for ``rows``.

        Alice's bits never change, so one O(n) pass per (pass, frame) makes every
        later range parity O(1); frames nobody asks about are never computed.
        """
        if q not in self._prefix:
            self._prefix[q] = np.zeros((self.frames, self.frame_bits + 1), dtype=np.uint8)
            self._prefix_done[q] = np.zeros(self.frames, dtype=bool)
        prefix, done = self._prefix[q], self._prefix_done[q]
        todo = rows[~done[rows]]
        if todo.size:
            todo = np.unique(todo)
            sub = self._bits[todo]
            permuted = sub if q == 0 else np.take(sub, self._passes.perm(q), axis=1)
            block = np.zeros((todo.size, self.frame_bits + 1), dtype=np.uint8)
            np.bitwise_xor.accumulate(permuted, axis=1, out=block[:, 1:])
            prefix[todo] = block
            done[todo] = True
        return prefix

    def _top_table(self, q: int) -> NDArray[np.uint8]:
        """All top-level parities of pass ``q`` (pass with few blocks), (frames, nblocks)."""
        if q not in self._tops:
            self._tops[q] = self._passes.top_parities(self._bits, q)
        return self._tops[q]

    def _pass_parities(
        self, qq: int, f: NDArray[np.int64], s: NDArray[np.int64], e: NDArray[np.int64]
    ) -> NDArray[np.uint8]:
        passes = self._passes
        n = self.frame_bits
        if qq > 0 and passes.nblocks(qq) <= _MASK_BLOCKS:
            k = passes.spec(qq).block_bits
            whole = (s % k == 0) & (e == np.minimum(s + k, n))
            if whole.all():
                return np.asarray(self._top_table(qq)[f, s // k], dtype=np.uint8)
            if whole.any():
                out = np.empty(f.size, dtype=np.uint8)
                out[whole] = self._top_table(qq)[f[whole], s[whole] // k]
                part = ~whole
                out[part] = self._pass_parities_prefix(qq, f[part], s[part], e[part])
                return out
        return self._pass_parities_prefix(qq, f, s, e)

    def _pass_parities_prefix(
        self, qq: int, f: NDArray[np.int64], s: NDArray[np.int64], e: NDArray[np.int64]
    ) -> NDArray[np.uint8]:
        prefix = self._prefix_xor(qq, f)
        return np.asarray(prefix[f, e] ^ prefix[f, s], dtype=np.uint8)

    def _range_parities(
        self,
        f: NDArray[np.int64],
        q: NDArray[np.int64],
        s: NDArray[np.int64],
        e: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        q_lo, q_hi = int(q.min()), int(q.max())
        if q_lo == q_hi:
            return self._pass_parities(q_lo, f, s, e)
        out = np.empty(f.size, dtype=np.uint8)
        for qq in np.unique(q).tolist():
            sel = q == qq
            out[sel] = self._pass_parities(int(qq), f[sel], s[sel], e[sel])
        return out

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
            par = passes.top_parities(self._bits[rows], q)[:, : passes.top_disclosed(q)]
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
# tree base of (pass, frame), permutation base q·n, bit base f·n
_F, _Q, _S, _E, _G, _KB, _PB, _FB = range(8)


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
        self._made = 0  # passes whose block parities Bob keeps
        self._tree = np.zeros(0, dtype=np.uint8)  # 0 unknown, 1 + parity when known
        self._perm_cat = self._inv_cat = np.zeros(0, dtype=_I64)
        self._make_passes(self._fixed)
        self._frame_parity = np.zeros(frames, dtype=np.uint8)
        self._cur = np.full(frames, -1, dtype=_I64)  # pass each frame is in
        self._done = np.zeros(frames, dtype=bool)
        self._waiting = np.zeros(frames, dtype=bool)  # for its current pass's top parities
        self._asked = np.zeros((count, frames), dtype=bool)  # top parities asked for
        self._clean = np.zeros(frames, dtype=_I64)  # BICONF clean-round streaks
        self._flipped = np.zeros(frames, dtype=bool)  # a flip in the frame's current pass
        self._srch = np.zeros((8, 0), dtype=_I64)  # active searches (rows _F.._FB)
        self._sa = np.zeros(0, dtype=np.uint8)  # Alice's parity of each search's interval
        self._found = np.zeros((8, 0), dtype=_I64)  # ended searches, flips not yet applied
        self._cand: list[NDArray[np.int64]] = []  # block ids to check for opening
        self._step = 0
        empty = np.zeros(0, dtype=_I64)
        # what the outstanding query asked: top pass and rows, search levels, one-range tops
        self._ask_top = (-1, empty)
        self._ask_levels: list[tuple[NDArray[np.int64], ...]] = []
        self._ask_small = (empty, empty)
        self.flips = 0

    # -- tables ------------------------------------------------------------------

    def _make_passes(self, upto: int) -> None:
        """Keep Bob's block parities (and tree room) for passes below ``upto``."""
        if upto <= self._made:
            return
        frames, n = self.frames, self.frame_bits
        room = self._tree.size // (2 * n * frames)
        if upto > room:
            room = min(self._passes.max_passes, max(upto, 2 * room))
            tree = np.zeros(room * frames * 2 * n, dtype=np.uint8)
            tree[: self._tree.size] = self._tree
            self._tree = tree
        for q in range(self._made, upto):
            par = self._passes.top_parities(self._bits, q)
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
        return base + ((s + e) >> 1) + self.frame_bits * ((e - s) == 1)

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

    # -- receiving -----------------------------------------------------------------

    def _start(self) -> list[LinkMessage]:
        self._settle(fresh=False)
        return [self._next_message()]

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
        for depth, (f, _, _, _, left_node, right_node, parent_node) in enumerate(self._ask_levels):
            left = parities[at : at + f.size]
            at += f.size
            parent = self._sa if depth == 0 else tree[parent_node] - 1
            tree[left_node] = left + 1
            tree[right_node] = (left ^ parent) + 1
        if small_f.size:
            vals = parities[at:]
            for qq in np.unique(small_q).tolist():
                sel = small_q == qq
                self._store_tops(int(qq), small_f[sel], vals[sel][:, None])
        self._settle(fresh=n_search > 0)
        return [self._next_message()]

    # -- advancing without round trips -----------------------------------------------

    def _settle(self, *, fresh: bool) -> None:
        """Advance everything Bob can without asking Alice anything (``fresh``: every
        active search's next left half has just arrived)."""
        while True:
            self._descend(fresh)
            fresh = False
            if self._found.shape[1] and self._apply_flips():
                continue
            if self._cand and self._open():
                continue
            if not self._advance_frames():
                return

    def _descend(self, fresh: bool) -> None:
        """Bisect active searches through every level whose parity Bob knows."""
        n = self.frame_bits
        while self._srch.shape[1]:
            srch = self._srch
            s, e = srch[_S], srch[_E]
            mid = (s + e) >> 1
            half = mid - s
            vals = self._tree[srch[_KB] + ((s + mid) >> 1) + n * (half == 1)]
            if fresh:
                fresh = False
                sel = None
            else:
                known = vals != 0
                if not known.any():
                    return
                sel = None if known.all() else np.flatnonzero(known)
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
        ends = np.cumsum(lengths)
        total = int(ends[-1])
        firsts = ends - lengths
        # one index ramp per segment, then one running XOR (reduceat is slow on short ones)
        ramp = np.arange(total, dtype=_I64)
        ramp += np.repeat(perm_base + s - firsts, lengths)
        orig = self._perm_cat[ramp]
        orig += np.repeat(bit_base, lengths)
        acc = np.empty(total + 1, dtype=np.uint8)
        acc[0] = 0
        np.bitwise_xor.accumulate(self._bits_flat[orig], out=acc[1:])
        return np.asarray(acc[ends] ^ acc[firsts], dtype=np.uint8)

    def _take_found(self) -> None:
        """Move searches down to one position into ``_found``."""
        srch = self._srch
        end = (srch[_E] - srch[_S]) == 1
        if end.any():
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
            if hold.all():
                return False
            self._found = found[:, hold]
            found = found[:, ~hold]
        else:
            self._found = found[:, :0]
        self._busy[found[_G]] = False
        self._cand.append(found[_G])
        n = self.frame_bits
        flat = np.unique(found[_FB] + self._perm_cat[found[_PB] + found[_S]])
        self._bits_flat[flat] ^= 1
        self.flips += int(flat.size)
        ff, ii = np.divmod(flat, n)
        self._flipped[ff] = True
        perm_rows, boff, nb, k = self._flip_cols
        gids = (boff + ff * nb + self._inv_cat[perm_rows + ii] // k).reshape(-1)
        if gids.size > 4096:
            self._bob ^= (np.bincount(gids, minlength=self._bob.size) & 1).astype(np.uint8)
        else:
            np.bitwise_xor.at(self._bob, gids, 1)
        self._cand.append(gids)
        return True

    def _open(self) -> bool:
        """Start searches in differing, known, idle blocks of the frames' passes so far."""
        c = np.concatenate(self._cand) if len(self._cand) > 1 else self._cand[0]
        self._cand = []
        c = c[self._known[c] & (self._alice[c] != self._bob[c]) & ~self._busy[c]]
        if c.size == 0:
            return False
        c = np.unique(c)
        q = np.searchsorted(self._boff, c, side="right") - 1
        f, b = np.divmod(c - self._boff[q], self._nb[q])
        ok = q <= self._cur[f]
        if not ok.all():
            c, q, f, b = c[ok], q[ok], f[ok], b[ok]
            if c.size == 0:
                return False
        n = self.frame_bits
        k = self._k[q]
        s = b * k
        self._busy[c] = True
        new = np.stack(
            [f, q, s, np.minimum(s + k, n), c, (q * self.frames + f) * (2 * n), q * n, f * n]
        )
        self._srch = np.concatenate([self._srch, new], axis=1)
        self._sa = np.concatenate([self._sa, self._alice[c]])
        self._take_found()
        return True

    def _advance_frames(self) -> bool:
        """Move frames with nothing left to do in their pass on (or finish them)."""
        idle = ~(self._done | self._waiting)
        idle[self._srch[_F]] = False
        idle[self._found[_F]] = False
        rows = np.flatnonzero(idle)
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
        for qq in np.unique(nxt).tolist():
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

    def _next_message(self) -> LinkMessage:
        frames = self.frames
        if self._done.all():
            self.done = True
            return CascadeDone(
                block_id=self.params.block_id, disclosed_bits=int(self.disclosed_bits.sum())
            )
        empty = np.zeros(0, dtype=_I64)
        top_q, top_rows = -1, empty
        small_f, small_q = empty, empty
        if self._waiting.any():
            need = np.flatnonzero(self._waiting)
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
        if pieces:
            f, q, s, e = (np.concatenate(col) for col in zip(*pieces, strict=True))
            self.disclosed_bits += np.bincount(f, minlength=frames)
        else:
            f = q = s = e = empty
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
        """The left halves to ask for: (frame, pass, start, mid, left, right and parent
        tree index) per level; one level of every active search, more levels (every
        node's left half) when few searches are left, to save round trips."""
        srch = self._srch
        if srch.shape[1] == 0:
            return []
        f, q, s, e, base = srch[_F], srch[_Q], srch[_S], srch[_E], srch[_KB]
        depth = _LOOK_DEPTH if f.size <= _LOOK_MAX else 1
        levels = []
        for i in range(depth):
            if i:
                long = (e - s) >= 2
                if not long.all():
                    f, q, s, e, base = f[long], q[long], s[long], e[long], base[long]
                if f.size == 0:
                    break
            mid = (s + e) >> 1
            node = self._node
            levels.append((f, q, s, mid, node(base, s, mid), node(base, mid, e), node(base, s, e)))
            f, q, base = np.tile(f, 2), np.tile(q, 2), np.tile(base, 2)
            s, e = np.concatenate([s, mid]), np.concatenate([mid, e])
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
