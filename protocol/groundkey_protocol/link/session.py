"""Per-block session framing on the classical link, shared by station and satellite (sans-I/O).

Each ZeroMQ message is two frames ``[route, auth frame]``. The route is the block
ID (ASCII UUID), or ``commit/<block_id>`` for the separate, idempotent commit
session. Every block has its own :class:`~groundkey_protocol.link.auth.HmacAuth`
session under the pre-shared link key, with direction contexts
``"<local>/<block_id>"`` -> ``"<peer>/<block_id>"`` (commit sessions:
``"<local>-commit/<block_id>"``), so a frame never verifies in another block, in
the other direction or twice.

Transcript authentication (Wegman–Carter). A :class:`BlockSession` records every
message it seals or opens (sequence number, length, payload) per direction. When
``BlockOpen`` named pads from earlier passes' key (:data:`PAD_BYTES` of it,
identical at both ends), both sides exchange :class:`BlockAuth` tags before
keeping a key: ``tag = (poly127(k, transcript) + s) mod p`` with the hash key
``k`` = pad bytes 0-15 and a one-time pad ``s`` = bytes 16-31 (station) or 32-47
(satellite). A message altered by someone who knows the link key makes the
transcripts differ, and the tag cannot be forged without the pad, so
authentication no longer rests on the pre-shared key alone. Without earlier key
(first pass) the block is HMAC-only, and says so.
"""

from __future__ import annotations

import hmac
import struct
import uuid

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.auth import P127, HmacAuth, LinkAuthError, poly127_hash
from groundkey_protocol.link.messages import (
    BlockAuth,
    BlockOpen,
    BlockReady,
    LinkMessage,
    decode_message,
    encode_message,
)

__all__ = [
    "PAD_BYTES",
    "BlockAuth",
    "BlockOpen",
    "BlockReady",
    "BlockSession",
    "SessionError",
    "block_key_ids",
    "pad_key_count",
    "route_for",
    "session_names",
]

#: key material one block's transcript authentication consumes
PAD_BYTES = 48
_RECORD = struct.Struct(">QI")
_DOMAIN = b"groundkey-transcript-v1"


class SessionError(ProtocolError):
    """A frame of this block failed (authentication, framing, wrong block): abort the block."""

    def __init__(self, message: str, *, auth_failed: bool = False) -> None:
        self.auth_failed = auth_failed
        super().__init__(message, protocol="link")


def session_names(local: str, peer: str, block_id: str) -> tuple[str, str]:
    """The per-block direction contexts (local, remote) of the auth layer."""
    return f"{local}/{block_id}", f"{peer}/{block_id}"


def route_for(block_id: str, *, commit: bool = False) -> bytes:
    return (f"commit/{block_id}" if commit else block_id).encode()


def block_key_ids(block_id: str, n_keys: int) -> list[str]:
    """Key IDs of a stored block's keys (the station's key store uses the same rule)."""
    base = uuid.UUID(block_id)
    return [str(uuid.uuid5(base, str(i))) for i in range(n_keys)]


def pad_key_count(key_bytes: int) -> int:
    """Stored keys of ``key_bytes`` one block's transcript pads take."""
    return -(-PAD_BYTES // key_bytes)


class BlockSession:
    """One block's authenticated message stream, recording its transcript."""

    def __init__(
        self,
        link_key: bytes,
        *,
        block_id: str,
        local: str,
        peer: str,
        initiator: bool,
        window: int = 64,
        commit: bool = False,
    ) -> None:
        if commit:
            local, peer = f"{local}-commit", f"{peer}-commit"
        me, them = session_names(local, peer, block_id)
        self.block_id = block_id
        self.initiator = initiator
        self.route = route_for(block_id, commit=commit)
        self._auth = HmacAuth(link_key, local=me, remote=them, window=window)
        self._sent = bytearray()
        self._received = bytearray()
        self.sent = 0
        self.received = 0

    def __repr__(self) -> str:
        return f"BlockSession({self.block_id!r}, sent={self.sent}, received={self.received})"

    def seal(self, message: LinkMessage) -> list[bytes]:
        """The ZeroMQ frames carrying ``message``."""
        if message.block_id != self.block_id:
            raise ValueError("message belongs to another block")
        payload = encode_message(message)
        seq = self._auth.next_seq
        frame = self._auth.seal(payload)
        if not isinstance(message, BlockAuth):
            self._sent += _RECORD.pack(seq, len(payload)) + payload
        self.sent += 1
        return [self.route, frame]

    def open(self, frames: list[bytes]) -> LinkMessage:
        """Verify and decode one incoming ZeroMQ message; SessionError on any failure."""
        if len(frames) != 2 or frames[0] != self.route:
            raise SessionError(f"block {self.block_id}: malformed link message")
        frame = frames[1]
        try:
            payload = self._auth.open(frame)
            message = decode_message(payload)
        except LinkAuthError as exc:
            raise SessionError(
                f"block {self.block_id}: authentication failed: {exc}", auth_failed=True
            ) from None
        except ProtocolError as exc:
            raise SessionError(f"block {self.block_id}: bad frame: {exc}") from None
        if message.block_id != self.block_id:
            raise SessionError(f"block {self.block_id}: message for another block")
        if not isinstance(message, BlockAuth):
            seq = struct.unpack_from(">Q", frame, 4)[0]
            self._received += _RECORD.pack(seq, len(payload)) + payload
        self.received += 1
        return message

    # -- Wegman-Carter transcript tags ---------------------------------------------------

    def _transcript(self) -> bytes:
        first, second = (
            (self._sent, self._received) if self.initiator else (self._received, self._sent)
        )
        block = self.block_id.encode()
        head = _DOMAIN + struct.pack(">H", len(block)) + block + struct.pack(">Q", len(first))
        return head + bytes(first) + bytes(second)

    def _tag(self, pads: bytes, *, by_initiator: bool) -> bytes:
        if len(pads) != PAD_BYTES:
            raise ValueError(f"transcript pads must be {PAD_BYTES} bytes")
        pad = pads[16:32] if by_initiator else pads[32:48]
        s = int.from_bytes(pad, "little") & P127
        h = poly127_hash(pads[:16], self._transcript())
        return ((h + s) % P127).to_bytes(16, "little")

    def transcript_tag(self, pads: bytes) -> BlockAuth:
        """Our one-time-padded tag over the whole transcript so far (both directions)."""
        return BlockAuth(block_id=self.block_id, tag=self._tag(pads, by_initiator=self.initiator))

    def check_transcript_tag(self, pads: bytes, message: BlockAuth) -> None:
        """SessionError unless the peer's tag matches our transcript."""
        expected = self._tag(pads, by_initiator=not self.initiator)
        if not hmac.compare_digest(expected, message.tag):
            raise SessionError(
                f"block {self.block_id}: transcript authentication failed", auth_failed=True
            )
