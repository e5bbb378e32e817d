from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from groundkey_daemon.sdnotify import Watchdog, notify, watchdog_interval_s


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"groundkey-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


async def recv(sock: socket.socket, timeout_s: float = 30.0) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout_s)


async def test_notify_abstract_namespace(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    assert notify("READY=1\nSTATUS=waiting for pass", env={"NOTIFY_SOCKET": address})
    assert await recv(sock) == b"READY=1\nSTATUS=waiting for pass"


async def test_notify_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        assert notify("STATUS=tracking MICIUS", env={"NOTIFY_SOCKET": str(path)})
        assert await recv(sock) == b"STATUS=tracking MICIUS"


def test_not_under_systemd_is_a_noop(tmp_path: Path) -> None:
    assert notify("READY=1", env={}) is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "absent")}) is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": "relative"}) is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    pid = str(os.getpid())
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None


async def test_watchdog_pings_only_while_progress_is_reported(
    abstract_socket: tuple[socket.socket, str],
) -> None:
    sock, address = abstract_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "40000", "WATCHDOG_PID": str(os.getpid())}
    dog = Watchdog(env)
    assert dog.interval_s == 0.02
    task = asyncio.create_task(dog.run())
    try:
        assert await recv(sock) == b"WATCHDOG=1"  # initial ping
        for _ in range(3):
            dog.progress()
            assert await recv(sock) == b"WATCHDOG=1"
        # no progress: the service looks wedged, no ping for many intervals
        with pytest.raises(TimeoutError):
            await recv(sock, timeout_s=0.5)
        dog.progress()
        assert await recv(sock) == b"WATCHDOG=1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_notify_never_blocks_and_counts_drops(abstract_socket: tuple[socket.socket, str]) -> None:
    from groundkey_daemon import sdnotify

    sock, address = abstract_socket  # nobody reads it: the queue fills up
    env = {"NOTIFY_SOCKET": address}
    before = sdnotify.dropped()
    sent = 0
    for _ in range(5000):  # far more than a datagram queue holds (max_dgram_qlen ~ 512)
        if notify("STATUS=" + "x" * 200, env=env):
            sent += 1
        if sdnotify.dropped() > before:
            break
    assert sdnotify.dropped() > before, "a full queue must drop, not block"
    assert sent > 0
    assert sock.recv(4096).startswith(b"STATUS=")  # what did get through is intact
