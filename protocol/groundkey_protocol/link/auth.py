"""Message authentication on the classical link (sans-I/O).

Two schemes share one frame layout and one replay policy:

- ``HmacAuth``: HMAC-SHA256 keyed by a pre-shared link key (32-byte tag). Used to
  bootstrap a link before any QKD key exists.
- ``WegmanCarterAuth``: information-theoretic authentication as in AIT's stack.
  The hash is a polynomial over the prime field p = 2^127 - 1 (Poly1305-style
  padding of 15-byte chunks, so distinct messages of up to L chunks collide with
  probability <= L/p for a random hash key). The hash key is recycled; the tag is
  one-time padded, ``tag = (h_k(m) + s_seq) mod p``, with a fresh 16-byte pad
  ``s_seq`` taken from previously distilled key (an :class:`OtpPool`) at the
  position given by the message's sequence number, so both ends consume the
  same pad even when frames are lost or reordered.

Frame: ``b"GA" | version u8 | scheme u8 | seq u64 BE | payload | tag``. The MAC
covers the header, a direction context (``"alice->bob"``, so a frame reflected
back to its sender fails) and the payload. Sequence numbers start at 1 and are
checked against a sliding window of 64 (out-of-order tolerated, duplicates and
anything older rejected); only authentic frames move the window. With
Wegman–Carter a pad is spent by any verification attempt: after a forged frame
with seq n, the genuine frame n is rejected too (the block aborts, as after any
failed MAC).

Errors are typed (:class:`TagMismatchError`, :class:`ReplayError`,
:class:`OtpExhaustedError`, all :class:`LinkAuthError`); none of them carries key
material or tags.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import struct

from groundkey_protocol.errors import ProtocolError

__all__ = [
    "HmacAuth",
    "LinkAuthError",
    "OtpExhaustedError",
    "OtpPool",
    "ReplayError",
    "ReplayWindow",
    "TagMismatchError",
    "WegmanCarterAuth",
    "poly127_hash",
]

MAGIC = b"GA"
VERSION = 1
SCHEME_HMAC_SHA256 = 1
SCHEME_WC_POLY127 = 2
_HEADER = struct.Struct(">2sBBQ")
HEADER_BYTES = _HEADER.size
P127 = (1 << 127) - 1
PAD_BYTES = 16
_CHUNK_BYTES = 15


class LinkAuthError(ProtocolError):
    """A frame that failed authentication; the block it belongs to must be aborted."""

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        self.seq = seq
        super().__init__(message, protocol="link-auth")


class TagMismatchError(LinkAuthError):
    """The tag does not match: the frame was tampered with or forged."""


class ReplayError(LinkAuthError):
    """The sequence number was already seen (or burned) or fell behind the window."""


class OtpExhaustedError(LinkAuthError):
    """No one-time pad left for this sequence number; refill the pool with fresh key."""


class ReplayWindow:
    """Sliding-window replay protection (RFC 4303 style) over sequence numbers >= 1."""

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError("replay window size must be >= 1")
        self.size = size
        self.highest = 0
        self._bitmap = 0  # bit i set: seq (highest - i) seen

    def check(self, seq: int) -> None:
        """Raise ReplayError when ``seq`` may not be accepted."""
        if seq < 1:
            raise ReplayError(f"sequence number {seq} is not positive", seq=seq)
        if seq > self.highest:
            return
        offset = self.highest - seq
        if offset >= self.size:
            raise ReplayError(f"sequence number {seq} is behind the replay window", seq=seq)
        if self._bitmap >> offset & 1:
            raise ReplayError(f"sequence number {seq} replayed", seq=seq)

    def mark(self, seq: int) -> None:
        """Record ``seq`` as used (accepted or burned)."""
        if seq > self.highest:
            shift = seq - self.highest
            mask = (1 << self.size) - 1
            self._bitmap = 1 if shift >= self.size else ((self._bitmap << shift) | 1) & mask
            self.highest = seq
        else:
            self._bitmap |= 1 << (self.highest - seq)


class OtpPool:
    """One-time pads for Wegman–Carter tags: 16 bytes per sequence number.

    Pad for ``seq`` (>= 1) lives at byte ``(seq - 1) * 16`` of the key appended
    so far; :meth:`take` returns it once and overwrites it with zeros.
    """

    def __init__(self, key: bytes = b"") -> None:
        self._buf = bytearray()
        self._base_seq = 1  # seq of the pad at _buf[0:16]
        self._partial = bytearray()
        self._used: set[int] = set()  # consumed pads at or above _base_seq
        self.extend(key)

    def extend(self, key: bytes) -> None:
        """Append fresh key (only whole 16-byte pads become usable)."""
        self._partial += key
        whole = len(self._partial) - len(self._partial) % PAD_BYTES
        self._buf += self._partial[:whole]
        del self._partial[:whole]

    @property
    def last_seq(self) -> int:
        """Highest sequence number that has a pad."""
        return self._base_seq - 1 + len(self._buf) // PAD_BYTES

    def take(self, seq: int) -> bytes:
        if seq < self._base_seq or seq in self._used:
            raise ReplayError(f"pad for sequence number {seq} already consumed", seq=seq)
        if seq > self.last_seq:
            raise OtpExhaustedError(
                f"no one-time pad for sequence number {seq} (pool ends at {self.last_seq})",
                seq=seq,
            )
        start = (seq - self._base_seq) * PAD_BYTES
        pad = bytes(self._buf[start : start + PAD_BYTES])
        self._buf[start : start + PAD_BYTES] = bytes(PAD_BYTES)
        self._used.add(seq)
        return pad

    def discard_through(self, seq: int) -> None:
        """Forget (erase) all pads up to and including ``seq``."""
        n = min(max(0, seq - self._base_seq + 1), len(self._buf) // PAD_BYTES)
        self._buf[: n * PAD_BYTES] = bytes(n * PAD_BYTES)
        del self._buf[: n * PAD_BYTES]
        self._base_seq += n
        self._used = {s for s in self._used if s >= self._base_seq}

    def __repr__(self) -> str:
        return f"OtpPool(pads={len(self._buf) // PAD_BYTES}, next_seq={self._base_seq})"


def poly127_hash(key: bytes, data: bytes) -> int:
    """Polynomial hash of ``data`` over GF(2^127 - 1) keyed by 16 bytes (< 2^127)."""
    k = int.from_bytes(key[:16], "little") & P127
    h = 0
    for start in range(0, len(data), _CHUNK_BYTES):
        chunk = data[start : start + _CHUNK_BYTES]
        c = int.from_bytes(chunk, "little") | (1 << (8 * len(chunk)))
        h = (h + c) * k % P127
    return h


def _direction(local: str, remote: str) -> tuple[bytes, bytes]:
    if not local or not remote or local == remote:
        raise ValueError("local and remote must be distinct, non-empty names")
    send = f"{local}->{remote}".encode()
    recv = f"{remote}->{local}".encode()
    return send, recv


class _Authenticator(abc.ABC):
    """Shared framing, sequence numbering and replay policy."""

    scheme: int
    tag_bytes: int

    def __init__(self, *, local: str, remote: str, window: int = 64) -> None:
        self._send_ctx, self._recv_ctx = _direction(local, remote)
        self._next_seq = 1
        self._window = ReplayWindow(window)

    @abc.abstractmethod
    def _tag(self, seq: int, authed: bytes, *, sending: bool) -> bytes:
        """Tag over ``authed`` (header + context + payload) for ``seq``."""

    def seal(self, payload: bytes) -> bytes:
        """Frame ``payload`` with the next sequence number and its tag."""
        seq = self._next_seq
        header = _HEADER.pack(MAGIC, VERSION, self.scheme, seq)
        tag = self._tag(seq, header + self._send_ctx + payload, sending=True)
        self._next_seq += 1
        return header + payload + tag

    def open(self, frame: bytes) -> bytes:
        """Verify a frame from the remote end and return its payload."""
        if len(frame) < HEADER_BYTES + self.tag_bytes:
            raise ProtocolError(f"auth frame too short ({len(frame)} bytes)", protocol="link-auth")
        magic, version, scheme, seq = _HEADER.unpack_from(frame)
        if magic != MAGIC or version != VERSION:
            raise ProtocolError("not an auth frame (bad magic or version)", protocol="link-auth")
        if scheme != self.scheme:
            raise LinkAuthError(f"frame uses scheme {scheme}, expected {self.scheme}", seq=seq)
        self._window.check(seq)
        payload = frame[HEADER_BYTES : len(frame) - self.tag_bytes]
        tag = frame[len(frame) - self.tag_bytes :]
        expected = self._tag(seq, frame[:HEADER_BYTES] + self._recv_ctx + payload, sending=False)
        if not hmac.compare_digest(expected, tag):
            # The window only moves on authentic frames (a forger cannot push it);
            # a Wegman-Carter pad, once used for a check, is spent for good.
            raise TagMismatchError(f"bad tag on frame {seq}", seq=seq)
        self._window.mark(seq)
        return payload

    @property
    def next_seq(self) -> int:
        return self._next_seq


class HmacAuth(_Authenticator):
    """HMAC-SHA256 with a pre-shared link key (>= 16 bytes)."""

    scheme = SCHEME_HMAC_SHA256
    tag_bytes = 32

    def __init__(self, key: bytes, *, local: str, remote: str, window: int = 64) -> None:
        if len(key) < 16:
            raise ValueError("link key must be at least 16 bytes")
        super().__init__(local=local, remote=remote, window=window)
        self._key = bytes(key)

    def _tag(self, seq: int, authed: bytes, *, sending: bool) -> bytes:
        return hmac.new(self._key, authed, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"HmacAuth({self._send_ctx.decode()!r}, next_seq={self._next_seq})"


class WegmanCarterAuth(_Authenticator):
    """Wegman–Carter: recycled polynomial-hash key, one-time-padded tags.

    ``send_pads`` and ``recv_pads`` are the two directions' pad pools; the other
    end uses the same pools swapped. Each sealed or verified frame consumes the
    pad of its sequence number.
    """

    scheme = SCHEME_WC_POLY127
    tag_bytes = 16

    def __init__(
        self,
        hash_key: bytes,
        *,
        local: str,
        remote: str,
        send_pads: OtpPool,
        recv_pads: OtpPool,
        window: int = 64,
    ) -> None:
        if len(hash_key) != 16:
            raise ValueError("Wegman-Carter hash key must be 16 bytes")
        if int.from_bytes(hash_key, "little") & P127 in (0, 1, P127):
            raise ValueError("degenerate Wegman-Carter hash key")
        super().__init__(local=local, remote=remote, window=window)
        self._hash_key = bytes(hash_key)
        self.send_pads = send_pads
        self.recv_pads = recv_pads

    def _tag(self, seq: int, authed: bytes, *, sending: bool) -> bytes:
        pad = (self.send_pads if sending else self.recv_pads).take(seq)
        s = int.from_bytes(pad, "little") & P127
        return ((poly127_hash(self._hash_key, authed) + s) % P127).to_bytes(16, "little")

    def seal(self, payload: bytes) -> bytes:
        frame = super().seal(payload)
        self.send_pads.discard_through(self._next_seq - 1)
        return frame

    def open(self, frame: bytes) -> bytes:
        try:
            return super().open(frame)
        finally:
            low = self._window.highest - self._window.size
            if low > 0:
                self.recv_pads.discard_through(low)

    def __repr__(self) -> str:
        return f"WegmanCarterAuth({self._send_ctx.decode()!r}, next_seq={self._next_seq})"
