"""A pyusb backend that forwards USB requests over TCP (usbnet), like USB/IP.

``usb.core.find(backend=UsbnetBackend("127.0.0.1", port), idVendor=..., idProduct=...)``
gives a regular :class:`usb.core.Device`; enumeration, descriptors, control transfers
and bulk reads travel as :class:`~groundkey_protocol.devices.timetagger.UsbnetMessage`
frames to a device server (``groundkey-sim tagger``). Driver code is unchanged
between this and libusb. Calls block (pyusb is synchronous): call them from a worker
thread, never from the event loop.
"""

from __future__ import annotations

import array
import errno
import socket
import struct
import threading
import urllib.parse
from typing import Any

import usb.backend
import usb.core

from groundkey_drivers.errors import TransportURLError
from groundkey_protocol.devices import timetagger as tt
from groundkey_protocol.errors import ProtocolError


class _Desc:
    """A descriptor object with the attributes pyusb copies."""

    def __init__(self, fields: dict[str, Any], **extra: Any) -> None:
        self.__dict__.update(fields)
        self.__dict__.update(extra)


class _Dev:
    def __init__(self, index: int, desc: dict[str, Any]) -> None:
        self.index = index
        self.desc = desc


class UsbnetBackend(usb.backend.IBackend):  # type: ignore[misc]
    """pyusb IBackend over one TCP connection to a usbnet server."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._reader = tt.UsbnetReader()
        self._pending: list[tt.UsbnetMessage] = []
        self._lock = threading.Lock()
        self._gone = False  # link dropped: handles are stale until the next enumeration

    def __repr__(self) -> str:
        return f"UsbnetBackend({self.host}:{self.port})"

    # ----------------------------------------------------------------- wire

    def _no_device(self, why: str) -> usb.core.USBError:
        self.disconnect()
        self._gone = True
        return usb.core.USBError(f"usbnet {self.host}:{self.port}: {why}", errno=errno.ENODEV)

    def disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._reader = tt.UsbnetReader()
                self._pending.clear()

    def _call(self, msg: tt.UsbnetMessage, timeout_s: float | None = None) -> tt.UsbnetMessage:
        with self._lock:
            if msg.op == tt.OP_ENUMERATE:
                self._gone = False
            elif self._gone:
                raise usb.core.USBError("no such device (it re-enumerated)", errno=errno.ENODEV)
            if self._sock is None:
                try:
                    self._sock = socket.create_connection((self.host, self.port), self.timeout_s)
                except OSError as exc:
                    raise self._no_device(f"cannot connect ({exc})") from None
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self._sock
            sock.settimeout(self.timeout_s + (timeout_s or 0.0))
            try:
                sock.sendall(msg.encode())
                while not self._pending:
                    data = sock.recv(1 << 20)
                    if not data:
                        raise self._no_device("device disconnected")
                    self._pending.extend(self._reader.feed(data))
            except (OSError, ProtocolError) as exc:
                if isinstance(exc, usb.core.USBError):
                    raise
                raise self._no_device(f"link failed ({exc})") from None
            reply = self._pending.pop(0)
        if reply.status == tt.USB_TIMEOUT:
            raise usb.core.USBTimeoutError("timeout", errno=errno.ETIMEDOUT)
        if reply.status == tt.USB_PIPE:
            raise usb.core.USBError("pipe error (stall)", errno=errno.EPIPE)
        if reply.status != tt.USB_OK:
            raise usb.core.USBError(f"usbnet status {reply.status}", errno=errno.EIO)
        return reply

    # ----------------------------------------------------------------- IBackend

    def enumerate_devices(self) -> list[_Dev]:
        reply = self._call(tt.UsbnetMessage(tt.OP_ENUMERATE))
        return [_Dev(i, d) for i, d in enumerate(tt.decode_descriptors(reply.payload))]

    def get_device_descriptor(self, dev: _Dev) -> _Desc:
        return _Desc(
            dev.desc["device"],
            bus=1,
            address=dev.index + 2,
            port_number=dev.index + 1,
            port_numbers=(dev.index + 1,),
            speed=4,
        )

    def get_configuration_descriptor(self, dev: _Dev, config: int) -> _Desc:
        return _Desc(dev.desc["configuration"], extra_descriptors=[])

    def get_interface_descriptor(self, dev: _Dev, intf: int, alt: int, config: int) -> _Desc:
        return _Desc(dev.desc["interface"], extra_descriptors=[])

    def get_endpoint_descriptor(
        self, dev: _Dev, ep: int, intf: int, alt: int, config: int
    ) -> _Desc:
        return _Desc(dev.desc["endpoints"][ep], bRefresh=0, bSynchAddress=0, extra_descriptors=[])

    def open_device(self, dev: _Dev) -> _Dev:
        return dev

    def close_device(self, dev_handle: _Dev) -> None:
        self.disconnect()

    def set_configuration(self, dev_handle: _Dev, config_value: int) -> None:
        return None

    def get_configuration(self, dev_handle: _Dev) -> int:
        return 1

    def set_interface_altsetting(self, dev_handle: _Dev, intf: int, altsetting: int) -> None:
        return None

    def claim_interface(self, dev_handle: _Dev, intf: int) -> None:
        return None

    def release_interface(self, dev_handle: _Dev, intf: int) -> None:
        return None

    def clear_halt(self, dev_handle: _Dev, ep: int) -> None:
        return None

    def is_kernel_driver_active(self, dev_handle: _Dev, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Dev, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _Dev, intf: int) -> None:
        return None

    def reset_device(self, dev_handle: _Dev) -> None:
        try:
            self._call(tt.UsbnetMessage(tt.OP_RESET))
        except usb.core.USBError:
            pass  # the device re-enumerates and the link drops: that is the reset
        self.disconnect()
        self._gone = True

    def ctrl_transfer(
        self,
        dev_handle: _Dev,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        is_in = bool(bmRequestType & 0x80)
        length = len(data) * data.itemsize if is_in else len(data)
        out = b"" if is_in else data.tobytes()
        head = tt.CTRL_STRUCT.pack(bmRequestType, bRequest, wValue, wIndex, length, timeout)
        reply = self._call(tt.UsbnetMessage(tt.OP_CTRL, 0, head + out), timeout / 1000.0)
        if is_in:
            n = min(len(reply.payload), length)
            memoryview(data).cast("B")[:n] = reply.payload[:n]
            return n
        return len(out)

    def bulk_read(
        self, dev_handle: _Dev, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        size = len(buff) * buff.itemsize
        payload = tt.BULK_READ_STRUCT.pack(ep, size, timeout)
        reply = self._call(tt.UsbnetMessage(tt.OP_BULK_READ, 0, payload), timeout / 1000.0)
        n = min(len(reply.payload), size)
        memoryview(buff).cast("B")[:n] = reply.payload[:n]
        return n

    def bulk_write(
        self, dev_handle: _Dev, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        payload = tt.BULK_WRITE_STRUCT.pack(ep, timeout) + data.tobytes()
        reply = self._call(tt.UsbnetMessage(tt.OP_BULK_WRITE, 0, payload), timeout / 1000.0)
        return int(struct.unpack("<I", reply.payload[:4])[0])


def parse_usb_url(url: str) -> tuple[Any, int, int, str | None]:
    """``usbnet://HOST:PORT[?serial=S]`` or ``usb://VID:PID[?serial=S]`` (hex ids) ->
    (backend or None for libusb, vid, pid, serial)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    serial = query.get("serial", [None])[0]
    if parts.scheme == "usbnet":
        if not parts.hostname or parts.port is None:
            raise TransportURLError(f"{url}: usbnet URL needs HOST:PORT")
        return UsbnetBackend(parts.hostname, parts.port), tt.VENDOR_ID, tt.PRODUCT_ID, serial
    if parts.scheme == "usb":
        vid_text, _, pid_text = parts.netloc.partition(":")
        try:
            return None, int(vid_text, 16), int(pid_text, 16), serial
        except ValueError:
            raise TransportURLError(f"{url}: usb URL needs hex VID:PID") from None
    raise TransportURLError(f"{url}: scheme must be usbnet:// or usb://")
