"""The emulated mount's physics, and ``groundkey-sim rotator`` as a real subprocess."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path

import pytest

from groundkey_drivers.rotator.registry import create_rotator
from groundkey_protocol.clock import Clock
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
from groundkey_sim.rotator import SimRotator


class SteppedClock(Clock):
    """A clock the test advances by hand (deterministic physics)."""

    def __init__(self) -> None:
        self.t_s = 1_482_100_000.0  # 2016-12-18, near the Micius TLE epoch

    def now_s(self) -> float:
        return self.t_s

    def spec(self) -> str:
        return "stepped"


def test_trapezoidal_move_respects_rate_and_acceleration() -> None:
    clock = SteppedClock()
    mount = SimRotator(clock=clock, slew_rate_deg_s=(6.0, 3.0), accel_deg_s2=(2.0, 1.0))
    assert mount.set_target(AzEl(60.0, 30.0))
    positions = []
    for _ in range(200):
        clock.t_s += 0.1
        positions.append(mount.position)
    az = [p.az_deg for p in positions]
    speeds = [(b - a) / 0.1 for a, b in itertools.pairwise(az)]
    assert max(speeds) <= 6.0 + 1e-6
    assert speeds[0] < 1.0  # accelerating from rest at 2 deg/s^2
    # az: 3 s ramp up, 7 s at 6 deg/s, 3 s ramp down = 13 s for 60 deg
    assert az[124] < 60.0
    assert az[135] == pytest.approx(60.0)
    assert positions[-1] == AzEl(60.0, 30.0)
    assert not mount.moving


def test_limits_overlap_stop_stall_and_park() -> None:
    clock = SteppedClock()
    mount = SimRotator(clock=clock, limits=RotatorLimits(max_az_deg=450.0))
    assert mount.set_target(AzEl(440.0, 10.0))  # overlap region
    assert not mount.set_target(AzEl(451.0, 10.0))
    assert not mount.set_target(AzEl(10.0, 91.0))
    assert mount.target == AzEl(440.0, 10.0)
    clock.t_s += 5.0
    mount.stalled = True
    frozen = mount.position
    clock.t_s += 5.0
    assert mount.position == frozen
    mount.stalled = False
    mount.stop()
    clock.t_s += 5.0
    assert mount.position == frozen
    mount.park()
    clock.t_s += 100.0
    assert mount.position == AzEl(0.0, 90.0)


async def start_sim(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "groundkey_sim.cli",
        "rotator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, line.decode().strip()


async def stop_sim(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()[-500:]
    return proc.returncode


async def test_cli_tcp_with_accelerated_clock() -> None:
    """A SimClock at speed 20 moves the mount 20x faster in wall time."""
    proc, endpoint = await start_sim(
        "--protocol", "rotctld", "--listen", "tcp://127.0.0.1:0",
        "--clock", "sim:2016-12-18T21:00:00Z,speed=20", "--slew-rate-deg-s", "2,2",
    )  # fmt: skip
    try:
        assert endpoint.startswith("tcp://127.0.0.1:")
        assert not endpoint.endswith(":0")
        async with create_rotator("rotctld", endpoint, timeout_s=5.0) as rot:
            await rot.point(AzEl(90.0, 0.0))  # 45 s of simulated slewing
            async with asyncio.timeout(30):
                while True:
                    if await rot.position() == AzEl(90.0, 0.0):
                        break
                    await asyncio.sleep(0.1)
    finally:
        await stop_sim(proc)


async def test_cli_pty_link_survives_disconnect_fault(tmp_path: Path) -> None:
    link = tmp_path / "mount"
    proc, endpoint = await start_sim(
        "--protocol", "gs232b", "--pty", "--pty-link", str(link),
        "--max-az", "450", "--start", "400,10", "--fault", "disconnect@1.5", "--outage-s", "0.5",
    )  # fmt: skip
    try:
        assert endpoint == str(link)
        assert os.readlink(link).startswith("/dev/pts/")
        async with create_rotator(
            "gs232b", endpoint, timeout_s=1.0, limits=RotatorLimits(max_az_deg=450.0)
        ) as rot:
            assert await rot.position() == AzEl(400.0, 10.0)
            failed = False
            async with asyncio.timeout(30):  # through the outage and back on a new pty
                while True:
                    try:
                        position = await rot.position()
                    except (ConnectionError, TimeoutError):
                        failed = True
                    else:
                        if failed:
                            break
                    await asyncio.sleep(0.05)
            assert position == AzEl(400.0, 10.0)
    finally:
        await stop_sim(proc)


async def test_cli_rejects_bad_arguments() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groundkey_sim.cli", "rotator", "--protocol", "gs232b",
        "--listen", "udp://x:1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"tcp://HOST:PORT" in err
