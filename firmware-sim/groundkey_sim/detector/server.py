"""Serve a :class:`SimDetector` on a pty (raw, slave kept open) or a TCP port."""

from __future__ import annotations

import asyncio
import os
import tty

from groundkey_protocol.devices import detector as scpi
from groundkey_sim.detector.device import SimDetector


class PtyServer:
    """A pty pair whose master answers SCPI; the slave stays open so clients may reconnect."""

    def __init__(self, device: SimDetector, link: str | None = None) -> None:
        self.device = device
        self.link = link
        self.path = ""
        self._master = -1
        self._slave = -1
        self._splitter = scpi.LineSplitter()

    def open(self) -> str:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        if self.link:
            if os.path.lexists(self.link):
                os.unlink(self.link)
            os.symlink(self.path, self.link)
        os.set_blocking(self._master, False)
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        return self.link or self.path

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        for line in self._splitter.feed(data):
            reply = self.device.handle(line)
            if reply:
                os.write(self._master, reply)

    def close(self) -> None:
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
            if self.link and os.path.islink(self.link):
                os.unlink(self.link)


async def serve_pty(device: SimDetector, link: str | None = None) -> PtyServer:
    """Start answering on a new pty; ``.path`` (or the link) is what clients open."""
    server = PtyServer(device, link)
    server.open()
    return server


async def serve_tcp(device: SimDetector, host: str, port: int) -> asyncio.Server:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        splitter = scpi.LineSplitter()
        try:
            while data := await reader.read(4096):
                for line in splitter.feed(data):
                    reply = device.handle(line)
                    if reply:
                        writer.write(reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(client, host, port)
