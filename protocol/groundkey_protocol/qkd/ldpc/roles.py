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
``"reveal-request"`` naming the frames he could not decode and a count ``t``;
Alice reveals, for those frames, the first ``t`` symbols of a public order (the
punctured symbols, which then count as shortened, then key bits in a seeded
order) so that what stays unknown decodes at ``BLIND_SAFE_EFFICIENCY_GAIN`` times
the target efficiency; Bob decodes those frames again. At most three messages per
batch, hence per frame. Frames that met the syndrome with a wrong codeword fail
the tag and get the reveal round like any other failed frame.

Leakage per frame (both roles count the same): ``m - p`` for the syndrome
(see :mod:`.rate`), :data:`TAG_BITS` for the check tag, plus one bit per revealed
symbol.
"""

from __future__ import annotations

import math
import secrets

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
    "BLIND_SAFE_EFFICIENCY_GAIN",
    "TAG_BITS",
    "LdpcAlice",
    "LdpcBob",
    "is_blind",
]

#: Blind mode aims its first message at this fraction of the plain target
#: efficiency. 1.0: measured, a more aggressive first message costs more in the
#: reveal round than it saves (a revealed key bit is worth far less than a
#: syndrome bit), so the blind round is a cheap rescue of the ~1 % failed frames.
BLIND_FIRST_FACTOR = 1.0
#: In the blind round, Bob asks for enough symbols that the efficiency of what
#: remains unknown is this factor times the plain target.
BLIND_SAFE_EFFICIENCY_GAIN = 1.25
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

    def reveal_count(self, qber: float) -> int:
        """Symbols to reveal so the unknown remainder decodes at a safe efficiency."""
        p = self.plan
        f_safe = default_efficiency(qber, p.frame_bits) * BLIND_SAFE_EFFICIENCY_GAIN
        unknown_max = p.m / (f_safe * binary_entropy(qber))
        extra = max(0, math.ceil(p.frame_bits - unknown_max))
        return p.punctured + min(extra, p.frame_bits)


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
        frames = np.frombuffer(message.arrays.get("frames", b""), dtype="<u4").astype(np.int64)
        count = int(message.ints.get("count", -1))
        su = self._setup
        if (
            frames.size == 0
            or frames.max() >= self.frames
            or np.unique(frames).size != frames.size
            or count != su.reveal_count(self.params.qber)
        ):
            raise ProtocolError("alice: bad reveal request", protocol="ldpc")
        values = self._reveal_values(frames, count)
        self.disclosed_bits[frames] += count
        self.done = True
        return [
            ReconcileData(
                block_id=self.params.block_id,
                method=self.params.method,
                step=2,
                kind="reveal",
                arrays={"bits": np.packbits(values).tobytes()},
                ints={"count": count, "frames": int(frames.size)},
            )
        ]

    def _reveal_values(self, frames: NDArray[np.int64], count: int) -> NDArray[np.uint8]:
        su = self._setup
        p = su.pos.punctured.size
        punct = self._punct_values[frames][:, : min(count, p)]
        keys = su.reveal_key_order[: max(0, count - p)]
        return np.concatenate([punct, self._bits[frames][:, keys]], axis=1)


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
        self._count = 0

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
            self.frame_ok_first[:] = self.frame_ok
            if not su.blind:
                self.done = True
                return []
            self._failed = np.flatnonzero(~self.frame_ok).astype(np.int64)
            if self._failed.size == 0:
                self.done = True
                return [self._reply("done", {}, {})]
            self._count = su.reveal_count(self.params.qber)
            return [
                self._reply(
                    "reveal-request",
                    {"frames": self._failed.astype("<u4").tobytes()},
                    {"count": self._count},
                )
            ]
        if message.step == 2 and message.kind == "reveal" and self._failed.size:
            values = _unpack(
                message.arrays.get("bits", b""), self._failed.size, self._count, "reveal"
            )
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

    def _apply_reveal(self, values: NDArray[np.uint8]) -> None:
        su = self._setup
        rows = self._failed
        self.disclosed_bits[rows] += self._count
        p = su.pos.punctured.size
        n_punct = min(self._count, p)
        keys = su.reveal_key_order[: max(0, self._count - p)]
        # revealed key bits are Alice's: take them before decoding
        self._raw[np.ix_(rows, keys)] = values[:, n_punct:]
        llr = self._llr(rows)
        sign = 1.0 - 2.0 * values.astype(np.float32)
        llr[:, su.pos.punctured[:n_punct]] = _KNOWN_LLR * sign[:, :n_punct]
        llr[:, su.pos.key[keys]] = _KNOWN_LLR * sign[:, n_punct:]
        self._decode(rows, llr)
