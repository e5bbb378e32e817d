"""Sans-I/O satellite peer: authenticated frames in, authenticated frames out.

Wire format (the station's ``groundkey_daemon.link`` speaks the same): each
ZeroMQ message is ``[block_id, auth frame]``; the auth frame
(:mod:`groundkey_protocol.link.auth`, HMAC-SHA256 under the pre-shared link key)
carries one encoded link message. Each block has its own session with direction
contexts ``"<peer>/<block_id>"`` -> ``"<local>/<block_id>"``. A block starts with
``BlockOpen`` (the station's distillation settings) and the satellite answers
``BlockReady``. Alice's key is kept only when the station commits the block (it
stored Bob's key): ``BlockReady(detail="commit")`` on the separate, idempotent
commit session (route ``commit/<block_id>``, contexts ``"<peer>-commit/<block_id>"``),
answered ``BlockReady(detail="committed")``.

A frame that fails authentication (tampered, forged, replayed, reflected) aborts
its block: the satellite logs it, answers a sealed ``BlockAbort`` and forgets the
block's key. A ``BlockOpen`` for a block that already ran is a replay and is
ignored.
"""

from __future__ import annotations

import collections
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.auth import HmacAuth, LinkAuthError
from groundkey_protocol.link.messages import (
    BlockAbort,
    LinkMessage,
    decode_message,
    encode_message,
    message_types,
    register_message,
)
from groundkey_protocol.qkd.distill import DistillAlice, DistillConfig, KeyBlock
from groundkey_sim.downlink.source import Alice

__all__ = ["AliceRecord", "BlockOpen", "BlockReady", "SatellitePeer"]

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


class _BlockOpen(LinkMessage, frozen=True, kw_only=True, tag="block.open"):
    pass_id: str
    params: str


class _BlockReady(LinkMessage, frozen=True, kw_only=True, tag="block.ready"):
    detail: str = ""


M = TypeVar("M", bound=type[LinkMessage])


def _registered(cls: M) -> M:
    tag = cls.__struct_config__.tag
    for known in message_types():
        if known.__struct_config__.tag == tag:
            return cast(M, known)
    return register_message(cls)


BlockOpen = _registered(_BlockOpen)
BlockReady = _registered(_BlockReady)


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
    auth: HmacAuth
    alice: DistillAlice


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
    ) -> None:
        self._key = bytes(link_key)
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

    def _auth(self, block_id: str) -> HmacAuth:
        return HmacAuth(
            self._key, local=f"{self.local}/{block_id}", remote=f"{self.peer}/{block_id}"
        )

    def _finish(self, block_id: str, how: str) -> None:
        self._sessions.pop(block_id, None)
        self._finished[block_id] = how
        while len(self._finished) > 10_000:
            self._finished.popitem(last=False)

    @staticmethod
    def _frames(block_id: str, auth: HmacAuth, messages: list[LinkMessage]) -> list[list[bytes]]:
        return [[block_id.encode(), auth.seal(encode_message(m))] for m in messages]

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
            message = decode_message(session.auth.open(frames[1]))
            if message.block_id != block_id:
                raise ProtocolError("message for another block", protocol="link")
        except (LinkAuthError, ProtocolError) as exc:
            auth_failed = isinstance(exc, LinkAuthError)
            reason = "authentication failed" if auth_failed else "bad frame"
            log.warning("block %s: %s (%s): block aborted", block_id, reason, exc)
            return self._abort(block_id, session, reason)
        try:
            out = session.alice.receive(message)
        except ProtocolError as exc:
            log.warning("block %s: protocol error (%s): block aborted", block_id, exc)
            return self._abort(block_id, session, "protocol error")
        replies = self._frames(block_id, session.auth, out)
        outcome = session.alice.outcome
        if outcome is not None:
            if outcome.ok and outcome.key is not None:
                self._awaiting[block_id] = outcome.key  # kept only on the station's commit
                while len(self._awaiting) > self.max_sessions:
                    self._awaiting.popitem(last=False)
                self._finish(block_id, "awaiting-commit")
            else:
                self.aborted += 1
                log.info("block %s ended without a key: %s", block_id, outcome.reason)
                self._finish(block_id, "aborted")
        return replies

    def _open(self, block_id: str, frame: bytes) -> list[list[bytes]]:
        auth = self._auth(block_id)
        try:
            message = decode_message(auth.open(frame))
        except (LinkAuthError, ProtocolError) as exc:
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
        if len(self._sessions) >= self.max_sessions:
            old, _ = self._sessions.popitem(last=False)
            self._finish(old, "evicted")
        alice = DistillAlice(
            config, self.record, self._rng, block_id=block_id, pass_id=message.pass_id
        )
        self._sessions[block_id] = _Session(auth, alice)
        log.info("block %s of pass %s opened", block_id, message.pass_id)
        return self._frames(block_id, auth, [BlockReady(block_id=block_id), *alice.start()])

    def _abort(self, block_id: str, session: _Session, reason: str) -> list[list[bytes]]:
        self.aborted += 1
        self._awaiting.pop(block_id, None)
        self._finish(block_id, "aborted")
        return self._frames(block_id, session.auth, [BlockAbort(block_id=block_id, reason=reason)])

    def _commit(self, block_id: str, frame: bytes) -> list[list[bytes]]:
        """Second phase: the station stored its key; keep ours (idempotent)."""
        auth = HmacAuth(
            self._key,
            local=f"{self.local}-commit/{block_id}",
            remote=f"{self.peer}-commit/{block_id}",
        )
        try:
            message = decode_message(auth.open(frame))
        except (LinkAuthError, ProtocolError) as exc:
            self.rejected += 1
            log.warning("block %s: commit rejected: authentication failed (%s)", block_id, exc)
            return []
        if not isinstance(message, BlockReady) or message.detail != "commit":
            self.rejected += 1
            return []
        route = f"commit/{block_id}".encode()
        if block_id in self._committed:
            reply: LinkMessage = BlockReady(block_id=block_id, detail="committed")
        elif block_id in self._awaiting:
            key = self._awaiting.pop(block_id)
            self._committed[block_id] = True
            while len(self._committed) > 10_000:
                self._committed.popitem(last=False)
            self.keys += 1
            log.info("block %s: key of %d bits committed", block_id, key.key_bits)
            if self.on_key is not None:
                self.on_key(key)
            reply = BlockReady(block_id=block_id, detail="committed")
        else:
            reply = BlockAbort(block_id=block_id, reason="no key awaiting commit")
        return [[route, auth.seal(encode_message(reply))]]
