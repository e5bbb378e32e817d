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

Protocol (Bob drives, Alice answers; one round trip per step for the whole batch):
Bob asks for the top-level block parities of a pass (:class:`CascadeQuery` with
``top_pass``), then runs "waves" of binary searches: every block (of any pass
so far) whose parities differ is bisected; each step asks Alice for the parity
of the left half of every active search at once. A wave's flips are applied when
all its searches end, so every search ends on a true error; flipped bits toggle
the parities of their blocks in every other pass, which opens the next wave
(the cascade effect). When no known block differs, the next pass starts. Bob
ends with :class:`CascadeDone`. No per-bit Python loops: Alice answers from a
prefix XOR of her bits in each pass order (her bits never change, so every range
parity is two lookups); Bob gathers his ranges and takes one running XOR; passes
with few blocks get their top-level parities by AND with packed block masks and
popcount.

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
    """Pass specs and permutations, shared by both roles (grown lazily for BICONF)."""

    def __init__(self, params: ReconcileParams, frame_bits: int) -> None:
        self.method = params.method
        self.seed = params.seed
        self.n = frame_bits
        self.specs = cascade_schedule(params.method, params.qber, frame_bits)
        self.biconf = params.method == "cascade-biconf"
        self.max_passes = len(self.specs) + (BICONF_MAX_ROUNDS if self.biconf else 0)
        self.perms: list[NDArray[np.int64]] = []
        self.invs: list[NDArray[np.int64]] = []
        self._perm_cat = np.zeros(0, dtype=_I64)
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

    def perm(self, q: int) -> NDArray[np.int64]:
        while len(self.perms) <= q:
            perm, inv = _permutation(self.seed, len(self.perms), self.n)
            self.perms.append(perm)
            self.invs.append(inv)
        return self.perms[q]

    def perm_cat(self, q_max: int) -> NDArray[np.int64]:
        """Permutations of passes 0..q_max (at least) concatenated: pass q at q·n."""
        self.perm(q_max)
        if self._perm_cat.size < len(self.perms) * self.n:
            self._perm_cat = np.concatenate(self.perms)
        return self._perm_cat

    def inv(self, q: int) -> NDArray[np.int64]:
        self.perm(q)
        return self.invs[q]

    def _block_masks(self, q: int) -> NDArray[np.uint64]:
        """Packed membership masks of the blocks of pass ``q``: (nblocks, words)."""
        if q not in self._masks:
            k = self.spec(q).block_bits
            block_of = self.inv(q) // k
            member = block_of[None, :] == np.arange(self.nblocks(q))[:, None]
            self._masks[q] = _pack64(member.astype(np.uint8))
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
    """Pass ``p``'s public permutation and its inverse (cached: both roles draw the same)."""
    if p == 0:
        perm = np.arange(n, dtype=_I64)
    else:
        perm = np.random.default_rng([seed, p]).permutation(n).astype(_I64)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(n, dtype=_I64)
    perm.flags.writeable = False
    inv.flags.writeable = False
    return perm, inv


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

    def _range_parities(
        self,
        f: NDArray[np.int64],
        q: NDArray[np.int64],
        s: NDArray[np.int64],
        e: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        q_lo, q_hi = int(q.min()), int(q.max())
        if q_lo == q_hi:
            prefix = self._prefix_xor(q_lo, f)
            return np.asarray(prefix[f, e] ^ prefix[f, s], dtype=np.uint8)
        out = np.empty(f.size, dtype=np.uint8)
        for qq in np.unique(q).tolist():
            sel = q == qq
            fs = f[sel]
            prefix = self._prefix_xor(int(qq), fs)
            out[sel] = prefix[fs, e[sel]] ^ prefix[fs, s[sel]]
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


class CascadeBob(ReconcileBob):
    """Drives Cascade: asks for parities, bisects differing blocks, flips his bits.

    Bob remembers every Alice parity he learned (revealed, or inferred as parent
    XOR left half) and never asks for one twice: a search in a reopened block
    fast-forwards through the levels he already knows without a round trip. The
    cache is merged once per wave (searches within a wave are in distinct blocks,
    so they cannot share entries).
    """

    def __init__(self, bits: NDArray[np.uint8], params: ReconcileParams) -> None:
        super().__init__(np.array(bits, dtype=np.uint8, copy=True), params)
        self._passes = _Passes(params, self.frame_bits)
        self._pass = -1
        self._step = 0
        self._alice_par: list[NDArray[np.uint8]] = []
        self._known: list[NDArray[np.bool_]] = []
        self._bob_par: list[NDArray[np.uint8]] = []
        self._frame_parity = np.zeros(self.frames, dtype=np.uint8)
        empty = np.zeros(0, dtype=_I64)
        # active searches: frame, pass, [start, stop) in pass order, Alice's parity of it
        self._sf, self._sq, self._ss, self._se = empty, empty, empty, empty
        self._sa = np.zeros(0, dtype=np.uint8)
        self._found: list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]] = []
        self._cache_keys = empty
        self._cache_vals = np.zeros(0, dtype=np.uint8)
        self._recent_keys = empty
        self._recent_vals = np.zeros(0, dtype=np.uint8)
        self._wave_keys: list[NDArray[np.int64]] = []
        self._wave_vals: list[NDArray[np.uint8]] = []
        self._top_rows = empty
        self._expect_top = False
        self._clean = np.zeros(self.frames, dtype=np.int64)  # BICONF clean-round streaks
        self._flipped_in_pass = np.zeros(self.frames, dtype=bool)
        self.flips = 0

    # -- state machine -------------------------------------------------------

    def _start(self) -> list[LinkMessage]:
        return [self._begin_pass()]

    def _receive(self, message: LinkMessage) -> list[LinkMessage]:
        if not isinstance(message, CascadeReply) or message.step != self._step:
            raise ProtocolError(f"unexpected {type(message).__name__}", protocol="cascade")
        n_top = self._top_rows.size * self._passes.top_disclosed(self._pass)
        n_top = n_top if self._expect_top else 0
        n_range = 0 if self._expect_top else int(self._sf.size)
        if message.count != n_top + n_range or len(message.parities) != -(-message.count // 8):
            raise ProtocolError(f"reply holds {message.count} parities", protocol="cascade")
        parities = np.unpackbits(np.frombuffer(message.parities, dtype=np.uint8))[: message.count]
        if self._expect_top:
            self._store_top(parities[:n_top])
            self._expect_top = False
        elif self._sf.size:
            self._bisect(parities[n_top:])
        return [self._advance()]

    def _begin_pass(self) -> LinkMessage:
        self._pass += 1
        q = self._pass
        passes = self._passes
        nb = passes.nblocks(q)
        self._alice_par.append(np.zeros((self.frames, nb), dtype=np.uint8))
        self._known.append(np.zeros((self.frames, nb), dtype=bool))
        self._bob_par.append(passes.top_parities(self._bits, q))
        if passes.spec(q).first_block_only:
            rows = np.flatnonzero(self._clean < BICONF_CLEAN_ROUNDS).astype(_I64)
        else:
            rows = np.arange(self.frames, dtype=_I64)
        self._top_rows = rows
        self._flipped_in_pass[:] = False
        self._expect_top = True
        np.add.at(self.disclosed_bits, rows, passes.top_disclosed(q))
        self._step += 1
        top_frames = b"" if rows.size == self.frames else rows.astype("<u4").tobytes()
        return CascadeQuery(
            block_id=self.params.block_id, step=self._step, top_pass=q, top_frames=top_frames
        )

    def _store_top(self, parities: NDArray[np.uint8]) -> None:
        q = self._pass
        rows = self._top_rows
        if self._passes.spec(q).first_block_only:
            self._alice_par[q][rows, 0] = parities
            self._known[q][rows, 0] = True
            return
        par = self._alice_par[q]
        if q == 0:
            par[rows] = parities.reshape(rows.size, -1)
            self._frame_parity = (par.sum(axis=1) & 1).astype(np.uint8)
        else:
            sent = parities.reshape(rows.size, -1)
            par[rows, : sent.shape[1]] = sent
            par[rows, -1] = self._frame_parity[rows] ^ (sent.sum(axis=1) & 1).astype(np.uint8)
        self._known[q][rows] = True

    # -- binary searches -------------------------------------------------------

    def _keys(
        self, f: NDArray[np.int64], q: NDArray[np.int64], s: NDArray[np.int64], e: NDArray[np.int64]
    ) -> NDArray[np.int64]:
        # pass-major, then frame, start, stop: a wave's keys come out in a few sorted
        # runs (searches are opened in (pass, frame, block) order), cheap to merge
        n1 = self.frame_bits + 1
        return ((q * self.frames + f) * n1 + s) * n1 + e

    def _lookup(self, keys: NDArray[np.int64]) -> tuple[NDArray[np.bool_], NDArray[np.uint8]]:
        """Known Alice parities for ``keys``: (hit, value). Two sorted levels (a big one
        and a recent one merged into it now and then) keep insertion cheap."""
        hit = np.zeros(keys.size, dtype=bool)
        val = np.zeros(keys.size, dtype=np.uint8)
        for ck, cv in (
            (self._cache_keys, self._cache_vals),
            (self._recent_keys, self._recent_vals),
        ):
            if ck.size:
                idx = np.minimum(np.searchsorted(ck, keys), ck.size - 1)
                found = ck[idx] == keys
                hit |= found
                val[found] = cv[idx[found]]
        return hit, val

    def _remember(self, keys: NDArray[np.int64], vals: NDArray[np.uint8]) -> None:
        """Add a wave's learned parities to the cache."""
        order = np.argsort(keys, kind="stable")  # timsort: merges the sorted runs
        keys, vals = keys[order], vals[order]
        hit, _ = self._lookup(keys)
        keys, vals = keys[~hit], vals[~hit]
        at = np.searchsorted(self._recent_keys, keys)
        self._recent_keys = np.insert(self._recent_keys, at, keys)
        self._recent_vals = np.insert(self._recent_vals, at, vals)
        if self._recent_keys.size > max(4096, self._cache_keys.size // 4):
            merged = np.concatenate([self._cache_keys, self._recent_keys])
            order = np.argsort(merged, kind="stable")
            self._cache_keys = merged[order]
            self._cache_vals = np.concatenate([self._cache_vals, self._recent_vals])[order]
            self._recent_keys = np.zeros(0, dtype=_I64)
            self._recent_vals = np.zeros(0, dtype=np.uint8)

    def _bisect(self, alice_left: NDArray[np.uint8], sel: NDArray[np.intp] | None = None) -> None:
        """Advance active searches (all, or those at ``sel``) by one halving, given
        Alice's parities of their left halves."""
        f, q, s, e, a = self._sf, self._sq, self._ss, self._se, self._sa
        if sel is not None:
            f, q, s, e, a = f[sel], q[sel], s[sel], e[sel], a[sel]
        mid = (s + e) // 2
        bob_left = self._passes.range_parities(self._bits, f, q, s, mid)
        alice_right = a ^ alice_left
        self._wave_keys += [self._keys(f, q, s, mid), self._keys(f, q, mid, e)]
        self._wave_vals += [alice_left, alice_right]
        go_left = bob_left != alice_left
        new_s = np.where(go_left, s, mid)
        new_e = np.where(go_left, mid, e)
        new_a = np.where(go_left, alice_left, alice_right).astype(np.uint8)
        if sel is None:
            self._ss, self._se, self._sa = new_s, new_e, new_a
        else:
            self._ss[sel], self._se[sel], self._sa[sel] = new_s, new_e, new_a

    def _advance(self) -> LinkMessage:
        """Next query: a bisection step, a new wave, the next pass, or done."""
        while True:
            while self._sf.size:
                active = (self._se - self._ss) >= 2
                if not active.any():
                    self._apply_flips()
                    break
                message = self._range_query(active)
                if message is not None:
                    return message
            self._open_wave()
            if self._sf.size:
                continue
            self._end_pass()
            if self._pass + 1 < self._passes.max_passes and self._wants_more():
                return self._begin_pass()
            self.done = True
            return CascadeDone(
                block_id=self.params.block_id, disclosed_bits=int(self.disclosed_bits.sum())
            )

    def _range_query(self, active: NDArray[np.bool_]) -> LinkMessage | None:
        """Ask for the left halves Bob does not know yet (None: all were known)."""
        # Finished searches (interval of length 1) wait in _found until the wave ends.
        done = ~active
        if done.any():
            self._found.append((self._sf[done], self._sq[done], self._ss[done]))
            self._sf, self._sq = self._sf[active], self._sq[active]
            self._ss, self._se, self._sa = self._ss[active], self._se[active], self._sa[active]
        f, q, s, e = self._sf, self._sq, self._ss, self._se
        mid = (s + e) // 2
        hit, cached = self._lookup(self._keys(f, q, s, mid))
        if hit.any():
            # fast-forward through levels whose parity Bob already knows (no round trip)
            sel = np.flatnonzero(hit)
            self._bisect(cached[sel], sel)
            return None
        self.disclosed_bits += np.bincount(f, minlength=self.frames)
        self._step += 1
        return CascadeQuery(
            block_id=self.params.block_id,
            step=self._step,
            frames=f.astype("<u4").tobytes(),
            passes=q.astype("u1").tobytes(),
            starts=s.astype("<u4").tobytes(),
            stops=mid.astype("<u4").tobytes(),
        )

    def _apply_flips(self) -> None:
        self._found.append((self._sf, self._sq, self._ss))
        f = np.concatenate([x[0] for x in self._found])
        q = np.concatenate([x[1] for x in self._found])
        s = np.concatenate([x[2] for x in self._found])
        self._found = []
        empty = np.zeros(0, dtype=_I64)
        self._sf, self._sq, self._ss, self._se = empty, empty, empty, empty
        self._sa = np.zeros(0, dtype=np.uint8)
        if self._wave_keys:
            self._remember(np.concatenate(self._wave_keys), np.concatenate(self._wave_vals))
            self._wave_keys, self._wave_vals = [], []
        if f.size == 0:
            return
        orig = self._passes.perm_cat(self._pass)[q * self.frame_bits + s]
        flat = np.unique(f * self.frame_bits + orig)
        ff, ii = np.divmod(flat, self.frame_bits)
        self._bits.reshape(-1)[flat] ^= 1
        self.flips += int(flat.size)
        self._flipped_in_pass[ff] = True
        for p in range(self._pass + 1):
            blocks = self._passes.inv(p)[ii] // self._passes.spec(p).block_bits
            np.bitwise_xor.at(self._bob_par[p], (ff, blocks), 1)

    def _open_wave(self) -> None:
        fs, qs, ss, es, as_ = [], [], [], [], []
        n = self.frame_bits
        for p in range(self._pass + 1):
            ff, bb = np.nonzero((self._bob_par[p] != self._alice_par[p]) & self._known[p])
            if ff.size == 0:
                continue
            k = self._passes.spec(p).block_bits
            fs.append(ff.astype(_I64))
            qs.append(np.full(ff.size, p, dtype=_I64))
            ss.append(bb.astype(_I64) * k)
            es.append(np.minimum(bb.astype(_I64) * k + k, n))
            as_.append(self._alice_par[p][ff, bb])
        self._found = []
        if fs:
            self._sf, self._sq = np.concatenate(fs), np.concatenate(qs)
            self._ss, self._se = np.concatenate(ss), np.concatenate(es)
            self._sa = np.concatenate(as_).astype(np.uint8)

    def _end_pass(self) -> None:
        if self._passes.spec(self._pass).first_block_only:
            rows = self._top_rows
            clean = ~self._flipped_in_pass[rows]
            self._clean[rows] = np.where(clean, self._clean[rows] + 1, 0)

    def _wants_more(self) -> bool:
        if self._pass + 1 < len(self._passes.specs):
            return True
        return self._passes.biconf and bool((self._clean < BICONF_CLEAN_ROUNDS).any())
