"""Native tag recordings: chunked, self-describing, append-only (pure encode/decode).

A recording is a sequence of chunks, each a 32-byte header followed by its payload::

    magic "GKRC" | version u8 (1) | kind u8 | flags u16 | payload_bytes u32 |
    n_items u32 | first_ps i64 | crc32(payload) u32 | reserved u32

Kinds: ``META`` (UTF-8 JSON object; the first chunk of every recording, again after
any restart of the time base), ``TAGS`` (``n`` little-endian int64 picosecond
timestamps, then ``n`` uint8 channels). Writers only append whole chunks, so a crash
leaves at most one truncated chunk at the end, which readers report and skip.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from groundkey_protocol.errors import ProtocolError

PROTOCOL = "gkrec"
MAGIC: Final = b"GKRC"
VERSION: Final = 1
KIND_META: Final = 1
KIND_TAGS: Final = 2
HEADER: Final = struct.Struct("<4sBBHIIqII")
HEADER_SIZE: Final = HEADER.size  # 32
MAX_PAYLOAD: Final = 1 << 30
FORMAT_NAME: Final = "groundkey-tags"


@dataclass(frozen=True, slots=True)
class Chunk:
    kind: int
    meta: dict[str, Any] | None = None
    timestamps_ps: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    channels: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, np.uint8))


def encode_meta(meta: dict[str, Any]) -> bytes:
    body = json.dumps({"format": FORMAT_NAME, "version": VERSION, **meta}).encode()
    return HEADER.pack(MAGIC, VERSION, KIND_META, 0, len(body), 0, 0, zlib.crc32(body), 0) + body


def encode_tags(timestamps_ps: npt.ArrayLike, channels: npt.ArrayLike) -> bytes:
    ts = np.ascontiguousarray(timestamps_ps, dtype="<i8")
    ch = np.ascontiguousarray(channels, dtype=np.uint8)
    if ts.shape != ch.shape or ts.ndim != 1:
        raise ProtocolError("timestamps and channels must be 1-D and equally long")
    body = ts.tobytes() + ch.tobytes()
    first = int(ts[0]) if len(ts) else 0
    crc = zlib.crc32(body)
    return HEADER.pack(MAGIC, VERSION, KIND_TAGS, 0, len(body), len(ts), first, crc, 0) + body


class RecordingReader:
    """Feed bytes, get whole :class:`Chunk` s. ``pending`` is the size of an incomplete
    trailing chunk (a truncated recording ends with ``pending > 0``)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.meta: dict[str, Any] | None = None

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> list[Chunk]:
        self._buf += data
        out: list[Chunk] = []
        pos = 0
        while len(self._buf) - pos >= HEADER_SIZE:
            magic, version, kind, _f, size, n, _first, crc, _r = HEADER.unpack_from(self._buf, pos)
            if magic != MAGIC or version != VERSION or size > MAX_PAYLOAD:
                raise ProtocolError("bad chunk header", protocol=PROTOCOL)
            end = pos + HEADER_SIZE + size
            if end > len(self._buf):
                break
            body = bytes(self._buf[pos + HEADER_SIZE : end])
            if zlib.crc32(body) != crc:
                raise ProtocolError("chunk CRC mismatch", protocol=PROTOCOL)
            out.append(self._chunk(kind, n, body))
            pos = end
        del self._buf[:pos]
        return out

    def _chunk(self, kind: int, n: int, body: bytes) -> Chunk:
        if kind == KIND_META:
            try:
                meta = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ProtocolError("META chunk is not JSON", protocol=PROTOCOL) from None
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
                raise ProtocolError("META chunk is not a groundkey-tags header", protocol=PROTOCOL)
            self.meta = meta
            return Chunk(KIND_META, meta=meta)
        if kind == KIND_TAGS:
            if self.meta is None:
                raise ProtocolError("TAGS chunk before any META chunk", protocol=PROTOCOL)
            if len(body) != 9 * n:
                raise ProtocolError("TAGS chunk size does not match its count", protocol=PROTOCOL)
            ts = np.frombuffer(body, dtype="<i8", count=n).astype(np.int64)
            ch = np.frombuffer(body, dtype=np.uint8, offset=8 * n)
            return Chunk(KIND_TAGS, timestamps_ps=ts, channels=ch)
        raise ProtocolError(f"unknown chunk kind {kind}", protocol=PROTOCOL)


def decode(data: bytes) -> tuple[dict[str, Any], npt.NDArray[np.int64], npt.NDArray[np.uint8], int]:
    """A whole recording -> (first meta, timestamps, channels, truncated trailing bytes)."""
    reader = RecordingReader()
    chunks = reader.feed(data)
    if not chunks or chunks[0].kind != KIND_META or chunks[0].meta is None:
        raise ProtocolError("recording does not start with a META chunk", protocol=PROTOCOL)
    tags = [c for c in chunks if c.kind == KIND_TAGS]
    ts = np.concatenate([c.timestamps_ps for c in tags]) if tags else np.empty(0, np.int64)
    ch = np.concatenate([c.channels for c in tags]) if tags else np.empty(0, np.uint8)
    return chunks[0].meta, ts, ch, reader.pending
