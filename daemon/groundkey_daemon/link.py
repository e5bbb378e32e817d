"""The classical link to the satellite: authenticated protocol/link messages over ZeroMQ.

Wire format (the simulated satellite, ``groundkey_sim.satellite``, speaks the same):
the station connects a DEALER socket to the satellite's ROUTER; every ZeroMQ
message is two frames ``[block_id (ASCII UUID), auth frame]``, and the auth
frame (:mod:`groundkey_protocol.link.auth`) carries exactly one
:func:`~groundkey_protocol.link.messages.encode_message` payload.

The framing is shared with the satellite (:mod:`groundkey_protocol.link.session`).
Every key block has its own authenticated session: HMAC-SHA256 under the
pre-shared link key with direction contexts ``"<local>/<block_id>"`` ->
``"<peer>/<block_id>"``, sequence numbers from 1 and a replay window. So a frame
of one block never verifies in another, a reflected frame never verifies at its
sender, and a repeated or older frame is a :class:`ReplayError`. A block starts
with :class:`BlockOpen` (the station's distillation parameters) answered by
:class:`BlockReady`. Keys are kept by a two-phase commit: the satellite holds
Alice's key until the station, having stored Bob's key durably, sends a commit
on a separate per-block session (route ``commit/<block_id>``), which the
station repeats after a restart until it is confirmed. Any frame that fails
authentication aborts the block at the receiving end (which says so with a
sealed ``BlockAbort`` when it still can), is logged, and never yields a key.
Where earlier passes left key, both ends also exchange Wegman–Carter tags over the
block's whole transcript before either keeps its key (see the session module).

:class:`LinkSession` is the sans-I/O part; :class:`ZmqLinkClient` is a blocking
client for worker processes (the distillation runner), so the event loop never
waits on the link.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import zmq

from groundkey_daemon.errors import UserError
from groundkey_protocol.link.messages import BlockAbort, BlockAuth, LinkMessage
from groundkey_protocol.link.session import (
    BlockOpen,
    BlockReady,
    BlockSession,
    SessionError,
    session_names,
)

__all__ = [
    "BlockAuth",
    "BlockOpen",
    "BlockReady",
    "LinkAborted",
    "LinkError",
    "LinkSession",
    "LinkTimeout",
    "ZmqLinkClient",
    "session_names",
]

log = logging.getLogger(__name__)

LINGER_MS = 200


class LinkError(Exception):
    """The link failed for this block (no key results from it)."""


class LinkTimeout(LinkError, TimeoutError):
    """No answer from the satellite in time."""


class LinkAborted(LinkError):
    """Authentication failed or the peer aborted: the block ends without a key."""


class LinkSession(BlockSession):
    """One block's authenticated message stream (sans-I/O); the station initiates."""

    def __init__(
        self,
        link_key: bytes,
        *,
        block_id: str,
        local: str,
        peer: str,
        window: int = 64,
        commit: bool = False,
    ) -> None:
        super().__init__(
            link_key,
            block_id=block_id,
            local=local,
            peer=peer,
            initiator=True,
            window=window,
            commit=commit,
        )

    def open(self, frames: list[bytes]) -> LinkMessage:
        """Verify and decode one incoming ZeroMQ message; LinkAborted on any failure."""
        try:
            return super().open(frames)
        except SessionError as exc:
            raise LinkAborted(str(exc)) from None

    def check_transcript_tag(self, pads: bytes, message: BlockAuth) -> None:
        try:
            super().check_transcript_tag(pads, message)
        except SessionError as exc:
            raise LinkAborted(str(exc)) from None


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What a worker needs to reach the satellite (picklable; the key never in repr)."""

    endpoint: str
    link_key: bytes
    local: str = "ground"
    peer: str = "satellite"
    timeout_s: float = 30.0
    window: int = 64

    def __repr__(self) -> str:
        return f"LinkSettings({self.endpoint!r}, local={self.local!r}, peer={self.peer!r})"


class ZmqLinkClient:
    """Blocking DEALER client for one or more blocks (used inside worker processes)."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None

    def __repr__(self) -> str:
        return f"ZmqLinkClient({self.settings.endpoint!r})"

    def __enter__(self) -> ZmqLinkClient:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._sock is not None:
            return
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(self.settings.endpoint)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def session(self, block_id: str) -> LinkSession:
        s = self.settings
        return LinkSession(
            s.link_key, block_id=block_id, local=s.local, peer=s.peer, window=s.window
        )

    def send(self, session: LinkSession, message: LinkMessage) -> None:
        assert self._sock is not None, "link client not open"
        frames = session.seal(message)
        if not self._sock.poll(int(self.settings.timeout_s * 1000), zmq.POLLOUT):
            raise LinkTimeout(f"satellite at {self.settings.endpoint} not reachable")
        self._sock.send_multipart(frames)

    def receive(self, session: LinkSession, timeout_s: float | None = None) -> LinkMessage:
        """The next message of ``session``; frames of other (stale) blocks are skipped."""
        assert self._sock is not None, "link client not open"
        wait_s = self.settings.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait_s
        while True:
            left_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            if not self._sock.poll(left_ms, zmq.POLLIN):
                raise LinkTimeout(f"no answer from the satellite within {wait_s:g} s")
            frames = self._sock.recv_multipart()
            if frames and frames[0] != session.route:
                log.warning("dropping a link message for another block")
                continue
            return session.open(frames)

    def commit(self, block_id: str) -> None:
        """Second phase: the station stored the block's key; the satellite keeps its key.

        Its own session (``"<local>-commit/<block_id>"``, route ``commit/<block_id>``),
        idempotent, so it can be repeated after a restart. LinkError unless confirmed.
        """
        s = self.settings
        session = LinkSession(
            s.link_key, block_id=block_id, local=s.local, peer=s.peer, commit=True
        )
        self.send(session, BlockReady(block_id=block_id, detail="commit"))
        reply = self.receive(session)
        if not isinstance(reply, BlockReady) or reply.detail != "committed":
            raise LinkError(f"block {block_id}: commit refused: {reply!r}")

    def abort(self, session: LinkSession, reason: str) -> None:
        """Tell the satellite the block is over (best effort)."""
        try:
            self.send(session, BlockAbort(block_id=session.block_id, reason=reason))
        except (LinkError, zmq.ZMQError) as exc:
            log.debug("could not send the abort: %s", exc)


def encode_params(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def decode_params(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise LinkAborted("block parameters are not JSON") from None
    if not isinstance(value, dict):
        raise LinkAborted("block parameters are not an object")
    return value


def load_link_key(name: str) -> bytes:
    """The pre-shared link key (>= 16 bytes) from a secret file (hex or raw)."""
    from groundkey_daemon.service_config import read_secret

    raw = read_secret(name)
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < 16:
        raise UserError(f"link key {name}: must be at least 16 bytes")
    return key


def commit_block(settings: LinkSettings, block_id: str) -> None:
    """Blocking commit of one block (run it in a thread); LinkError unless confirmed."""
    with ZmqLinkClient(settings) as client:
        client.commit(block_id)
