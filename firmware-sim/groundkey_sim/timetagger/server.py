"""usbnet server: one emulated USB device behind a TCP listener (like USB/IP)."""

from __future__ import annotations

import asyncio
import logging
import struct

from groundkey_protocol.devices import timetagger as tt
from groundkey_protocol.errors import ProtocolError
from groundkey_sim.timetagger.device import DeviceReset, SimTimeTagger

log = logging.getLogger(__name__)


class UsbnetServer:
    """Serves ``device`` to usbnet clients; a device reset drops the current client."""

    def __init__(self, device: SimTimeTagger) -> None:
        self.device = device
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._client, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = tt.UsbnetReader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for msg in codec.feed(data):
                    reply = await self._handle(msg)
                    writer.write(reply.encode())
                    await writer.drain()
        except DeviceReset:
            log.info("device reset: dropping the usbnet client")
            self.device.reset()
        except (ProtocolError, ConnectionError) as exc:
            log.warning("usbnet client dropped: %s", exc)
        finally:
            writer.close()

    async def _handle(self, msg: tt.UsbnetMessage) -> tt.UsbnetMessage:
        dev = self.device
        if msg.op == tt.OP_ENUMERATE:
            return tt.UsbnetMessage(
                msg.op, tt.USB_OK, tt.encode_descriptors([tt.device_descriptor()])
            )
        if msg.op == tt.OP_CTRL:
            rtype, req, value, index, length, _ms = tt.CTRL_STRUCT.unpack_from(msg.payload)
            data = msg.payload[tt.CTRL_STRUCT.size :]
            try:
                reply = dev.control(rtype, req, value, index, data, length)
            except DeviceReset:
                raise
            except (ValueError, ProtocolError):
                return tt.UsbnetMessage(msg.op, tt.USB_PIPE)
            return tt.UsbnetMessage(msg.op, tt.USB_OK, reply)
        if msg.op == tt.OP_BULK_READ:
            _ep, size, timeout_ms = tt.BULK_READ_STRUCT.unpack_from(msg.payload)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_ms / 1000.0
            while True:
                data = dev.read(size)
                if data:
                    return tt.UsbnetMessage(msg.op, tt.USB_OK, data)
                left = deadline - loop.time()
                if left <= 0:
                    return tt.UsbnetMessage(msg.op, tt.USB_TIMEOUT)
                wait = dev.release_delay_s() if dev.running else left
                await asyncio.sleep(min(left, max(wait, 0.001)))
        if msg.op == tt.OP_BULK_WRITE:
            return tt.UsbnetMessage(msg.op, tt.USB_PIPE, struct.pack("<I", 0))
        if msg.op == tt.OP_RESET:
            raise DeviceReset
        return tt.UsbnetMessage(msg.op, tt.USB_PIPE)
