"""Whole-block key distillation at both ends, as two sans-I/O roles.

:class:`DistillBob` (ground station) and :class:`DistillAlice` (satellite) take
their raw records and exchange :mod:`groundkey_protocol.link.messages`:

1. Bob -> ``SiftAnnounce`` (slots, bases); Alice -> ``SiftReply`` (bases,
   intensities, a fresh public ``sample_seed``). Both sift (:mod:`.sifting`).
2. Bob -> ``EstimateRequest``: his Z-basis bits and the X bits picked by the
   sample (``sample_fraction``); Alice -> ``EstimateReply``: Z errors per
   intensity, sample errors, and an abort reason when no key is possible (QBER
   above ``max_qber`` or a finite-key length <= 0 even with an optimistic λ_EC).
3. The X-basis bits left form the raw key, cut into equal frames of about
   ``frame_bits`` (0, the default: chosen from the agreed QBER estimate, the LDPC
   frame plan :func:`~groundkey_protocol.qkd.ldpc.rate.frame_bits_for` for the LDPC
   methods, 10^5 bits for Cascade); the reconciliation method
   (:mod:`.reconcile`) runs over them.
4. Alice -> ``VerifyTags`` (fresh GF(2^64) points, tags, :mod:`.verify`);
   Bob -> ``VerifyResult``. Any frame mismatch discards the block.
5. ℓ from the finite-key bound (:mod:`.finite_key`) with λ_EC = every
   disclosed reconciliation bit + tag bits; Alice -> ``AmplifySeed`` (fresh
   seed, :mod:`.amplify`); both hash to ℓ bits.

Each role ends with ``outcome``: a :class:`BlockOutcome`, either a key
(:class:`KeyBlock`) or ``aborted`` with a reason. "No key possible" is a result,
not an exception; malformed or inconsistent peer messages raise ProtocolError.
Random choices (sample seed, hash points, hash seed) come from the ``rng`` the
caller passes: seeded in tests and demos, OS entropy in service.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import (
    AmplifySeed,
    BlockAbort,
    EstimateReply,
    EstimateRequest,
    LinkMessage,
    SiftAnnounce,
    SiftReply,
    VerifyResult,
    VerifyTags,
)
from groundkey_protocol.qkd.amplify import FAMILIES, amplify, seed_bits
from groundkey_protocol.qkd.finite_key import (
    DecoyCounts,
    FiniteKey,
    binary_entropy,
    finite_key_length,
)
from groundkey_protocol.qkd.ldpc.rate import frame_bits_for
from groundkey_protocol.qkd.reconcile import (
    RECONCILERS,
    ReconcileBob,
    ReconcileParams,
    Reconciler,
    create_reconciler,
)
from groundkey_protocol.qkd.sifting import (
    X_BASIS,
    Z_BASIS,
    Detections,
    PulseRecord,
    Sifted,
    alice_sift,
    bob_sift,
)
from groundkey_protocol.qkd.verify import poly_hash64, tag_points

__all__ = [
    "BlockOutcome",
    "BlockStats",
    "DistillAlice",
    "DistillBob",
    "DistillConfig",
    "KeyBlock",
    "automatic_frame_bits",
]

_PIPELINE = (
    SiftAnnounce,
    SiftReply,
    EstimateRequest,
    EstimateReply,
    VerifyTags,
    VerifyResult,
    AmplifySeed,
    BlockAbort,
)
_MIN_FRAME_BITS = 64
#: Cascade's frame size when ``frame_bits`` is 0 (the efficiency targets' 10^5 bits)
_CASCADE_FRAME_BITS = 100_000


def automatic_frame_bits(method: str, qber: float) -> int:
    """Key bits per frame with ``frame_bits = 0``: LDPC's frame plan for the agreed
    QBER (:func:`~groundkey_protocol.qkd.ldpc.rate.frame_bits_for`), 10^5 for Cascade."""
    return frame_bits_for(qber) if method.startswith("ldpc") else _CASCADE_FRAME_BITS


@dataclass(frozen=True, slots=True)
class DistillConfig:
    """Per-link distillation settings (both ends must use the same)."""

    eps_sec: float = 1e-9
    eps_cor: float = 1e-15
    frame_bits: int = 0  # 0: from the QBER estimate and the method (see the module doc)
    block_bits: int = 4_000_000  # most X-basis bits per key block (the runner splits passes)
    reconcile: str = "cascade-yan"
    amplify: str = "toeplitz"
    sample_fraction: float = 0.0
    intensities: tuple[float, float, float] = (0.8, 0.1, 0.0)
    probabilities: tuple[float, float, float] = (0.5, 0.25, 0.25)
    max_qber: float = 0.11
    min_qber: float = 0.002  # floor of the QBER handed to reconciliation
    f_ec_estimate: float = 1.10  # only for the early "no key possible" check

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> DistillConfig:
        """Build from a config table (e.g. TOML ``[distill]``); unknown keys raise ValueError."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown distillation settings: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if name in ("intensities", "probabilities"):
                if not isinstance(value, list | tuple) or len(value) != 3:
                    raise ValueError(f"{name} must be a list of 3 numbers")
                kwargs[name] = tuple(float(v) for v in value)
            else:
                kwargs[name] = value
        return cls(**kwargs)

    def __post_init__(self) -> None:
        if self.reconcile not in RECONCILERS:
            raise ValueError(f"unknown reconciliation method {self.reconcile!r}")
        if self.amplify not in FAMILIES:
            raise ValueError(f"unknown hash family {self.amplify!r}")
        if not (0 < self.eps_sec < 1 and 0 < self.eps_cor < 1):
            raise ValueError("eps_sec and eps_cor must be in (0, 1)")
        if self.frame_bits != 0 and self.frame_bits < _MIN_FRAME_BITS:
            raise ValueError(f"frame_bits must be 0 (automatic) or >= {_MIN_FRAME_BITS}")
        if not 0.0 <= self.sample_fraction < 1.0:
            raise ValueError("sample_fraction must be in [0, 1)")
        mu1, mu2, mu3 = self.intensities
        if not (mu1 > mu2 + mu3 and mu2 > mu3 >= 0.0):
            raise ValueError(
                f"intensities must satisfy μ1 > μ2 + μ3, μ2 > μ3 >= 0: {self.intensities}"
            )
        if min(self.probabilities) <= 0.0 or abs(sum(self.probabilities) - 1.0) > 1e-9:
            raise ValueError(f"probabilities must be positive and sum to 1: {self.probabilities}")


@dataclass(slots=True)
class BlockStats:
    """Numbers of one block (no key material)."""

    detections: int = 0
    sifted_bits: int = 0
    x_bits: int = 0
    z_bits: int = 0
    sample_bits: int = 0
    key_input_bits: int = 0
    frames: int = 0
    qber_estimate: float = 0.0
    z_qber: float = 0.0
    disclosed_bits: int = 0
    tag_bits: int = 0
    frames_failed: int = 0
    messages: int = 0
    finite_key: FiniteKey | None = None


class KeyBlock:
    """A final key with its metadata. The key material never appears in repr."""

    __slots__ = ("_material", "block_id", "eps_cor", "eps_sec", "key_bits", "pass_id", "stats")

    def __init__(
        self,
        *,
        block_id: str,
        pass_id: str,
        bits: NDArray[np.uint8],
        eps_sec: float,
        eps_cor: float,
        stats: BlockStats,
    ) -> None:
        self.block_id = block_id
        self.pass_id = pass_id
        self.key_bits = int(bits.size)
        self._material = np.packbits(bits).tobytes()
        self.eps_sec = eps_sec
        self.eps_cor = eps_cor
        self.stats = stats

    @property
    def material(self) -> bytes:
        """The key, packed big-endian bit order (``key_bits`` bits, zero padded)."""
        return self._material

    def bits(self) -> NDArray[np.uint8]:
        return np.unpackbits(np.frombuffer(self._material, dtype=np.uint8))[: self.key_bits]

    def metadata(self) -> dict[str, object]:
        """JSON-ready facts about the block for stores and telemetry (never the key)."""
        st = self.stats
        fk = st.finite_key
        return {
            "block_id": self.block_id,
            "pass_id": self.pass_id,
            "key_bits": self.key_bits,
            "eps_sec": self.eps_sec,
            "eps_cor": self.eps_cor,
            "detections": st.detections,
            "sifted_bits": st.sifted_bits,
            "key_input_bits": st.key_input_bits,
            "frames": st.frames,
            "frames_failed": st.frames_failed,
            "qber": st.qber_estimate,
            "z_qber": st.z_qber,
            "disclosed_bits": st.disclosed_bits,
            "tag_bits": st.tag_bits,
            "phase_error_bound": fk.phi_x if fk else None,
            "single_photon_bits": fk.s_x1 if fk else None,
        }

    def __repr__(self) -> str:
        return (
            f"KeyBlock(block_id={self.block_id!r}, pass_id={self.pass_id!r}, "
            f"key_bits={self.key_bits}, qber={self.stats.qber_estimate:.4f}, "
            f"disclosed_bits={self.stats.disclosed_bits})"
        )


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """How a block ended: ``status`` "key" with ``key``, or "aborted" with ``reason``."""

    status: Literal["key", "aborted"]
    block_id: str
    stats: BlockStats = field(default_factory=BlockStats)
    key: KeyBlock | None = None
    reason: str = ""

    @classmethod
    def aborted(cls, *, block_id: str, reason: str, stats: BlockStats) -> BlockOutcome:
        return cls("aborted", block_id, stats, None, reason)

    @property
    def ok(self) -> bool:
        return self.status == "key"


def _pack(bits: NDArray[np.uint8]) -> bytes:
    return np.packbits(bits).tobytes()


def _unpack(data: bytes, count: int, what: str) -> NDArray[np.uint8]:
    if count < 0 or len(data) != -(-count // 8):
        raise ProtocolError(f"{what}: {len(data)} bytes for {count} bits", protocol="distill")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:count]


class _Role:
    """What both ends share: the block's bookkeeping and the deterministic estimates."""

    role: Literal["alice", "bob"]

    def __init__(
        self,
        config: DistillConfig,
        rng: np.random.Generator,
        *,
        block_id: str | None = None,
        pass_id: str = "",
    ) -> None:
        self.config = config
        self.block_id = block_id or str(uuid.uuid4())
        self.pass_id = pass_id
        self._rng = rng
        self.stats = BlockStats()
        self.outcome: BlockOutcome | None = None
        self._sifted: Sifted | None = None
        self._sample_seed = 0
        self._raw_key_idx = np.zeros(0, dtype=np.int64)
        self._key_idx = np.zeros(0, dtype=np.int64)
        self._frames = np.zeros((0, 0), dtype=np.uint8)
        self._rec: Reconciler | None = None
        self._z_errors: list[int] = []
        self._ok = np.zeros(0, dtype=bool)
        self._key_len = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(block_id={self.block_id!r}, done={self.done})"

    @property
    def done(self) -> bool:
        return self.outcome is not None

    # -- shared computations --------------------------------------------------

    def _split(self, sifted: Sifted, sample_seed: int) -> NDArray[np.bool_]:
        """Sample mask over X events; fixes the raw key positions (the rest of X)."""
        x_idx = np.flatnonzero(sifted.bases == X_BASIS)
        sample = np.random.default_rng([sample_seed, 1]).random(x_idx.size) < (
            self.config.sample_fraction
        )
        self._raw_key_idx = x_idx[~sample]
        self.stats.sifted_bits = int(sifted.bits.size)
        self.stats.x_bits = int(x_idx.size)
        self.stats.z_bits = int((sifted.bases == Z_BASIS).sum())
        self.stats.sample_bits = int(sample.sum())
        return np.asarray(sample)  # frames are cut once the QBER estimate is agreed

    def _cut(self, frame_bits: int) -> None:
        """Cut the raw key into equal frames of about ``frame_bits`` (the tail that does
        not fill a whole frame is left out of the key)."""
        assert self._sifted is not None
        key_idx = self._raw_key_idx
        frames = max(1, math.ceil(key_idx.size / frame_bits))
        size = key_idx.size // frames
        self._key_idx = key_idx[: frames * size]
        self.stats.key_input_bits = int(frames * size)
        self.stats.frames = frames if size else 0
        self._frames = self._sifted.bits[self._key_idx].reshape(frames, size)

    def _key_qber_from_z(self, z_errors: list[int], n_z: NDArray[np.int64]) -> float:
        """The raw key's expected QBER: each intensity's Z-basis error rate, weighted by
        that intensity's share of the key bits. Decoy and vacuum detections err more
        (dark counts are 50 % wrong), so the signal's Z QBER alone underestimates it
        (1.40 % against 1.59 % measured on a Micius-like block)."""
        assert self._sifted is not None
        n_x = np.bincount(self._sifted.intensities[self._raw_key_idx], minlength=3)[:3]
        rates = [e / n if n else 0.5 for e, n in zip(z_errors, n_z, strict=True)]
        total = int(n_x.sum())
        if not total:
            return self.stats.z_qber
        return float(sum(r * int(k) for r, k in zip(rates, n_x, strict=True)) / total)

    def _frame_bits(self, qber: float) -> int:
        """Frame size for the agreed QBER estimate: configured, else per method."""
        if self.config.frame_bits:
            return self.config.frame_bits
        return automatic_frame_bits(self.config.reconcile, qber)

    def _counts(self, z_errors: list[int]) -> DecoyCounts:
        assert self._sifted is not None
        s = self._sifted
        n_x = np.bincount(s.intensities[self._key_idx], minlength=3)[:3]
        n_z = s.counts(Z_BASIS)
        c = self.config
        return DecoyCounts(
            c.intensities,
            c.probabilities,
            (int(n_x[0]), int(n_x[1]), int(n_x[2])),
            (int(n_z[0]), int(n_z[1]), int(n_z[2])),
            (int(z_errors[0]), int(z_errors[1]), int(z_errors[2])),
        )

    def _estimate(self, z_errors: list[int], sample_errors: int) -> str:
        """Fill QBER stats; return an abort reason, or "" when a key may be possible."""
        assert self._sifted is not None
        if len(z_errors) != 3:
            raise ProtocolError("need Z errors for 3 intensities", protocol="distill")
        n_z = self._sifted.counts(Z_BASIS)
        if any(e < 0 or e > n for e, n in zip(z_errors, n_z, strict=True)):
            raise ProtocolError("Z error counts out of range", protocol="distill")
        st = self.stats
        st.z_qber = float(z_errors[0] / n_z[0]) if n_z[0] else 0.5
        st.qber_estimate = (
            float(sample_errors / st.sample_bits)
            if st.sample_bits
            else self._key_qber_from_z(z_errors, n_z)
        )
        self._cut(self._frame_bits(self._reconcile_qber()))
        if st.frames == 0 or st.key_input_bits < _MIN_FRAME_BITS:
            return f"too few key bits ({st.key_input_bits})"
        if st.qber_estimate > self.config.max_qber:
            return f"QBER estimate {st.qber_estimate:.4f} above {self.config.max_qber}"
        q = max(st.qber_estimate, self.config.min_qber)
        leak = self.config.f_ec_estimate * st.key_input_bits * binary_entropy(q)
        fk = finite_key_length(
            self._counts(z_errors),
            leaked_ec_bits=leak + self._tag_bits(),
            eps_sec=self.config.eps_sec,
            eps_cor=self.config.eps_cor,
        )
        if fk.key_bits <= 0:
            return f"no key possible: {fk.reason} (phase error bound {fk.phi_x:.4f})"
        return ""

    def _points(self) -> int:
        frames, size = self._frames.shape
        return tag_points(size, self.config.eps_cor, frames)

    def _tag_bits(self) -> int:
        return 64 * self._points() * max(1, self._frames.shape[0])

    def _reconcile_qber(self) -> float:
        return min(max(self.stats.qber_estimate, self.config.min_qber), 0.49)

    def _reconcile_params(self) -> ReconcileParams:
        return ReconcileParams(
            method=self.config.reconcile,
            qber=self._reconcile_qber(),
            seed=self._sample_seed ^ 0x5EED,
            block_id=self.block_id,
        )

    def _settle(self, ok: NDArray[np.bool_]) -> str:
        """After verification: final key length (``self._key_len``), or an abort reason.

        Frames whose tags differ are dropped. The finite-key length is computed for
        the whole block and then reduced by every dropped bit and by the one public
        ok-bit per frame (removing k bits costs at most k bits of min-entropy), so
        dropping a frame never needs a second estimate.
        """
        assert self._rec is not None
        frames, size = self._frames.shape
        self._ok = ok
        failed = int(frames - ok.sum())
        self.stats.frames_failed = failed
        self.stats.tag_bits = self._tag_bits()
        self.stats.disclosed_bits = int(self._rec.disclosed_bits.sum()) + self.stats.tag_bits
        fk = finite_key_length(
            self._counts(self._z_errors),
            leaked_ec_bits=self.stats.disclosed_bits,
            eps_sec=self.config.eps_sec,
            eps_cor=self.config.eps_cor,
        )
        self.stats.finite_key = fk
        kept_bits = (frames - failed) * size
        self._key_len = min(fk.key_bits - failed * size - frames, kept_bits)
        if failed == frames:
            return f"verification failed in all {frames} frames"
        if fk.key_bits <= 0:
            return f"no key possible: {fk.reason}"
        if self._key_len <= 0:
            return f"no key left after dropping {failed} of {frames} frames"
        return ""

    def _abort(self, reason: str) -> None:
        self.outcome = BlockOutcome.aborted(block_id=self.block_id, reason=reason, stats=self.stats)

    def _key(self, key_bits: int, family: str, seed: NDArray[np.uint8]) -> None:
        assert self._rec is not None
        if isinstance(self._rec, ReconcileBob):
            raw = self._rec.corrected_bits[self._ok].reshape(-1)
        else:
            raw = self._frames[self._ok].reshape(-1)
        bits = amplify(family, raw, seed, key_bits)
        key = KeyBlock(
            block_id=self.block_id,
            pass_id=self.pass_id,
            bits=bits,
            eps_sec=self.config.eps_sec,
            eps_cor=self.config.eps_cor,
            stats=self.stats,
        )
        self.outcome = BlockOutcome("key", self.block_id, self.stats, key)

    def _check(self, message: LinkMessage) -> None:
        if message.block_id != self.block_id:
            raise ProtocolError(f"message for block {message.block_id!r}", protocol="distill")
        if self.done:
            raise ProtocolError(
                f"{type(message).__name__} after the block ended", protocol="distill"
            )
        self.stats.messages += 1

    def _route(self, message: LinkMessage) -> list[LinkMessage] | None:
        """Hand reconciliation messages to the reconciler (None: not one of those)."""
        if isinstance(message, _PIPELINE):
            return None
        if self._rec is None or self._rec.done:
            raise ProtocolError(f"unexpected {type(message).__name__}", protocol="distill")
        return self._rec.receive(message)

    def _sent(self, out: list[LinkMessage]) -> list[LinkMessage]:
        self.stats.messages += len(out)
        return out


class DistillAlice(_Role):
    """The satellite's side: holds the pulse record, answers Bob, picks every seed."""

    role: Literal["alice", "bob"] = "alice"

    def __init__(
        self,
        config: DistillConfig,
        table: PulseRecord,
        rng: np.random.Generator,
        *,
        block_id: str,
        pass_id: str = "",
    ) -> None:
        super().__init__(config, rng, block_id=block_id, pass_id=pass_id)
        self._table = table
        self._tags_sent = False

    def start(self) -> list[LinkMessage]:
        return []

    def receive(self, message: LinkMessage) -> list[LinkMessage]:
        self._check(message)
        routed = self._route(message)
        if routed is not None:
            return self._sent(routed + self._maybe_tags())
        if isinstance(message, BlockAbort):
            self._abort(f"peer aborted: {message.reason}")
            return []
        if isinstance(message, SiftAnnounce):
            return self._sent(self._on_announce(message))
        if isinstance(message, EstimateRequest):
            return self._sent(self._on_estimate(message))
        if isinstance(message, VerifyResult):
            return self._sent(self._on_verify(message))
        raise ProtocolError(f"Alice does not expect {type(message).__name__}", protocol="distill")

    def _on_announce(self, message: SiftAnnounce) -> list[LinkMessage]:
        if self._sifted is not None:
            raise ProtocolError("second sift announcement", protocol="distill")
        if len(message.slots) != 8 * message.count:
            raise ProtocolError("slots do not match count", protocol="distill")
        slots = np.frombuffer(message.slots, dtype="<i8").astype(np.int64)
        if slots.size > 1 and not (np.diff(slots) > 0).all():
            raise ProtocolError("announced slots are not strictly increasing", protocol="distill")
        bob_bases = _unpack(message.bases, message.count, "bases")
        sifted, bases, intensities = alice_sift(slots, bob_bases, self._table)
        self._sifted = sifted
        self.stats.detections = message.count
        self._sample_seed = int(self._rng.integers(0, 2**62))
        self._split(sifted, self._sample_seed)
        return [
            SiftReply(
                block_id=self.block_id,
                count=message.count,
                bases=_pack(bases),
                intensities=intensities.astype(np.uint8).tobytes(),
                sample_seed=self._sample_seed,
            )
        ]

    def _on_estimate(self, message: EstimateRequest) -> list[LinkMessage]:
        s = self._sifted
        if s is None or self._rec is not None or self._z_errors:
            raise ProtocolError("estimate request out of order", protocol="distill")
        z = s.bases == Z_BASIS
        if message.z_count != int(z.sum()) or message.sample_count != self.stats.sample_bits:
            raise ProtocolError("estimate request sizes differ from sifting", protocol="distill")
        bob_z = _unpack(message.z_bits, message.z_count, "z_bits")
        bob_sample = _unpack(message.sample_bits, message.sample_count, "sample_bits")
        z_err = np.bincount(s.intensities[z][bob_z != s.bits[z]], minlength=3)[:3]
        self._z_errors = [int(v) for v in z_err]
        sample_idx = self._sample_positions()
        sample_errors = int((bob_sample != s.bits[sample_idx]).sum())
        reason = self._estimate(self._z_errors, sample_errors)
        reply = EstimateReply(
            block_id=self.block_id,
            z_errors=self._z_errors,
            sample_errors=sample_errors,
            abort_reason=reason,
        )
        if reason:
            self._abort(reason)
            return [reply]
        self._rec = create_reconciler("alice", self._frames, self._reconcile_params())
        return [reply, *self._rec.start(), *self._maybe_tags()]

    def _sample_positions(self) -> NDArray[np.int64]:
        assert self._sifted is not None
        x_idx = np.flatnonzero(self._sifted.bases == X_BASIS)
        sample = np.random.default_rng([self._sample_seed, 1]).random(x_idx.size) < (
            self.config.sample_fraction
        )
        return x_idx[sample]

    def _maybe_tags(self) -> list[LinkMessage]:
        if self._rec is None or not self._rec.done or self._tags_sent:
            return []
        self._tags_sent = True
        points = [int(p) for p in self._rng.integers(0, 2**63, self._points(), dtype=np.int64)]
        points = [p | (int(self._rng.integers(0, 2)) << 63) for p in points]
        tags = poly_hash64(self._frames, points)
        return [
            VerifyTags(block_id=self.block_id, points=points, tags=tags.astype("<u8").tobytes())
        ]

    def _on_verify(self, message: VerifyResult) -> list[LinkMessage]:
        if not self._tags_sent:
            raise ProtocolError("verify result before tags", protocol="distill")
        frames = self._frames.shape[0]
        ok = _unpack(message.ok, message.frames, "ok")
        if message.frames != frames:
            raise ProtocolError("verify result frame count differs", protocol="distill")
        reason = self._settle(ok.astype(bool))
        if reason:
            self._abort(reason)
            return []
        n = int(self._ok.sum()) * self._frames.shape[1]
        key_bits = self._key_len
        family = self.config.amplify
        seed = self._rng.integers(0, 2, seed_bits(family, n, key_bits), dtype=np.uint8)
        self._key(key_bits, family, seed)
        return [
            AmplifySeed(
                block_id=self.block_id,
                family=family,
                seed_bits=int(seed.size),
                seed=_pack(seed),
                key_bits=key_bits,
            )
        ]


class DistillBob(_Role):
    """The ground station's side: holds the detections, drives the exchange."""

    role: Literal["alice", "bob"] = "bob"

    def __init__(
        self,
        config: DistillConfig,
        detections: Detections,
        rng: np.random.Generator,
        *,
        block_id: str | None = None,
        pass_id: str = "",
    ) -> None:
        super().__init__(config, rng, block_id=block_id, pass_id=pass_id)
        self._detections = detections
        self._verified = False

    def start(self) -> list[LinkMessage]:
        d = self._detections
        self.stats.detections = int(d.slots.size)
        return self._sent(
            [
                SiftAnnounce(
                    block_id=self.block_id,
                    count=int(d.slots.size),
                    slots=d.slots.astype("<i8").tobytes(),
                    bases=_pack(d.bases),
                )
            ]
        )

    def receive(self, message: LinkMessage) -> list[LinkMessage]:
        self._check(message)
        routed = self._route(message)
        if routed is not None:
            return self._sent(routed)
        if isinstance(message, BlockAbort):
            self._abort(f"peer aborted: {message.reason}")
            return []
        if isinstance(message, SiftReply):
            return self._sent(self._on_sift(message))
        if isinstance(message, EstimateReply):
            return self._sent(self._on_estimate(message))
        if isinstance(message, VerifyTags):
            return self._sent(self._on_tags(message))
        if isinstance(message, AmplifySeed):
            return self._sent(self._on_seed(message))
        raise ProtocolError(f"Bob does not expect {type(message).__name__}", protocol="distill")

    def _on_sift(self, message: SiftReply) -> list[LinkMessage]:
        if self._sifted is not None:
            raise ProtocolError("second sift reply", protocol="distill")
        count = int(self._detections.slots.size)
        if message.count != count or len(message.intensities) != count:
            raise ProtocolError("sift reply does not match the announcement", protocol="distill")
        bases = _unpack(message.bases, count, "bases")
        intensities = np.frombuffer(message.intensities, dtype=np.uint8)
        if intensities.size and intensities.max() > 2:
            raise ProtocolError("intensity index above 2", protocol="distill")
        self._sifted = bob_sift(self._detections, bases, intensities)
        self._sample_seed = message.sample_seed
        sample = self._split(self._sifted, message.sample_seed)
        s = self._sifted
        z = s.bases == Z_BASIS
        x_idx = np.flatnonzero(s.bases == X_BASIS)
        return [
            EstimateRequest(
                block_id=self.block_id,
                z_count=int(z.sum()),
                z_bits=_pack(s.bits[z]),
                sample_count=int(sample.sum()),
                sample_bits=_pack(s.bits[x_idx[sample]]),
            )
        ]

    def _on_estimate(self, message: EstimateReply) -> list[LinkMessage]:
        if self._sifted is None or self._rec is not None:
            raise ProtocolError("estimate reply out of order", protocol="distill")
        if message.sample_errors < 0 or message.sample_errors > self.stats.sample_bits:
            raise ProtocolError("sample errors out of range", protocol="distill")
        self._z_errors = list(message.z_errors)
        reason = self._estimate(self._z_errors, message.sample_errors)
        if message.abort_reason:
            self._abort(message.abort_reason)
            return []
        if reason:
            raise ProtocolError(f"Alice continues but Bob finds: {reason}", protocol="distill")
        self._rec = create_reconciler("bob", self._frames, self._reconcile_params())
        return self._rec.start()

    def _on_tags(self, message: VerifyTags) -> list[LinkMessage]:
        rec = self._rec
        if rec is None or not rec.done or self._verified:
            raise ProtocolError("verify tags out of order", protocol="distill")
        if len(message.points) != self._points():
            raise ProtocolError("wrong number of hash points", protocol="distill")
        frames = self._frames.shape[0]
        if len(message.tags) != 8 * frames * len(message.points):
            raise ProtocolError("tags do not match frames", protocol="distill")
        assert isinstance(rec, ReconcileBob)
        theirs = np.frombuffer(message.tags, dtype="<u8").reshape(frames, -1)
        mine = poly_hash64(rec.corrected_bits, list(message.points))
        ok = (mine == theirs).all(axis=1)
        self._verified = True
        reply = VerifyResult(block_id=self.block_id, frames=frames, ok=_pack(ok.astype(np.uint8)))
        reason = self._settle(np.asarray(ok, dtype=bool))
        if reason:
            self._abort(reason)
        return [reply]

    def _on_seed(self, message: AmplifySeed) -> list[LinkMessage]:
        if not self._verified:
            raise ProtocolError("amplification seed out of order", protocol="distill")
        n = int(self._ok.sum()) * self._frames.shape[1]
        expected = self._key_len
        if message.key_bits != expected:
            raise ProtocolError(
                f"Alice wants {message.key_bits} key bits, Bob computes {expected}",
                protocol="distill",
            )
        try:
            want = seed_bits(message.family, n, expected)
        except ValueError as exc:
            raise ProtocolError(str(exc), protocol="distill") from None
        if message.seed_bits != want:
            raise ProtocolError("amplification seed has the wrong length", protocol="distill")
        seed = _unpack(message.seed, message.seed_bits, "seed")
        self._key(expected, message.family, seed)
        return []
