"""Alice and Bob of one-way rate-adaptive LDPC reconciliation (plain and blind).

``ldpc``: one message. Alice embeds each frame in a codeword of the mother code
chosen by :func:`~groundkey_protocol.qkd.ldpc.rate.plan_rate` for the agreed QBER
(key bits, private random punctured bits, zero shortened bits) and sends the
syndromes of the whole batch (:class:`ReconcileData` ``kind="syndrome"``). Bob runs
belief propagation with LLR ``±ln((1-Q)/Q)`` on his bits, 0 on punctured and
+∞ on shortened symbols. With the syndrome Alice sends a 32-bit check tag per
frame (a polynomial hash over GF(2^64) at a point drawn from the public seed,
truncated: a wrong frame passes with probability ≤ (n/64)/2^32 ≈ 3·10^-7 at
10^5 bits). Frames whose syndrome or tag is not met are known to Bob
(:attr:`LdpcBob.frame_ok`): that includes BP converging to a wrong codeword (the
codes' error floor), which the syndrome alone cannot reveal. Verification
follows unchanged.

``ldpc-blind``: the same first message; Bob answers ``"done"`` or a
``"reveal-request"`` naming the frames he could not decode (syndrome or tag
unmet) and, per frame, the key positions his decoder flipped (where its last
decision differs from his measurement: mostly his errors, and the support of a
wrong codeword if BP converged to one), plus, for frames whose last decision
misses more than :data:`NEAR_CONVERGED` of the checks, a tranche of key bits in a
public seeded order sized so that what stays unknown decodes at
``BLIND_SAFE_EFFICIENCY_GAIN`` times the target efficiency at the frame's own
QBER, which Bob estimates from the checks his raw word misses (those without a
punctured neighbour: their mismatch is the parity of his errors there). Alice
reveals the punctured symbols and her bits at those positions; Bob decodes those
frames again. Flip positions and the tranche size depend on Bob's errors, not on
the key (BP is symmetric), and each revealed bit is counted. A frame of the
binomial tail costs ~N·Q bits this way; a frame far from converging ~7 % of a
3.6·10^5-bit frame at QBER 1 % (0.85 in f for that frame). At most three messages
per batch, hence per frame.

A frame left only a few checks short (:data:`UNMET_NEIGHBOURHOOD_CHECKS`) also gets
the key bits of those checks revealed.

Leakage per frame (both roles count the same): ``m - p`` for the syndrome
(see :mod:`.rate`), :data:`TAG_BITS` for the check tag, plus one bit per revealed
symbol.
"""

from __future__ import annotations

import math
import secrets
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import LinkMessage, ReconcileData
from groundkey_protocol.qkd.ldpc.codes import get_code, get_decoder
from groundkey_protocol.qkd.ldpc.decoder import bsc_llr
from groundkey_protocol.qkd.ldpc.rate import (
    Positions,
    RatePlan,
    binary_entropy,
    default_efficiency,
    plan_positions,
    plan_rate,
)
from groundkey_protocol.qkd.reconcile import ReconcileAlice, ReconcileBob, ReconcileParams
from groundkey_protocol.qkd.verify import poly_hash64

__all__ = [
    "BLIND_FIRST_FACTOR",
    "BLIND_LONG_FRAME_BITS",
    "BLIND_SAFE_EFFICIENCY_GAIN",
    "BLIND_SAFE_EFFICIENCY_GAIN_SHORT",
    "NEAR_CONVERGED",
    "TAG_BITS",
    "UNMET_NEIGHBOURHOOD_CHECKS",
    "LdpcAlice",
    "LdpcBob",
    "is_blind",
]

#: Blind mode aims its first message at this fraction of the plain target
#: efficiency. 1.0: measured on 256 frames of 9·10^4 bits, 0.97 gives f 1.40 / 1.21 /
#: 1.115 at QBER 1 / 2 / 5 % (against 1.246 / 1.154 / 1.123): the frames that then
#: fail are far from converging and need the costly tranche, so the blind round is
#: best used as a cheap rescue of the ≤ 1 % of frames that fail.
BLIND_FIRST_FACTOR = 1.0
#: In the blind round, Bob asks for enough symbols of a frame far from converging
#: that what remains unknown decodes at this factor times the plain target
#: efficiency at the frame's own QBER, estimated from his raw word's unmet checks
#: (:meth:`_Setup.estimate_qber`); frames of fewer than ``BLIND_LONG_FRAME_BITS``
#: key bits, whose estimate is noisier, use ``BLIND_SAFE_EFFICIENCY_GAIN_SHORT``.
#: Measured: every such frame rescued with the agreed QBER 8 % (3.6·10^5-bit
#: frames, also with a factor 1.0) or 30 % (9·10^3-bit frames) below the truth; a
#: fixed 1.25 at the agreed QBER (before) cost ~2.3 in f per rescued 3.6·10^5-bit
#: frame at QBER 1 %, ~0.5–1 now.
BLIND_SAFE_EFFICIENCY_GAIN = 1.05
BLIND_SAFE_EFFICIENCY_GAIN_SHORT = 1.1
BLIND_LONG_FRAME_BITS = 90_000
#: A failed frame whose last decision misses at most this fraction of the checks
#: is near a solution (or met the syndrome with a wrong codeword): revealing the
#: bits the decoder flipped and the punctured symbols rescues it (measured: all of
#: them at QBER 1–2 %, ~1.5·10^3 bits at 2 % instead of a ~1.6·10^4-bit tranche).
NEAR_CONVERGED = 0.1
#: A failed frame whose last decision misses at most this many checks (a trapping
#: set, or a near-codeword) also gets the key bits of those checks revealed (~73
#: each at rate 0.9): revealing only the flipped bits left a 3.6·10^5-bit frame at
#: QBER 1 % two checks short again after the blind round (1 of 512 frames).
UNMET_NEIGHBOURHOOD_CHECKS = 32
#: Check tag per frame sent with the syndrome (counted as disclosed).
TAG_BITS = 32
_KNOWN_LLR = np.float32(40.0)


def is_blind(method: str) -> bool:
    """``ldpc-blind`` (any method name ending in ``blind``) uses the reveal round."""
    return method.endswith("blind")


class _Setup:
    """What both roles derive from the params and the frame size."""

    def __init__(self, params: ReconcileParams, frame_bits: int) -> None:
        self.blind = is_blind(params.method)
        target = default_efficiency(params.qber, frame_bits)
        if self.blind:
            target *= BLIND_FIRST_FACTOR
        self.plan: RatePlan = plan_rate(frame_bits, params.qber, efficiency=target)
        self.code = get_code(self.plan.mother_rate, self.plan.n)
        self.pos: Positions = plan_positions(self.code, self.plan, seed=params.seed)
        rng = np.random.default_rng([params.seed, 0x1D9C])
        # public reveal order: punctured symbols, then key positions (as key indices)
        self.reveal_key_order = rng.permutation(frame_bits).astype(np.int64)
        self.tag_point = int(rng.integers(1, 1 << 62, dtype=np.int64)) << 2 | 3

    def ints(self) -> dict[str, int]:
        p = self.plan
        return {
            "n": p.n,
            "m": p.m,
            "punctured": p.punctured,
            "shortened": p.shortened,
            "tag_bits": TAG_BITS,
        }

    def tags(self, bits: NDArray[np.uint8]) -> NDArray[np.uint32]:
        """The check tag of every frame (row) of ``bits``."""
        full = poly_hash64(bits, [self.tag_point])[:, 0]
        return (full & np.uint64(0xFFFF_FFFF)).astype(np.uint32)

    def tranche(self, qber: float) -> int:
        """Key bits (a public random order's prefix) that make the unknown remainder
        decode at ``BLIND_SAFE_EFFICIENCY_GAIN`` (short frames: ``..._SHORT``) times the target
        efficiency at ``qber``."""
        p = self.plan
        gain = (
            BLIND_SAFE_EFFICIENCY_GAIN
            if p.frame_bits >= BLIND_LONG_FRAME_BITS
            else BLIND_SAFE_EFFICIENCY_GAIN_SHORT
        )
        f_safe = default_efficiency(qber, p.frame_bits) * gain
        unknown_max = p.m / (f_safe * binary_entropy(qber))
        return min(max(0, math.ceil(p.frame_bits - unknown_max)), p.frame_bits)

    @cached_property
    def clean_checks(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Checks with no punctured neighbour, and how many of them hold ``d`` key bits
        (index ``d``); only Bob's blind round needs them."""
        checks, variables = self.code.edges
        kind = np.zeros(self.code.n, dtype=np.int64)  # 0 key, 1 shortened, 2 punctured
        kind[self.pos.shortened] = 1
        kind[self.pos.punctured] = 2
        punct = np.bincount(checks[kind[variables] == 2], minlength=self.code.m)
        clean = np.flatnonzero(punct == 0).astype(np.int64)
        key_deg = np.bincount(checks[kind[variables] == 0], minlength=self.code.m)
        return clean, np.bincount(key_deg[clean]).astype(np.float64)

    def estimate_qber(self, unmet: NDArray[np.int64]) -> NDArray[np.float64]:
        """Per frame, the QBER whose expected number of unmet clean checks is ``unmet``.

        A check of ``d`` key bits is unmet by Bob's raw word with probability
        ``(1 - (1 - 2q)^d) / 2``; its syndrome bit is the parity of the errors there,
        which depends on the error pattern only, not on the key.
        """
        counts = self.clean_checks[1]
        degrees = np.arange(counts.size, dtype=np.float64)
        lo = np.full(unmet.shape, 1e-5)
        hi = np.full(unmet.shape, 0.45)
        for _ in range(40):  # bisection: the expectation grows with q
            mid = 0.5 * (lo + hi)
            expected = (1.0 - (1.0 - 2.0 * mid[:, None]) ** degrees) / 2.0
            above = expected @ counts > unmet
            hi = np.where(above, mid, hi)
            lo = np.where(above, lo, mid)
        estimate: NDArray[np.float64] = 0.5 * (lo + hi)
        return estimate

    @cached_property
    def key_index(self) -> NDArray[np.int64]:
        """Per codeword position, its index in the frame's key bits (-1: not a key bit)."""
        index = np.full(self.code.n, -1, dtype=np.int64)
        index[self.pos.key] = np.arange(self.pos.key.size)
        return index

    def check_keys(self, checks: NDArray[np.int64]) -> NDArray[np.int64]:
        """Key indices of the variables of ``checks`` (sorted, unique)."""
        edge_checks, edge_vars = self.code.edges
        keys = self.key_index[edge_vars[np.isin(edge_checks, checks)]]
        return np.unique(keys[keys >= 0])

    def revealed_keys(self, tranche: int, flips: NDArray[np.int64]) -> NDArray[np.int64]:
        """Key positions revealed for one frame: the tranche and the flip positions."""
        return np.union1d(self.reveal_key_order[:tranche], flips).astype(np.int64)


def _unpack(data: bytes, rows: int, cols: int, what: str) -> NDArray[np.uint8]:
    if len(data) != (rows * cols + 7) // 8:
        raise ProtocolError(f"{what}: {len(data)} bytes for {rows}x{cols} bits", protocol="ldpc")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=rows * cols)
    return bits.reshape(rows, cols)


class LdpcAlice(ReconcileAlice):
    """Sends the syndromes; in blind mode reveals symbols of the frames Bob asks for.

    ``rng`` draws the punctured symbols (private randomness; default: seeded from
    :mod:`secrets`).
    """

    def __init__(
        self,
        bits: NDArray[np.uint8],
        params: ReconcileParams,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(bits, params)
        self._setup = _Setup(params, self.frame_bits)
        self._rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
        self._punct_values = np.zeros((0, 0), dtype=np.uint8)

    def _start(self) -> list[LinkMessage]:
        su = self._setup
        words = np.zeros((self.frames, su.code.n), dtype=np.uint8)
        words[:, su.pos.key] = self._bits
        self._punct_values = self._rng.integers(
            0, 2, size=(self.frames, su.pos.punctured.size), dtype=np.uint8
        )
        words[:, su.pos.punctured] = self._punct_values
        syndrome = su.code.syndrome(words)
        self.disclosed_bits += su.plan.syndrome_leak_bits + TAG_BITS
        if not su.blind:
            self.done = True
        return [
            ReconcileData(
                block_id=self.params.block_id,
                method=self.params.method,
                step=0,
                kind="syndrome",
                arrays={
                    "syndrome": np.packbits(syndrome).tobytes(),
                    "tags": su.tags(self._bits).astype("<u4").tobytes(),
                },
                ints=su.ints(),
            )
        ]

    def _receive(self, message: LinkMessage) -> list[LinkMessage]:
        if (
            not isinstance(message, ReconcileData)
            or message.step != 1
            or message.method != self.params.method
        ):
            raise ProtocolError(f"alice: unexpected {message!r}", protocol="ldpc")
        if message.kind == "done":
            self.done = True
            return []
        if message.kind != "reveal-request":
            raise ProtocolError(f"alice: unexpected kind {message.kind!r}", protocol="ldpc")
        su = self._setup
        frames = _u32(message.arrays.get("frames", b""))
        tranches = _u32(message.arrays.get("tranches", b""))
        flip_counts = _u32(message.arrays.get("flip_counts", b""))
        flips = _u32(message.arrays.get("flips", b""))
        if (
            frames.size == 0
            or frames.max() >= self.frames
            or np.unique(frames).size != frames.size
            or tranches.size != frames.size
            or flip_counts.size != frames.size
            or int(flip_counts.sum()) != flips.size
            or np.any(tranches > self.frame_bits)
            or (flips.size and flips.max() >= self.frame_bits)
        ):
            raise ProtocolError("alice: bad reveal request", protocol="ldpc")
        values = []
        for frame, tranche, frame_flips in zip(
            frames, tranches, np.split(flips, np.cumsum(flip_counts)[:-1]), strict=True
        ):
            keys = su.revealed_keys(int(tranche), frame_flips)
            values.append(self._punct_values[frame])
            values.append(self._bits[frame, keys])
            self.disclosed_bits[frame] += self._punct_values.shape[1] + keys.size
        self.done = True
        return [
            ReconcileData(
                block_id=self.params.block_id,
                method=self.params.method,
                step=2,
                kind="reveal",
                arrays={"bits": np.packbits(np.concatenate(values)).tobytes()},
                ints={"frames": int(frames.size)},
            )
        ]


def _u32(data: bytes) -> NDArray[np.int64]:
    if len(data) % 4:
        raise ProtocolError(f"{len(data)} bytes is not a u32 array", protocol="ldpc")
    return np.frombuffer(data, dtype="<u4").astype(np.int64)


class LdpcBob(ReconcileBob):
    """Decodes toward Alice's syndromes; ``frame_ok`` tells which frames met them."""

    def __init__(self, bits: NDArray[np.uint8], params: ReconcileParams) -> None:
        super().__init__(np.array(bits, dtype=np.uint8, copy=True), params)
        self._raw = self._bits.copy()  # what Bob measured (plus what Alice revealed)
        self._setup = _Setup(params, self.frame_bits)
        self.frame_ok = np.zeros(self.frames, dtype=bool)
        self.frame_ok_first = np.zeros(self.frames, dtype=bool)
        self._syndrome = np.zeros((0, 0), dtype=np.uint8)
        self._tags = np.zeros(0, dtype=np.uint32)
        self._failed = np.zeros(0, dtype=np.int64)
        self._unsatisfied = np.zeros(self.frames, dtype=np.int64)
        self._raw_unmet = np.zeros(self.frames, dtype=np.int64)
        # per frame left a few checks short: those checks (see UNMET_NEIGHBOURHOOD_CHECKS)
        self._unmet_checks: dict[int, NDArray[np.int64]] = {}
        self._revealed: list[NDArray[np.int64]] = []

    def _start(self) -> list[LinkMessage]:
        return []

    def _llr(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        su = self._setup
        llr = np.zeros((rows.size, su.code.n), dtype=np.float32)
        mag = np.float32(bsc_llr(self.params.qber))
        llr[:, su.pos.key] = mag * (1.0 - 2.0 * self._raw[rows].astype(np.float32))
        llr[:, su.pos.shortened] = _KNOWN_LLR
        return llr

    def _decode(self, rows: NDArray[np.int64], llr: NDArray[np.float32]) -> None:
        su = self._setup
        result = get_decoder(su.plan.mother_rate, su.plan.n).decode(llr, self._syndrome[rows])
        self._bits[rows] = result.bits[:, su.pos.key]
        self.frame_ok[rows] = result.ok & (su.tags(self._bits[rows]) == self._tags[rows])
        # checks left unmet (0 where the decoder met the syndrome: no need to recount)
        self._unsatisfied[rows] = 0
        missed = ~result.ok
        if missed.any():
            unmet = su.code.syndrome(result.bits[missed]) != self._syndrome[rows[missed]]
            self._unsatisfied[rows[missed]] = unmet.sum(axis=1)
            for row, checks in zip(rows[missed], unmet, strict=True):
                if checks.sum() <= UNMET_NEIGHBOURHOOD_CHECKS:
                    self._unmet_checks[int(row)] = np.flatnonzero(checks).astype(np.int64)

    def _receive(self, message: LinkMessage) -> list[LinkMessage]:
        if not isinstance(message, ReconcileData) or message.method != self.params.method:
            raise ProtocolError(f"bob: unexpected {message!r}", protocol="ldpc")
        su = self._setup
        if message.step == 0 and message.kind == "syndrome" and self._syndrome.size == 0:
            if dict(message.ints) != su.ints():
                raise ProtocolError(
                    f"bob: code parameters {message.ints} differ from {su.ints()}",
                    protocol="ldpc",
                )
            self._syndrome = _unpack(
                message.arrays.get("syndrome", b""), self.frames, su.code.m, "syndrome"
            )
            tags = message.arrays.get("tags", b"")
            if len(tags) != 4 * self.frames:
                raise ProtocolError(
                    f"tags: {len(tags)} bytes for {self.frames} frames", protocol="ldpc"
                )
            self._tags = np.frombuffer(tags, dtype="<u4").astype(np.uint32)
            self.disclosed_bits += su.plan.syndrome_leak_bits + TAG_BITS
            rows = np.arange(self.frames, dtype=np.int64)
            self._decode(rows, self._llr(rows))
            if su.blind and not self.frame_ok.all():
                failed = np.flatnonzero(~self.frame_ok).astype(np.int64)
                raw = np.zeros((failed.size, su.code.n), dtype=np.uint8)
                raw[:, su.pos.key] = self._raw[failed]
                unmet = su.code.syndrome(raw) != self._syndrome[failed]
                self._raw_unmet[failed] = unmet[:, su.clean_checks[0]].sum(axis=1)
            self.frame_ok_first[:] = self.frame_ok
            if not su.blind:
                self.done = True
                return []
            self._failed = np.flatnonzero(~self.frame_ok).astype(np.int64)
            if self._failed.size == 0:
                self.done = True
                return [self._reply("done", {}, {})]
            return [self._request()]
        if message.step == 2 and message.kind == "reveal" and self._failed.size:
            count = self._failed.size * su.pos.punctured.size + sum(k.size for k in self._revealed)
            values = _unpack(message.arrays.get("bits", b""), 1, count, "reveal")[0]
            self._apply_reveal(values)
            self.done = True
            return []
        raise ProtocolError(f"bob: unexpected {message!r}", protocol="ldpc")

    def _reply(self, kind: str, arrays: dict[str, bytes], ints: dict[str, int]) -> LinkMessage:
        return ReconcileData(
            block_id=self.params.block_id,
            method=self.params.method,
            step=1,
            kind=kind,
            arrays=arrays,
            ints=ints,
        )

    def _request(self) -> LinkMessage:
        """Ask, per failed frame, for the punctured symbols and the key bits at the
        positions the decoder flipped and, if only a few checks were left unmet, the
        key bits of those checks; frames far from converging also get a tranche.

        All of these positions follow from Bob's errors and the decoder, not from the
        key (BP on ``(y, H·x)`` runs as on ``(e, H·e)``, flipped by ``x``)."""
        su = self._setup
        rows = self._failed
        flipped = self._bits[rows] != self._raw[rows]
        near = self._unsatisfied[rows] <= NEAR_CONVERGED * su.code.m
        q_frame = np.maximum(su.estimate_qber(self._raw_unmet[rows]), self.params.qber)
        tranches = np.array(
            [0 if n else su.tranche(float(q)) for n, q in zip(near, q_frame, strict=True)],
            dtype="<u4",
        )
        flips = [
            np.union1d(np.flatnonzero(bits), su.check_keys(self._unmet_checks[int(row)]))
            if int(row) in self._unmet_checks
            else np.flatnonzero(bits).astype(np.int64)
            for row, bits in zip(rows, flipped, strict=True)
        ]
        self._revealed = [su.revealed_keys(int(t), f) for t, f in zip(tranches, flips, strict=True)]
        return self._reply(
            "reveal-request",
            {
                "frames": rows.astype("<u4").tobytes(),
                "tranches": tranches.tobytes(),
                "flip_counts": np.array([f.size for f in flips], dtype="<u4").tobytes(),
                "flips": np.concatenate(flips).astype("<u4").tobytes(),
            },
            {},
        )

    def _apply_reveal(self, values: NDArray[np.uint8]) -> None:
        su = self._setup
        rows = self._failed
        p = su.pos.punctured.size
        punctured = []
        at = 0
        for row, keys in zip(rows, self._revealed, strict=True):
            punctured.append(values[at : at + p])
            # revealed key bits are Alice's: take them before decoding
            self._raw[row, keys] = values[at + p : at + p + keys.size]
            self.disclosed_bits[row] += p + keys.size
            at += p + keys.size
        llr = self._llr(rows)
        for i, (row, keys) in enumerate(zip(rows, self._revealed, strict=True)):
            llr[i, su.pos.punctured] = _KNOWN_LLR * (1.0 - 2.0 * punctured[i].astype(np.float32))
            llr[i, su.pos.key[keys]] = _KNOWN_LLR * (
                1.0 - 2.0 * self._raw[row, keys].astype(np.float32)
            )
        self._decode(rows, llr)
