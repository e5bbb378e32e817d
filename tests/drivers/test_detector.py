"""The SCPI detector driver against ``groundkey-sim detector --pty`` (another process)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from groundkey_drivers.detector import (
    InterlockError,
    InterlockEvent,
    InterlockLimits,
    open_detector,
)
from groundkey_drivers.detector.scpi import ScpiDetector
from groundkey_drivers.errors import DeviceRejected
from groundkey_protocol.devices import detector as scpi


@pytest.fixture
def detector_pty() -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "groundkey_sim.cli",
            "detector",
            "--pty",
            "--tau-s",
            "0.3",
            "--latch-cps",
            "3e7",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    path = proc.stdout.readline().strip()
    try:
        assert path.startswith("/dev/pts/"), path
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


async def test_bias_only_after_temperature_settles(detector_pty: str) -> None:
    async with open_detector(f"serial://{detector_pty}?baud=115200") as det:
        assert isinstance(det, ScpiDetector)
        assert (await det.identify()).startswith("IDQ,ID120-SIM,")
        await det.configure(bias_voltage_v=25.0, threshold_v=0.3, dead_time_ns=50)
        await det.set_temperature_c(-50.0)
        with pytest.raises(InterlockError, match="not settled"):
            await det.arm()
        assert not await det.bias_on()
        temp = await det.wait_settled(timeout_s=30)
        assert abs(temp + 50.0) <= 0.5
        await det.arm()
        assert await det.bias_on()
        rate = await det.count_rate_hz()
        assert 0 < rate < 1000  # dark counts only


async def test_bright_light_drops_bias_within_one_poll(detector_pty: str) -> None:
    events: list[InterlockEvent] = []
    seen = asyncio.Event()

    def report(event: InterlockEvent) -> None:
        events.append(event)
        seen.set()

    limits = InterlockLimits(saturation_cps=15e6, poll_s=0.05)
    det = ScpiDetector(detector_pty, limits=limits, on_event=report)
    async with det:
        await det.set_temperature_c(-50.0)
        await det.wait_settled(timeout_s=30)
        await det.arm()
        assert await det.check() < 15e6  # a poll under normal light keeps bias
        await det._set(scpi.SIM_LIGHT, 8e7)  # simulator-only: flood the detector
        await det.check()  # the very next poll
        assert not await det.bias_on()
        assert len(events) == 1
        assert events[0].kind == "saturation"
        assert events[0].count_rate_hz > 15e6

        # the background watcher does the same on its own
        await det._set(scpi.SIM_LIGHT, 1e3)
        seen.clear()
        await det.arm()
        watcher = asyncio.create_task(det.watch())
        try:
            await det._set(scpi.SIM_LIGHT, 8e7)
            await asyncio.wait_for(seen.wait(), 30)
        finally:
            watcher.cancel()
            with pytest.raises(asyncio.CancelledError):
                await watcher
        assert not await det.bias_on()
        assert len(events) == 2


async def test_out_of_range_setting_refused_before_sending(detector_pty: str) -> None:
    async with open_detector(detector_pty) as det:
        with pytest.raises(DeviceRejected, match="outside"):
            await det.configure(bias_voltage_v=500)
        with pytest.raises(DeviceRejected, match="unknown setting"):
            await det.configure(gain=3)
