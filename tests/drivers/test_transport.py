"""Transports over real ptys and TCP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import tty

import pytest

from groundkey_drivers.errors import DeviceDisconnected, TransportURLError
from groundkey_drivers.transport import SerialTransport, TcpTransport, transport_for_url


def test_urls_select_transport_and_options() -> None:
    serial = transport_for_url("serial:///dev/ttyUSB0?baud=4800")
    assert isinstance(serial, SerialTransport)
    assert (serial.path, serial.baud) == ("/dev/ttyUSB0", 4800)
    bare = transport_for_url("/tmp/rotator-link", baud=600)
    assert isinstance(bare, SerialTransport)
    assert (bare.path, bare.baud) == ("/tmp/rotator-link", 600)
    tcp = transport_for_url("tcp://127.0.0.1:4533", baud=9600)
    assert isinstance(tcp, TcpTransport)
    assert (tcp.host, tcp.port) == ("127.0.0.1", 4533)
    default_port = transport_for_url("tcp://localhost", port=4533)
    assert isinstance(default_port, TcpTransport)
    assert default_port.port == 4533
    assert not tcp.is_open  # constructors do no I/O


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://x:1", "scheme"),
        ("tcp://127.0.0.1", "host:port"),
        ("tcp://127.0.0.1:99999", "port"),
        ("serial:///dev/ttyS0?baud=fast", "baud"),
        ("serial:///dev/ttyS0?parity=E", "unknown option"),
        ("serial://", "path"),
    ],
)
def test_bad_urls_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(TransportURLError, match=problem):
        transport_for_url(url)


async def test_tcp_reads_and_reports_drop() -> None:
    peers: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peers.put(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, TcpTransport(f"tcp://127.0.0.1:{port}", host="127.0.0.1", port=port) as t:
        peer = await asyncio.wait_for(peers.get(), 10)
        peer.write(b"AZ=001 EL=002\r\nabcdefXYZ")
        assert await t.read_until(b"\n") == b"AZ=001 EL=002\r\n"
        assert await t.read_exactly(3) == b"abc"
        assert await t.read(2) == b"de"
        await t.write(b"C2\r")
        was_open = t.is_open
        peer.close()
        assert await t.read() == b"fXYZ"  # buffered bytes first, then the drop
        with pytest.raises(DeviceDisconnected):
            await t.read()
        assert was_open
        assert not t.is_open
        await t.close()
        await t.close()  # idempotent


async def test_tcp_refused_is_disconnected() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    transport = transport_for_url(f"tcp://127.0.0.1:{port}")
    with pytest.raises(DeviceDisconnected, match=str(port)):
        await transport.open()


async def test_serial_over_pty_and_unplug() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    transport = transport_for_url(f"serial://{path}?baud=9600")
    try:
        await transport.open()
        await transport.write(b"C2\r")
        loop = asyncio.get_running_loop()
        got = b""
        while not got.endswith(b"\r"):
            got += await loop.run_in_executor(None, os.read, master, 64)
        assert got == b"C2\r"
        os.write(master, b"+0180+0045\r\n")
        assert await asyncio.wait_for(transport.read_until(b"\n"), 10) == b"+0180+0045\r\n"
        os.close(master)  # the device vanishes
        master = -1
        with pytest.raises(DeviceDisconnected):
            await asyncio.wait_for(transport.read(), 10)
        assert not transport.is_open
    finally:
        await transport.close()
        if master >= 0:
            os.close(master)


async def test_serial_missing_path_is_disconnected() -> None:
    transport = transport_for_url("/dev/groundkey-no-such-port")
    with pytest.raises(DeviceDisconnected, match="no-such-port"):
        await transport.open()
