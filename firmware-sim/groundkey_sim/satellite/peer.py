"""Sans-I/O satellite peer: authenticated frames in, authenticated frames out.

The framing is :mod:`groundkey_protocol.link.session`, shared with the station's
``groundkey_daemon.link``: each ZeroMQ message is ``[route, auth frame]``, every
block has its own HMAC session (``"<peer>/<block_id>"`` -> ``"<local>/<block_id>"``).
A block starts with ``BlockOpen`` (the station's distillation settings, the
reconciliation method included) and the satellite answers ``BlockReady``.

When ``BlockOpen`` names pads from earlier passes' key (the keys directory holds
the same committed keys as the station's store; :class:`PadSource`), Alice's key
is kept only after the station's Wegman–Carter tag over the whole transcript
matches; the satellite then answers with its own tag. Pads are used once (listed
in ``wc-used``); a block naming unknown or used pads is refused. Without pads the
block is HMAC-only (logged).

Alice's key is kept only when the station commits the block (it stored Bob's
key): ``BlockReady(detail="commit")`` on the separate, idempotent commit session
(route ``commit/<block_id>``), answered ``BlockReady(detail="committed")``.

A frame that fails authentication (tampered, forged, replayed, reflected), or a
transcript tag that does not match, aborts its block: the satellite logs it,
answers a sealed ``BlockAbort`` and forgets the block's key. A ``BlockOpen`` for
a block that already ran is a replay and is ignored.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import BlockAbort, BlockAuth, LinkMessage
from groundkey_protocol.link.session import (
    PAD_BYTES,
    BlockOpen,
    BlockReady,
    BlockSession,
    SessionError,
    block_key_ids,
)
from groundkey_protocol.qkd.distill import DistillAlice, DistillConfig, KeyBlock
from groundkey_sim.downlink.source import Alice

__all__ = ["AliceRecord", "BlockOpen", "BlockReady", "PadSource", "SatellitePeer"]

log = logging.getLogger(__name__)

_PARAMS = (
    "eps_sec",
    "eps_cor",
    "frame_bits",
    "reconcile",
    "amplify",
    "sample_fraction",
    "max_qber",
)


class PadSource:
    """Earlier committed keys (identical to the station's store) for transcript pads.

    Keys are looked up by the station's key IDs; a key used as a pad is recorded and
    never used again (in ``used_file`` too when given, so across restarts).
    """

    def __init__(
        self,
        used_file: str | os.PathLike[str] | None = None,
        *,
        keys_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._blocks: dict[str, bytes] = {}
        self._used: set[str] = set()
        self.used_file = Path(used_file) if used_file is not None else None
        self.keys_dir = Path(keys_dir) if keys_dir is not None else None
        self._loaded = False

    @classmethod
    def for_directory(cls, keys_dir: str | os.PathLike[str]) -> PadSource:
        """Pads from a keys directory's committed keys, used pads listed in ``wc-used``."""
        return cls(Path(keys_dir) / "wc-used", keys_dir=keys_dir)

    def __repr__(self) -> str:
        return f"PadSource(blocks={len(self._blocks)}, used={len(self._used)})"

    def add(self, block_id: str, material: bytes) -> None:
        self._blocks[block_id] = bytes(material)

    def load_dir(self, path: str | os.PathLike[str]) -> int:
        """Add the committed keys of a keys directory (``<block_id>.key``); returns how many."""
        n = 0
        for file in sorted(Path(path).glob("*.key")):
            try:
                block_id = str(uuid.UUID(file.stem))
            except ValueError:
                continue
            if block_id not in self._blocks:
                self.add(block_id, file.read_bytes())
            n += 1
        return n

    def _load_used(self) -> None:
        if self._loaded or self.used_file is None:
            return
        self._loaded = True
        try:
            self._used |= set(self.used_file.read_text(encoding="ascii").split())
        except FileNotFoundError:
            pass

    def take(
        self, key_ids: list[str], key_bytes: int, extra: Mapping[str, bytes] | None = None
    ) -> bytes | None:
        """The pads' material, consumed; None if unknown or already used.

        ``extra``: keys the station stored but has not committed here yet (block ID ->
        material); it commits them, so it may already use them.
        """
        self._load_used()
        if self.keys_dir is not None:
            self.load_dir(self.keys_dir)
        if key_bytes < 1 or not key_ids or len(set(key_ids)) != len(key_ids):
            return None
        if any(k in self._used for k in key_ids):
            return None
        index: dict[str, bytes] = {}
        for block_id, material in {**(extra or {}), **self._blocks}.items():
            ids = block_key_ids(block_id, len(material) // key_bytes)
            for i, kid in enumerate(ids):
                if kid in key_ids:
                    index[kid] = material[i * key_bytes : (i + 1) * key_bytes]
        if len(index) != len(key_ids):
            return None
        self._used |= set(key_ids)
        if self.used_file is not None:
            self.used_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self.used_file.open("a", encoding="ascii") as f:
                f.write("".join(k + "\n" for k in key_ids))
                f.flush()
                os.fsync(f.fileno())
        material = b"".join(index[k] for k in key_ids)
        return material[:PAD_BYTES] if len(material) >= PAD_BYTES else None


class AliceRecord:
    """:class:`~groundkey_protocol.qkd.sifting.PulseRecord` over the downlink's Alice."""

    def __init__(self, alice: Alice) -> None:
        self._alice = alice

    def __repr__(self) -> str:
        return "AliceRecord(<seeded>)"

    def lookup(
        self, slots: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        bit, basis, intensity = self._alice.values(slots)
        return basis, bit, intensity


@dataclass(slots=True)
class _Session:
    auth: BlockSession
    alice: DistillAlice
    pads: bytes | None = field(default=None, repr=False)
    #: Alice's key, waiting for the station's transcript tag
    pending: KeyBlock | None = field(default=None, repr=False)


class SatellitePeer:
    """Alice's roles for any number of concurrent blocks."""

    def __init__(
        self,
        link_key: bytes,
        record: AliceRecord,
        *,
        local: str = "satellite",
        peer: str = "ground",
        rng: np.random.Generator | None = None,
        on_key: Callable[[KeyBlock], None] | None = None,
        max_sessions: int = 64,
        pads: PadSource | None = None,
    ) -> None:
        self._key = bytes(link_key)
        keys_dir = getattr(on_key, "path", None)  # a KeyDirectory: its keys are the pads
        if pads is None:
            pads = PadSource.for_directory(keys_dir) if isinstance(keys_dir, Path) else PadSource()
        self.pads = pads
        self.record = record
        self.local = local
        self.peer = peer
        self._rng = rng if rng is not None else np.random.default_rng()
        self.on_key = on_key
        self.max_sessions = max_sessions
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._finished: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._awaiting: collections.OrderedDict[str, KeyBlock] = collections.OrderedDict()
        self._committed: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self.rejected = 0
        self.aborted = 0
        self.keys = 0

    def __repr__(self) -> str:
        return f"SatellitePeer(sessions={len(self._sessions)}, keys={self.keys})"

    def _auth(self, block_id: str, *, commit: bool = False) -> BlockSession:
        return BlockSession(
            self._key,
            block_id=block_id,
            local=self.local,
            peer=self.peer,
            initiator=False,
            commit=commit,
        )

    def _finish(self, block_id: str, how: str) -> None:
        self._sessions.pop(block_id, None)
        self._finished[block_id] = how
        while len(self._finished) > 10_000:
            self._finished.popitem(last=False)

    @staticmethod
    def _frames(
        block_id: str, auth: BlockSession, messages: list[LinkMessage]
    ) -> list[list[bytes]]:
        return [auth.seal(m) for m in messages]

    def handle(self, frames: list[bytes]) -> list[list[bytes]]:
        """One incoming ZeroMQ message (without routing identity) -> replies."""
        if len(frames) != 2:
            self.rejected += 1
            log.warning("rejected a malformed link message (%d frames)", len(frames))
            return []
        route = frames[0]
        commit = route.startswith(b"commit/")
        try:
            block_id = str(uuid.UUID(route.removeprefix(b"commit/").decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            self.rejected += 1
            log.warning("rejected a link message with a bad block id")
            return []
        if commit:
            return self._commit(block_id, frames[1])
        if block_id in self._finished:
            self.rejected += 1
            log.warning("block %s: message after the block ended (replay?) ignored", block_id)
            return []
        session = self._sessions.get(block_id)
        if session is None:
            return self._open(block_id, frames[1])
        try:
            message = session.auth.open(frames)
        except SessionError as exc:
            reason = "authentication failed" if exc.auth_failed else "bad frame"
            log.warning("block %s: %s (%s): block aborted", block_id, reason, exc)
            return self._abort(block_id, session, reason)
        if session.pending is not None:
            return self._transcript(block_id, session, message)
        try:
            out = session.alice.receive(message)
        except ProtocolError as exc:
            log.warning("block %s: protocol error (%s): block aborted", block_id, exc)
            return self._abort(block_id, session, "protocol error")
        replies = self._frames(block_id, session.auth, out)
        outcome = session.alice.outcome
        if outcome is not None:
            if outcome.ok and outcome.key is not None and session.pads is not None:
                session.pending = outcome.key  # kept only after the transcript tags match
            elif outcome.ok and outcome.key is not None:
                self._await_commit(block_id, outcome.key)
            else:
                self.aborted += 1
                log.info("block %s ended without a key: %s", block_id, outcome.reason)
                self._finish(block_id, "aborted")
        return replies

    def _await_commit(self, block_id: str, key: KeyBlock) -> None:
        self._awaiting[block_id] = key  # kept only on the station's commit
        while len(self._awaiting) > self.max_sessions:
            self._awaiting.popitem(last=False)
        self._finish(block_id, "awaiting-commit")

    def _transcript(
        self, block_id: str, session: _Session, message: LinkMessage
    ) -> list[list[bytes]]:
        """The station's Wegman-Carter tag over the transcript; ours in reply if it matches."""
        assert session.pads is not None
        assert session.pending is not None
        if not isinstance(message, BlockAuth):
            log.warning("block %s: %s instead of the transcript tag", block_id, type(message))
            return self._abort(block_id, session, "protocol error")
        try:
            session.auth.check_transcript_tag(session.pads, message)
        except SessionError as exc:
            log.warning("block %s: %s: block aborted", block_id, exc)
            return self._abort(block_id, session, "authentication failed")
        reply = self._frames(block_id, session.auth, [session.auth.transcript_tag(session.pads)])
        self._await_commit(block_id, session.pending)
        return reply

    def _open(self, block_id: str, frame: bytes) -> list[list[bytes]]:
        auth = self._auth(block_id)
        try:
            message = auth.open([auth.route, frame])
        except SessionError as exc:
            self.rejected += 1
            log.warning("block %s: unauthenticated block opening rejected (%s)", block_id, exc)
            return []
        if not isinstance(message, BlockOpen) or message.block_id != block_id:
            self.rejected += 1
            log.warning(
                "block %s: first message is %s, not BlockOpen", block_id, type(message).__name__
            )
            return []
        try:
            raw = json.loads(message.params)
            params: dict[str, Any] = {k: raw[k] for k in _PARAMS if k in raw}
            config = DistillConfig(**params)
        except (ValueError, TypeError) as exc:
            reply = BlockAbort(block_id=block_id, reason=f"bad parameters: {exc}")
            self._finish(block_id, "refused")
            return self._frames(block_id, auth, [reply])
        pads: bytes | None = None
        if message.pad_keys:
            awaiting = {b: k.material[: k.key_bits // 8] for b, k in self._awaiting.items()}
            pads = self.pads.take(list(message.pad_keys), message.pad_key_bytes, awaiting)
            if pads is None:
                log.warning("block %s: transcript pads unknown or already used", block_id)
                reply = BlockAbort(block_id=block_id, reason="transcript pads unavailable")
                self._finish(block_id, "refused")
                return self._frames(block_id, auth, [reply])
        else:
            log.info("block %s: no earlier key named: HMAC-only authentication", block_id)
        if len(self._sessions) >= self.max_sessions:
            old, _ = self._sessions.popitem(last=False)
            self._finish(old, "evicted")
        alice = DistillAlice(
            config, self.record, self._rng, block_id=block_id, pass_id=message.pass_id
        )
        self._sessions[block_id] = _Session(auth, alice, pads)
        log.info("block %s of pass %s opened", block_id, message.pass_id)
        return self._frames(block_id, auth, [BlockReady(block_id=block_id), *alice.start()])

    def _abort(self, block_id: str, session: _Session, reason: str) -> list[list[bytes]]:
        self.aborted += 1
        self._awaiting.pop(block_id, None)
        self._finish(block_id, "aborted")
        return self._frames(block_id, session.auth, [BlockAbort(block_id=block_id, reason=reason)])

    def _commit(self, block_id: str, frame: bytes) -> list[list[bytes]]:
        """Second phase: the station stored its key; keep ours (idempotent)."""
        auth = self._auth(block_id, commit=True)
        try:
            message = auth.open([auth.route, frame])
        except SessionError as exc:
            self.rejected += 1
            log.warning("block %s: commit rejected: authentication failed (%s)", block_id, exc)
            return []
        if not isinstance(message, BlockReady) or message.detail != "commit":
            self.rejected += 1
            return []
        if block_id in self._committed:
            reply: LinkMessage = BlockReady(block_id=block_id, detail="committed")
        elif block_id in self._awaiting:
            key = self._awaiting.pop(block_id)
            self._committed[block_id] = True
            while len(self._committed) > 10_000:
                self._committed.popitem(last=False)
            self.keys += 1
            self.pads.add(block_id, key.material[: key.key_bits // 8])
            log.info("block %s: key of %d bits committed", block_id, key.key_bits)
            if self.on_key is not None:
                self.on_key(key)
            reply = BlockReady(block_id=block_id, detail="committed")
        else:
            reply = BlockAbort(block_id=block_id, reason="no key awaiting commit")
        return [auth.seal(reply)]
