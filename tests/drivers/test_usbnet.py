"""pyusb's own API (find, descriptors, strings, ctrl_transfer) over the usbnet backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import usb.core
import usb.util

from groundkey_drivers.errors import TransportURLError
from groundkey_drivers.usbnet import UsbnetBackend, parse_usb_url
from groundkey_protocol.devices import timetagger as tt
from groundkey_sim.downlink import Downlink, preset
from groundkey_sim.timetagger import SimTimeTagger, UsbnetServer


@pytest.fixture
async def port() -> AsyncIterator[int]:
    device = SimTimeTagger(
        lambda _n: Downlink(preset("bench-fiber"), seed=1, start_unix_s=0.0, duration_s=0.2),
        serial="SN-77",
    )
    server = UsbnetServer(device)
    try:
        yield await server.start()
    finally:
        await server.close()


def _probe(port: int) -> tuple[str, str, str, int, bytes]:
    backend = UsbnetBackend("127.0.0.1", port)
    dev = usb.core.find(
        backend=backend,
        idVendor=tt.VENDOR_ID,
        idProduct=tt.PRODUCT_ID,
        custom_match=lambda d: d.serial_number == "SN-77",
    )
    assert dev is not None
    dev.set_configuration()
    ep = usb.util.find_descriptor(dev.get_active_configuration()[(0, 0)])
    ident = bytes(dev.ctrl_transfer(tt.REQ_IN, tt.REQ_IDENTIFY, 0, 0, 128))
    assert dev.ctrl_transfer(tt.REQ_OUT, tt.REQ_START, 0, 0, None) == 0
    frame = bytes(dev.read(tt.BULK_IN_EP, 1 << 20, 2000))
    with pytest.raises(usb.core.USBError):
        dev.ctrl_transfer(tt.REQ_IN, 0x55, 0, 0, 8)  # unknown request: stall
    missing = usb.core.find(
        backend=backend, idVendor=tt.VENDOR_ID, custom_match=lambda d: d.serial_number == "x"
    )
    assert missing is None
    usb.util.dispose_resources(dev)
    return dev.serial_number, dev.product, ident.decode(), ep.bEndpointAddress, frame


async def test_pyusb_find_descriptors_and_transfers(port: int) -> None:
    serial, product, ident, ep, frame = await asyncio.to_thread(_probe, port)
    assert serial == "SN-77"
    assert product.startswith("GKTT")
    assert ident == "groundkey,GKTT-SIM,SN-77,1.0"
    assert ep == tt.BULK_IN_EP
    batch = tt.FrameDecoder().feed(frame)
    assert batch.frames >= 1
    assert len(batch) > 0


def test_url_parsing() -> None:
    backend, vid, pid, serial = parse_usb_url("usb://1209:7474?serial=AB")
    assert backend is None
    assert (vid, pid, serial) == (0x1209, 0x7474, "AB")
    backend, *_ = parse_usb_url("usbnet://127.0.0.1:5000")
    assert isinstance(backend, UsbnetBackend)
    assert backend.port == 5000
    for bad in ("usb://zz:1", "usbnet://host", "http://x"):
        with pytest.raises(TransportURLError):
            parse_usb_url(bad)


def test_unreachable_server_is_no_device() -> None:
    with pytest.raises(usb.core.USBError):
        usb.core.find(backend=UsbnetBackend("127.0.0.1", 1), idVendor=tt.VENDOR_ID)
