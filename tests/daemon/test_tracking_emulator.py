"""The overhead pass again, through the real driver against the real emulator:
``groundkey-sim rotator`` in another process on TCP, sharing an accelerated SimClock."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from groundkey_daemon.tracking import Tracker, TrackingSettings, TrackSample
from groundkey_drivers.rotator.registry import create_rotator
from groundkey_protocol.clock import SimClock
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
from groundkey_protocol.orbit import predict_passes

from .test_tracking_mount import MICIUS, overhead_station

SIM = str(Path(sys.executable).parent / "groundkey-sim")


@contextlib.asynccontextmanager
async def emulator(protocol: str, clock: SimClock, start: AzEl) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        SIM,
        "rotator",
        "--protocol",
        protocol,
        "--listen",
        "tcp://127.0.0.1:0",
        "--clock",
        clock.spec(),
        "--max-az",
        "450",
        "--start",
        f"{start.az_deg},{start.el_deg}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
        yield line.decode().strip()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30.0)


@pytest.mark.parametrize("protocol", ["rotctld"])
async def test_overhead_pass_through_driver_and_emulator(protocol: str) -> None:
    station, full = overhead_station()
    pass_ = predict_passes(MICIUS, station, full.aos - dt.timedelta(minutes=5), 0.5, 30.0)[0]
    assert pass_.max_el_deg > 85.0
    clock = SimClock(epoch=pass_.aos - dt.timedelta(seconds=70), speed=40.0)
    settings = TrackingSettings(
        preposition_s=30.0, threshold_deg=1.0, max_wall_rate_hz=50.0, sun_avoid_deg=20.0
    )
    samples: list[TrackSample] = []
    async with emulator(protocol, clock, AzEl(200.0, 45.0)) as url:
        assert url.startswith("tcp://127.0.0.1:")
        rotator = create_rotator(
            protocol, url, limits=RotatorLimits(max_az_deg=450.0), timeout_s=5.0
        )
        async with rotator:
            tracker = Tracker(
                rotator, MICIUS, station, pass_, clock, settings, on_sample=samples.append
            )
            stats = await tracker.run()
    assert stats.strategy == "lead"
    assert stats.keyhole_s > 0.0
    assert stats.prepositioned
    assert stats.rotator_errors == 0
    assert stats.samples > 100
    assert stats.max_error_deg < settings.threshold_deg, stats.summary()
    assert stats.time_on_target_s >= stats.tracked_s - stats.keyhole_s - 2.0
    tracked = [s for s in samples if s.phase == "track" and s.reported is not None]
    assert all(0.0 <= s.reported.az_deg <= 450.0 for s in tracked if s.reported)
    assert stats.parked
