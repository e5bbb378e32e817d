"""Errors raised by pure protocol code."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Bytes or messages that do not follow the protocol.

    Every parser in :mod:`groundkey_protocol` raises this, and nothing else, on bad
    input. ``protocol`` names the codec, ``data`` holds (a prefix of) the offending
    bytes when there are any; key material is never put here.
    """

    def __init__(self, message: str, *, protocol: str = "", data: bytes = b"") -> None:
        self.protocol = protocol
        self.data = bytes(data[:64])
        prefix = f"{protocol}: " if protocol else ""
        super().__init__(prefix + message)
