"""Emulated rotator controllers served over TCP or a pty, with fault injection.

The wire side is the protocol's *device* codec from :mod:`groundkey_protocol`
(the very codec module the drivers use for the client side), acting on a
:class:`SimRotator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import tty
from collections.abc import Callable

import numpy as np

from groundkey_protocol.devices.easycomm import EasyComm2Device
from groundkey_protocol.devices.gs232 import GS232ADevice, GS232BDevice, ReplyStyle
from groundkey_protocol.devices.rot2prog import MD01Device, Rot2ProgDevice
from groundkey_protocol.devices.rotator import AzEl, DeviceCodec, Extended, Quit
from groundkey_protocol.devices.rotctld import RotctldDevice
from groundkey_sim.rotator.mount import SimRotator

log = logging.getLogger(__name__)

SPLIT_DELAY_S = 0.02
PROTOCOLS = ("gs232a", "gs232b", "rot2prog", "md01", "easycomm2", "rotctld")


class Fault(enum.StrEnum):
    """``disconnect``: the endpoint vanishes for ``outage_s`` and comes back;
    ``silence``: commands are ignored; ``garbage``: junk bytes before every reply;
    ``stall``: the mount stops moving but still answers."""

    DISCONNECT = "disconnect"
    SILENCE = "silence"
    GARBAGE = "garbage"
    STALL = "stall"


def device_codec_factory(
    protocol: str, *, gs232b_style: ReplyStyle = "crlf", resolution: tuple[int, int] = (2, 2)
) -> Callable[[], DeviceCodec]:
    """A factory of fresh device codecs (one per connection) for ``protocol``."""
    factories: dict[str, Callable[[], DeviceCodec]] = {
        "gs232a": GS232ADevice,
        "gs232b": lambda: GS232BDevice(gs232b_style),
        "rot2prog": lambda: Rot2ProgDevice(resolution),
        "md01": lambda: MD01Device(resolution),
        "easycomm2": EasyComm2Device,
        "rotctld": RotctldDevice,
    }
    try:
        return factories[protocol]
    except KeyError:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}") from None


class RotatorServer:
    """Common part of the TCP and pty servers: command handling and faults."""

    def __init__(
        self,
        mount: SimRotator,
        protocol: str,
        *,
        codec_factory: Callable[[], DeviceCodec] | None = None,
        outage_s: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.mount = mount
        self.protocol = protocol
        self.codec_factory = codec_factory or device_codec_factory(protocol)
        self.outage_s = outage_s
        self.faults: set[Fault] = set()
        self.endpoint = ""
        self.generation = 0  # incremented each time the endpoint (re)appears
        self.up = asyncio.Event()
        self._rng = np.random.default_rng(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # hardware quirk: the last byte of every answer (the LF of CR LF) comes 20 ms
        # after the rest, so clients see it in a separate read
        self.split_replies = False

    @property
    def position(self) -> AzEl:
        return self.mount.position

    def inject(self, fault: Fault | str) -> None:
        """Start a fault; ``disconnect`` is a one-shot outage, the others last until
        :meth:`clear`."""
        fault = Fault(fault)
        log.info("%s: injecting %s", self.endpoint, fault)
        if fault is Fault.DISCONNECT:
            task = asyncio.get_running_loop().create_task(self._outage(), name="rotator outage")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif fault is Fault.STALL:
            self.mount.position  # noqa: B018  (integrate up to now before freezing)
            self.mount.stalled = True
        else:
            self.faults.add(fault)

    def clear(self, fault: Fault | str | None = None) -> None:
        """End one fault, or all of them."""
        faults = list(Fault) if fault is None else [Fault(fault)]
        for item in faults:
            if item is Fault.STALL and self.mount.stalled:
                self.mount.position  # noqa: B018  (no catch-up jump after the stall)
                self.mount.stalled = False
            self.faults.discard(item)

    def handle(self, codec: DeviceCodec, data: bytes) -> tuple[bytes, bool]:
        """Answer ``data``: (bytes to send in one write, close the connection)."""
        out = bytearray()
        close = False
        for command in codec.feed(data):
            if Fault.SILENCE in self.faults:
                continue
            inner = command.command if isinstance(command, Extended) else command
            reply = codec.respond(command, self.mount)
            if reply and Fault.GARBAGE in self.faults:
                out += self.junk()
            out += reply
            if isinstance(inner, Quit):
                close = True
                break
        return bytes(out), close

    def junk(self) -> bytes:
        """1-8 bytes of line noise (0x80-0xFF, as a wrong baud rate produces)."""
        size = int(self._rng.integers(1, 9))
        return self._rng.integers(0x80, 0x100, size=size, dtype=np.uint8).tobytes()

    async def _outage(self) -> None:
        self.up.clear()
        await self._drop()
        await asyncio.sleep(self.outage_s)
        if not self._closed:
            await self._restore()
            self.generation += 1
            self.up.set()

    async def _drop(self) -> None:
        raise NotImplementedError

    async def _restore(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop()

    async def __aenter__(self) -> RotatorServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class TcpRotatorServer(RotatorServer):
    """One emulated controller on a TCP port; every connection gets its own parser."""

    def __init__(
        self,
        mount: SimRotator,
        protocol: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        codec_factory: Callable[[], DeviceCodec] | None = None,
        outage_s: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(mount, protocol, codec_factory=codec_factory, outage_s=outage_s, seed=seed)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        await self._restore()
        self.generation += 1
        self.up.set()

    async def _restore(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.endpoint = f"tcp://{self.host}:{self.port}"

    async def _drop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        codec = self.codec_factory()
        try:
            while data := await reader.read(4096):
                out, close = self.handle(codec, data)
                if out and self.split_replies and len(out) > 1:
                    writer.write(out[:-1])
                    await writer.drain()
                    await asyncio.sleep(SPLIT_DELAY_S)
                    out = out[-1:]
                if out:
                    writer.write(out)
                    await writer.drain()
                if close:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


class PtyRotatorServer(RotatorServer):
    """One emulated controller on a pseudo-terminal.

    The emulator keeps its own slave fd open (raw), so clients can close and
    re-open the path. ``link`` is an optional stable symlink to the slave, removed
    during a ``disconnect`` outage and re-pointed to a fresh pty afterwards (the
    old pty is closed: clients holding it see the device vanish, as on unplug).
    """

    def __init__(
        self,
        mount: SimRotator,
        protocol: str,
        *,
        link: str | None = None,
        codec_factory: Callable[[], DeviceCodec] | None = None,
        outage_s: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(mount, protocol, codec_factory=codec_factory, outage_s=outage_s, seed=seed)
        self.link = link
        self.path = ""
        self._fds: tuple[int, int] | None = None
        self._codec: DeviceCodec | None = None

    async def start(self) -> None:
        await self._restore()
        self.generation += 1
        self.up.set()

    async def _restore(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fds = (master, slave)
        self._codec = self.codec_factory()
        self.path = os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._readable, master)
        if self.link:
            tmp = f"{self.link}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.path, tmp)
            os.replace(tmp, self.link)
        self.endpoint = self.link or self.path

    async def _drop(self) -> None:
        fds, self._fds = self._fds, None
        if fds is None:
            return
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
        asyncio.get_running_loop().remove_reader(fds[0])
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _readable(self, master: int) -> None:
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if not data or self._codec is None:
            return
        out, _ = self.handle(self._codec, data)
        if out and self.split_replies and len(out) > 1:
            self._write(master, out[:-1])
            asyncio.get_running_loop().call_later(SPLIT_DELAY_S, self._write, master, out[-1:])
        elif out:
            self._write(master, out)

    def _write(self, master: int, data: bytes) -> None:
        if self._fds is None or self._fds[0] != master:
            return  # that pty is gone
        try:
            os.write(master, data)
        except OSError:  # nobody reading and the queue is full: the bytes are lost
            pass


async def serve_tcp(
    protocol: str,
    *,
    mount: SimRotator | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    codec_factory: Callable[[], DeviceCodec] | None = None,
    outage_s: float = 0.5,
    seed: int = 0,
) -> TcpRotatorServer:
    """Start an emulated ``protocol`` controller on TCP; ``server.endpoint`` is its URL."""
    server = TcpRotatorServer(
        mount or SimRotator(),
        protocol,
        host=host,
        port=port,
        codec_factory=codec_factory,
        outage_s=outage_s,
        seed=seed,
    )
    await server.start()
    return server


async def serve_pty(
    protocol: str,
    *,
    mount: SimRotator | None = None,
    link: str | None = None,
    codec_factory: Callable[[], DeviceCodec] | None = None,
    outage_s: float = 0.5,
    seed: int = 0,
) -> PtyRotatorServer:
    """Start an emulated ``protocol`` controller on a pty; ``server.endpoint`` is its path."""
    server = PtyRotatorServer(
        mount or SimRotator(),
        protocol,
        link=link,
        codec_factory=codec_factory,
        outage_s=outage_s,
        seed=seed,
    )
    await server.start()
    return server
