"""The overhead pass again, through the real driver against the real emulator:
``groundkey-sim rotator`` in another process on TCP, sharing an accelerated SimClock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import sys
import time
from collections.abc import AsyncIterator, Sequence
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
async def emulator(
    protocol: str, clock: SimClock, start: AzEl, extra: Sequence[str] = ()
) -> AsyncIterator[str]:
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
        *extra,
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
    # The shared clock starts (anchor) once the emulator is surely up.
    clock = SimClock(
        epoch=pass_.aos - dt.timedelta(seconds=70), speed=25.0, anchor_wall_s=time.time() + 1.5
    )
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
    assert stats.late_cycles < 0.1 * stats.samples
    assert stats.time_on_target_s >= 0.9 * (stats.tracked_s - stats.keyhole_s)
    tracked = [s for s in samples if s.phase == "track" and s.reported is not None]
    assert all(0.0 <= s.reported.az_deg <= 450.0 for s in tracked if s.reported)
    assert stats.parked


def test_track_cli_against_the_emulator(tmp_path: Path) -> None:
    """``groundkey track --config`` end to end: next pass above 60 deg of elevation
    (the 84.5 deg pass of 2016-12-20, a keyhole pass) with a GS-232B emulator."""
    import json
    import subprocess

    from groundkey_protocol.orbit import Station

    xinglong = Station(40.3959, 117.5775, 893.0)
    start = dt.datetime(2016, 12, 20, 12, 0, tzinfo=dt.UTC)
    pass_ = predict_passes(MICIUS, xinglong, start, 12.0, 60.0)[0]
    assert pass_.max_el_deg == pytest.approx(84.5, abs=0.1)
    clock = SimClock(
        epoch=pass_.aos - dt.timedelta(seconds=120), speed=50.0, anchor_wall_s=time.time() + 3.0
    )
    tle = Path(__file__).parents[2] / "config" / "tle" / "micius.tle"

    async def scenario() -> subprocess.CompletedProcess[str]:
        async with emulator("gs232b", clock, AzEl(0.0, 90.0)) as url:
            config = tmp_path / "station.toml"
            config.write_text(
                f"[station]\nmin_el_deg = 60.0\ntle_files = ['{tle}']\n"
                f"[rotator]\nprotocol = 'gs232b'\nurl = '{url}'\n"
                "[tracking]\nthreshold_deg = 1.5\npreposition_s = 0.0\nmax_wall_rate_hz = 50.0\n"
            )
            argv = [str(Path(sys.executable).parent / "groundkey"), "track", "--json"]
            return await asyncio.to_thread(
                subprocess.run,
                [*argv, "--config", str(config), "--clock", clock.spec()],
                capture_output=True,
                text=True,
                timeout=100,
                check=False,
            )

    proc = asyncio.run(scenario())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("next pass of MICIUS (QUESS)")
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["strategy"] == "lead"
    assert summary["prepositioned"]
    assert summary["parked"]
    assert summary["max_error_deg"] < 1.5
    assert summary["tracked_s"] > pass_.duration_s - 3.0


async def test_emulator_disconnect_mid_pass_is_survived() -> None:
    """The emulator drops the TCP link mid-pass (``--fault disconnect@S``): the pass
    goes on, the errors are counted, tracking resumes and the mount parks."""
    station, full = overhead_station(offset_deg=2.0)
    pass_ = predict_passes(MICIUS, station, full.aos - dt.timedelta(minutes=5), 0.5, 30.0)[0]
    pass_ = dataclasses.replace(pass_, los=pass_.aos + dt.timedelta(seconds=240))
    clock = SimClock(epoch=pass_.aos - dt.timedelta(seconds=30), speed=60.0)
    settings = TrackingSettings(preposition_s=20.0, max_wall_rate_hz=50.0, sun_avoid_deg=0.0)
    samples: list[TrackSample] = []
    # In wall seconds after the emulator's start-up: 0.5 s of pre-roll, then 4 s of
    # pass; the outage starts 1 s into the pass (later if the start-up was slow).
    extra = ["--fault", "disconnect@1.5", "--outage-s", "0.5"]
    async with emulator("gs232b", clock, AzEl(pass_.aos_az_deg, 30.0), extra) as url:
        rotator = create_rotator(
            "gs232b", url, limits=RotatorLimits(max_az_deg=450.0), timeout_s=1.0
        )
        async with rotator:
            tracker = Tracker(
                rotator, MICIUS, station, pass_, clock, settings, on_sample=samples.append
            )
            stats = await tracker.run()
    assert stats.rotator_errors >= 1
    reported = [s for s in samples if s.phase == "track" and s.reported is not None]
    gap_end = max(s.time_s for s in samples if s.phase == "track" and s.reported is None)
    assert [s for s in reported if s.time_s > gap_end]  # tracking resumed after the outage
    assert stats.tracked_s > 235.0
    assert stats.parked


def test_track_cli_ctrl_c_parks_the_mount(tmp_path: Path) -> None:
    """Ctrl-C during ``groundkey track``: the pass ends, the mount parks (the emulator
    reports the park position), the summary says why, and the exit code is 0."""
    import json
    import signal

    from groundkey_protocol.orbit import Station

    xinglong = Station(40.3959, 117.5775, 893.0)
    start = dt.datetime(2016, 12, 20, 12, 0, tzinfo=dt.UTC)
    pass_ = predict_passes(MICIUS, xinglong, start, 12.0, 60.0)[0]
    clock = SimClock(
        epoch=pass_.aos - dt.timedelta(seconds=60), speed=50.0, anchor_wall_s=time.time() + 3.0
    )
    tle = Path(__file__).parents[2] / "config" / "tle" / "micius.tle"

    async def scenario() -> tuple[int, str, str]:
        async with emulator("gs232b", clock, AzEl(0.0, 90.0)) as url:
            config = tmp_path / "station.toml"
            config.write_text(
                f"[station]\nmin_el_deg = 60.0\ntle_files = ['{tle}']\n"
                f"[rotator]\nprotocol = 'gs232b'\nurl = '{url}'\n"
                "[tracking]\nthreshold_deg = 1.5\npreposition_s = 0.0\nmax_wall_rate_hz = 50.0\n"
            )
            argv = [str(Path(sys.executable).parent / "groundkey"), "track", "--json"]
            proc = await asyncio.create_subprocess_exec(
                *argv, "--config", str(config), "--clock", clock.spec(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                # 20 s into the pass (simulated), well before LOS
                await asyncio.sleep(clock.wall_delay_until_s(pass_.aos.timestamp() + 20.0))
                proc.send_signal(signal.SIGINT)
                out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            out, err = out_b.decode(), err_b.decode()
            assert proc.returncode is not None
            return proc.returncode, out, err

    code, out, err = asyncio.run(scenario())
    assert code == 0, err
    assert "SIGINT: parking" in err
    summary = json.loads(out.splitlines()[-1])
    assert summary["aborted"] == "SIGINT"
    assert summary["parked"]
    assert summary["tracked_s"] < 40.0  # of a 72 s pass, interrupted at 20 s
