"""Byte transports for device drivers: serial (incl. ptys) and TCP, asyncio-native.

URLs::

    serial:///dev/ttyUSB0?baud=9600     a serial port, pty or symlink to one
    /dev/ttyUSB0                        the same, bare path (baud from options)
    tcp://127.0.0.1:4533                a TCP socket

Reads never return ``b""``: end of stream (unplug, pty closed, TCP drop) raises
:class:`~groundkey_drivers.errors.DeviceDisconnected`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import urllib.parse
from typing import Any

from groundkey_drivers.errors import DeviceDisconnected, DeviceError, TransportURLError

_READ_LIMIT = 64 * 1024


class Transport(abc.ABC):
    """A byte stream to one device. Constructors do no I/O."""

    url: str

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """True while connected and no end of stream has been seen."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; DeviceDisconnected if the endpoint is not there."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect (idempotent)."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def read(self, max_bytes: int = 4096) -> bytes:
        """At least one byte, at most ``max_bytes``."""

    @abc.abstractmethod
    async def read_exactly(self, n: int) -> bytes: ...

    @abc.abstractmethod
    async def read_until(self, sep: bytes) -> bytes:
        """Bytes up to and including ``sep``."""

    def discard_input(self) -> bytes:
        """Drop (and return) whatever has been received but not read yet."""
        return b""

    async def __aenter__(self) -> Transport:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class StreamTransport(Transport):
    """A transport over an asyncio (StreamReader, StreamWriter) pair."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @abc.abstractmethod
    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...

    @property
    def is_open(self) -> bool:
        return (
            self._reader is not None
            and self._writer is not None
            and not self._writer.is_closing()
            and not self._reader.at_eof()
            and self._reader.exception() is None
        )

    async def open(self) -> None:
        if self.is_open:
            return
        await self.close()
        try:
            self._reader, self._writer = await self._connect()
        except (OSError, ValueError) as exc:
            raise DeviceDisconnected(f"cannot open: {exc}", device=self.url) from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()

    def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            raise DeviceDisconnected("not open", device=self.url)
        return self._reader, self._writer

    def _lost(self, exc: BaseException | None) -> DeviceDisconnected:
        error = DeviceDisconnected(f"connection lost: {exc or 'end of stream'}", device=self.url)
        if self._writer is not None:
            self._writer.close()
        return error

    async def write(self, data: bytes) -> None:
        _, writer = self._streams()
        if writer.is_closing():
            raise self._lost(None)
        try:
            writer.write(data)
            await writer.drain()
        except OSError as exc:
            raise self._lost(exc) from exc

    async def read(self, max_bytes: int = 4096) -> bytes:
        reader, _ = self._streams()
        try:
            data = await reader.read(max_bytes)
        except OSError as exc:
            raise self._lost(exc) from exc
        if not data:
            raise self._lost(None)
        return data

    async def read_exactly(self, n: int) -> bytes:
        reader, _ = self._streams()
        try:
            return await reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise self._lost(None) from exc
        except OSError as exc:
            raise self._lost(exc) from exc

    async def read_until(self, sep: bytes) -> bytes:
        reader, _ = self._streams()
        try:
            return await reader.readuntil(sep)
        except asyncio.IncompleteReadError as exc:
            raise self._lost(None) from exc
        except asyncio.LimitOverrunError as exc:
            raise DeviceError(f"no {sep!r} within {exc.consumed} bytes", device=self.url) from exc
        except OSError as exc:
            raise self._lost(exc) from exc

    def discard_input(self) -> bytes:
        reader = self._reader
        if reader is None:
            return b""
        buffer: bytearray = getattr(reader, "_buffer", bytearray())
        data = bytes(buffer)
        buffer.clear()
        return data


class SerialTransport(StreamTransport):
    """A serial port (or pty) through pyserial-asyncio-fast, 8N1."""

    def __init__(self, url: str, *, path: str, baud: int = 9600, **serial_options: Any) -> None:
        super().__init__(url)
        self.path = path
        self.baud = baud
        self.serial_options = serial_options

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        import serial_asyncio_fast

        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=self.path, baudrate=self.baud, limit=_READ_LIMIT, **self.serial_options
        )
        return reader, writer


class TcpTransport(StreamTransport):
    def __init__(self, url: str, *, host: str, port: int, connect_timeout_s: float = 5.0) -> None:
        super().__init__(url)
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                return await asyncio.open_connection(self.host, self.port, limit=_READ_LIMIT)
        except TimeoutError as exc:
            raise OSError(f"connect timed out after {self.connect_timeout_s} s") from exc


def transport_for_url(url: str, **options: Any) -> Transport:
    """Build (without opening) the transport ``url`` names; TransportURLError if unusable.

    ``options`` give defaults (``baud``, ``port``) that the URL may override.
    """
    if url.startswith("/"):
        url = "serial://" + url
    parsed = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parsed.query))
    if parsed.scheme == "serial":
        path = parsed.path
        if not path:
            raise TransportURLError(f"{url!r}: serial URL without a device path")
        try:
            baud = int(query.pop("baud", options.pop("baud", 9600)))
        except ValueError:
            raise TransportURLError(f"{url!r}: baud must be an integer") from None
        if query:
            raise TransportURLError(f"{url!r}: unknown option(s) {sorted(query)}")
        options.pop("port", None)
        return SerialTransport(url, path=path, baud=baud, **options)
    if parsed.scheme == "tcp":
        if query:
            raise TransportURLError(f"{url!r}: unknown option(s) {sorted(query)}")
        default_port = options.pop("port", None)
        try:
            port = parsed.port if parsed.port is not None else default_port
        except ValueError:
            raise TransportURLError(f"{url!r}: port must be an integer 0-65535") from None
        if not parsed.hostname or port is None:
            raise TransportURLError(f"{url!r}: tcp URL needs host:port")
        options.pop("baud", None)
        return TcpTransport(url, host=parsed.hostname, port=int(port), **options)
    raise TransportURLError(f"{url!r}: scheme must be serial:// or tcp:// (or a /dev path)")


__all__ = [
    "SerialTransport",
    "StreamTransport",
    "TcpTransport",
    "Transport",
    "transport_for_url",
]
