"""Every rotator driver against its emulator, in-process over a real pty or TCP socket:
normal operation, limits, reconnect after the endpoint vanishes, and each fault mode."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from groundkey_drivers.errors import (
    DeviceDisconnected,
    DeviceRejected,
    DeviceTimeout,
    LimitError,
)
from groundkey_drivers.rotator.base import CodecRotator, Rotator
from groundkey_drivers.rotator.registry import ROTATOR_DRIVERS, create_rotator, driver_class
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
from groundkey_sim.rotator import PROTOCOLS, RotatorServer, SimRotator, serve_pty, serve_tcp

SERIAL = [p for p in PROTOCOLS if p != "rotctld"]
# resolution of the protocol's position answers
QUANTUM_DEG = {"gs232a": 0.5, "gs232b": 0.5, "rot2prog": 0.05, "md01": 0.05}
QUANTUM_DEG |= {"easycomm2": 0.05, "rotctld": 0.005}


def fast_mount() -> SimRotator:
    return SimRotator(
        slew_rate_deg_s=(90.0, 90.0),
        accel_deg_s2=(360.0, 360.0),
        limits=RotatorLimits(max_az_deg=450.0),
    )


@contextlib.asynccontextmanager
async def emulator(
    protocol: str, kind: str, tmp_path: Path, mount: SimRotator
) -> AsyncIterator[RotatorServer]:
    if kind == "pty":
        server: RotatorServer = await serve_pty(
            protocol, mount=mount, link=str(tmp_path / "rotator"), outage_s=0.4
        )
    else:
        server = await serve_tcp(protocol, mount=mount, outage_s=0.4)
    try:
        yield server
    finally:
        await server.close()


def near(a: AzEl, b: AzEl, protocol: str) -> bool:
    tol = QUANTUM_DEG[protocol] + 1e-6
    return abs(a.az_deg - b.az_deg) <= tol and abs(a.el_deg - b.el_deg) <= tol


async def wait_arrival(rot: Rotator, target: AzEl, protocol: str) -> AzEl:
    async with asyncio.timeout(20):
        while True:
            position = await rot.position()
            if near(position, target, protocol):
                return position
            await asyncio.sleep(0.05)


def test_registry_names_every_protocol() -> None:
    assert set(ROTATOR_DRIVERS) == set(PROTOCOLS)
    for protocol in PROTOCOLS:
        assert driver_class(protocol).protocol == protocol
    with pytest.raises(ValueError, match="gs232b"):
        driver_class("nope")


def test_constructor_does_no_io() -> None:
    rot = create_rotator("gs232b", "/dev/does-not-exist", name="mount")
    assert isinstance(rot, CodecRotator)
    assert not rot.connected


@pytest.mark.parametrize("kind", ["pty", "tcp"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_driver_points_reads_and_stops(protocol: str, kind: str, tmp_path: Path) -> None:
    mount = fast_mount()
    mount.teleport(AzEl(10.0, 5.0))
    async with emulator(protocol, kind, tmp_path, mount) as server:
        rot = create_rotator(protocol, server.endpoint, name="mount1", timeout_s=3.0)
        async with rot:
            assert near(await rot.position(), AzEl(10.0, 5.0), protocol)
            target = AzEl(25.0, 12.0) if protocol.startswith("gs232") else AzEl(25.5, 12.5)
            await rot.point(target)
            await wait_arrival(rot, target, protocol)
            assert mount.target == target

            await rot.point(AzEl(200.0, 80.0))
            await rot.stop()
            await rot.position()  # answered in order: the stop has been handled
            stopped = mount.position
            assert stopped.az_deg < 200.0
            assert not mount.moving

            before = mount.commands
            with pytest.raises(LimitError) as refused:
                await rot.point(AzEl(400.0, 10.0))  # inside the mount, outside driver limits
            assert mount.commands == before  # nothing was sent
            assert "mount1" in str(refused.value)


@pytest.mark.parametrize("kind", ["pty", "tcp"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_driver_reconnects_after_endpoint_vanishes(
    protocol: str, kind: str, tmp_path: Path
) -> None:
    mount = fast_mount()
    mount.teleport(AzEl(42.0, 21.0))
    async with (
        emulator(protocol, kind, tmp_path, mount) as server,
        create_rotator(protocol, server.endpoint, timeout_s=1.0) as rot,
    ):
        assert near(await rot.position(), AzEl(42.0, 21.0), protocol)
        generation = server.generation
        server.inject("disconnect")
        await asyncio.sleep(0)  # the outage starts
        assert not server.up.is_set()
        # during the outage a command fails fast instead of hanging
        with pytest.raises((DeviceDisconnected, DeviceTimeout)):
            async with asyncio.timeout(5):
                await rot.position()
        await asyncio.wait_for(server.up.wait(), 10)
        assert server.generation == generation + 1
        loop = asyncio.get_running_loop()
        back_at = loop.time()
        async with asyncio.timeout(10):
            while True:
                try:
                    position = await rot.position()
                    break
                except (DeviceDisconnected, DeviceTimeout):
                    await asyncio.sleep(0.05)
        assert loop.time() - back_at < 2.0
        assert near(position, AzEl(42.0, 21.0), protocol)
        await rot.point(AzEl(50.0, 30.0))
        await rot.position()  # answered in order: the set has been handled
        assert mount.target == AzEl(50.0, 30.0)


def fault_kind(protocol: str) -> str:
    return "tcp" if protocol == "rotctld" else "pty"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_silence_raises_timeout_naming_device_and_command(
    protocol: str, tmp_path: Path
) -> None:
    mount = fast_mount()
    mount.teleport(AzEl(100.0, 10.0))
    async with (
        emulator(protocol, fault_kind(protocol), tmp_path, mount) as server,
        create_rotator(protocol, server.endpoint, name="az-el-7", timeout_s=1.0) as rot,
    ):
        await rot.position()
        server.inject("silence")
        with pytest.raises(DeviceTimeout) as timeout:
            await rot.position()
        assert timeout.value.device == "az-el-7"
        assert timeout.value.command == "position"
        assert "az-el-7 [position]" in str(timeout.value)
        server.clear("silence")
        assert near(await rot.position(), AzEl(100.0, 10.0), protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_garbage_is_skipped_and_positions_stay_correct(protocol: str, tmp_path: Path) -> None:
    mount = fast_mount()
    mount.teleport(AzEl(123.0, 45.0))
    async with (
        emulator(protocol, fault_kind(protocol), tmp_path, mount) as server,
        create_rotator(protocol, server.endpoint, timeout_s=2.0) as rot,
    ):
        server.inject("garbage")
        for _ in range(20):
            assert near(await rot.position(), AzEl(123.0, 45.0), protocol)
        await rot.point(AzEl(130.0, 50.0))
        await wait_arrival(rot, AzEl(130.0, 50.0), protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stall_freezes_the_reported_position(protocol: str, tmp_path: Path) -> None:
    mount = SimRotator(slew_rate_deg_s=(5.0, 5.0), accel_deg_s2=(50.0, 50.0))
    async with (
        emulator(protocol, fault_kind(protocol), tmp_path, mount) as server,
        create_rotator(protocol, server.endpoint, timeout_s=2.0) as rot,
    ):
        await rot.point(AzEl(300.0, 80.0))
        async with asyncio.timeout(10):
            while (await rot.position()).az_deg < 2.0:
                pass
        server.inject("stall")
        frozen = await rot.position()
        await asyncio.sleep(0.3)
        assert await rot.position() == frozen
        assert frozen.az_deg < 300.0
        server.clear("stall")
        async with asyncio.timeout(10):
            while True:
                if await rot.position() != frozen:
                    break
                await asyncio.sleep(0.05)


async def test_open_fails_while_absent_then_next_command_connects() -> None:
    probe = await serve_tcp("rotctld")
    port = probe.port
    await probe.close()
    rot = create_rotator("rotctld", f"tcp://127.0.0.1:{port}", name="late", timeout_s=2.0)
    with pytest.raises(DeviceDisconnected) as absent:
        await rot.open()
    assert "late [open]" in str(absent.value)
    mount = fast_mount()
    mount.teleport(AzEl(1.0, 2.0))
    async with await serve_tcp("rotctld", mount=mount, port=port):
        try:
            assert await rot.position() == AzEl(1.0, 2.0)
        finally:
            await rot.close()
            await rot.close()  # idempotent


async def test_device_error_reply_is_rejected_with_context() -> None:
    mount = fast_mount()  # az limit 450 in the mount
    wide = RotatorLimits(min_az_deg=-180.0, max_az_deg=540.0)
    async with (
        await serve_tcp("rotctld", mount=mount) as server,
        create_rotator("rotctld", server.endpoint, name="wide", limits=wide) as rot,
    ):
        with pytest.raises(DeviceRejected) as rejected:
            await rot.point(AzEl(500.0, 10.0))
        assert rejected.value.device == "wide"
        assert rejected.value.command == "point"
        assert "-1" in str(rejected.value)
        assert await rot.position() == AzEl(0.0, 0.0)  # the connection is still in step


@pytest.mark.parametrize("protocol", ["gs232b", "rotctld"])
async def test_cancelled_command_leaves_the_driver_in_step(protocol: str, tmp_path: Path) -> None:
    """A caller's own deadline may cancel a command mid-exchange; the late answer
    must not be taken for the next command's reply."""
    mount = fast_mount()
    mount.teleport(AzEl(77.0, 11.0))
    async with (
        emulator(protocol, fault_kind(protocol), tmp_path, mount) as server,
        create_rotator(protocol, server.endpoint, timeout_s=5.0) as rot,
    ):
        server.inject("silence")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rot.position(), 0.2)
        server.clear("silence")
        await rot.point(AzEl(80.0, 12.0))
        assert await wait_arrival(rot, AzEl(80.0, 12.0), protocol)


@pytest.mark.parametrize(("protocol", "kind"), [("md01", "pty"), ("rotctld", "tcp")])
async def test_outage_between_commands_is_transparent(
    protocol: str, kind: str, tmp_path: Path
) -> None:
    """No command during the outage: the first one afterwards just works."""
    mount = fast_mount()
    mount.teleport(AzEl(5.0, 6.0))
    async with (
        emulator(protocol, kind, tmp_path, mount) as server,
        create_rotator(protocol, server.endpoint, timeout_s=2.0) as rot,
    ):
        assert await rot.position() == AzEl(5.0, 6.0)
        server.inject("disconnect")
        await asyncio.sleep(0)
        await asyncio.wait_for(server.up.wait(), 10)
        assert await rot.position() == AzEl(5.0, 6.0)


@pytest.mark.parametrize(("protocol", "kind"), [("gs232b", "pty"), ("easycomm2", "tcp")])
async def test_answers_split_across_reads(protocol: str, kind: str, tmp_path: Path) -> None:
    """Some controllers send the line end of an answer in a separate burst."""
    mount = fast_mount()
    mount.teleport(AzEl(181.0, 8.0))
    async with emulator(protocol, kind, tmp_path, mount) as server:
        server.split_replies = True
        async with create_rotator(protocol, server.endpoint, timeout_s=2.0) as rot:
            for _ in range(3):
                assert await rot.position() == AzEl(181.0, 8.0)
