"""Tracking loop against an in-process mount with slew-rate physics on a fast SimClock.

The mount records every command, so the tests replay its true trajectory and check
what matters: on target outside the keyhole manoeuvre, pre-positioned before AOS,
never inside the sun cone (whole slew paths), and robust to rotator faults.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import numpy as np
import pytest

from groundkey_daemon.tracking import (
    Tracker,
    TrackingSettings,
    TrackSample,
    next_pass,
    plan_track,
    safe_route,
    slew_path,
)
from groundkey_drivers.errors import DeviceDisconnected, DeviceError, DeviceTimeout
from groundkey_protocol.clock import SimClock
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
from groundkey_protocol.orbit import Pass, Station, predict_passes, separation_deg
from groundkey_protocol.sun import sun_azel

from .test_tracking_mount import EPOCH, MICIUS, XINGLONG, SimpleMount, overhead_station

SPEED = 30.0  # simulated s per wall s: slow enough for a loaded 2-core CI machine
THRESHOLD_DEG = 1.0


def _settings(**overrides: object) -> TrackingSettings:
    base = TrackingSettings(
        rate_hz=5.0,
        preposition_s=30.0,
        threshold_deg=THRESHOLD_DEG,
        max_wall_rate_hz=100.0,
        sun_avoid_deg=20.0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


async def _track(
    station: Station,
    pass_: Pass,
    *,
    limits: RotatorLimits,
    lead_in_s: float,
    settings: TrackingSettings | None = None,
    faults: dict[float, type[DeviceError]] | None = None,
    rates: tuple[float, float] = (6.0, 6.0),
    park: AzEl = AzEl(0.0, 90.0),  # noqa: B008
) -> tuple[Tracker, SimpleMount, list[TrackSample]]:
    clock = SimClock(epoch=pass_.aos - dt.timedelta(seconds=lead_in_s), speed=SPEED)
    mount = SimpleMount(clock, limits=limits, rates=rates, faults=faults, park=park)
    samples: list[TrackSample] = []
    tracker = Tracker(
        mount, MICIUS, station, pass_, clock, settings or _settings(), on_sample=samples.append
    )
    await tracker.run()
    return tracker, mount, samples


def _high_part(station: Station, pass_: Pass, min_el: float = 30.0) -> Pass:
    return predict_passes(MICIUS, station, pass_.aos - dt.timedelta(minutes=5), 0.5, min_el)[0]


async def test_overhead_pass_lead_keyhole_on_target_and_prepositioned() -> None:
    station, full = overhead_station()
    pass_ = _high_part(station, full)
    assert pass_.max_el_deg > 85.0
    limits = RotatorLimits(max_az_deg=450.0, max_el_deg=90.0)
    tracker, mount, samples = await _track(station, pass_, limits=limits, lead_in_s=110.0)
    stats = tracker.stats
    assert tracker.plan is not None
    assert stats.strategy == "lead"
    assert stats.keyhole_s > 0.0  # the swing is started early and its interval excluded
    assert stats.samples > 150
    assert stats.max_error_deg < THRESHOLD_DEG, stats.summary()
    assert stats.rms_error_deg < THRESHOLD_DEG / 2
    tracked = [s for s in samples if s.phase == "track"]
    outside = [s for s in tracked if not (s.keyhole or s.sun_hold or s.late)]
    assert max(s.error_deg for s in outside) < THRESHOLD_DEG
    assert stats.late_cycles < 0.1 * stats.samples  # late cycles are reported apart
    assert stats.time_on_target_s >= 0.9 * (stats.tracked_s - stats.keyhole_s)
    # Pre-positioned: at the AOS point (az and el) before AOS.
    aos_s = pass_.aos.timestamp()
    t, az, el = mount.trajectory()
    before = (t > aos_s - 3.0) & (t < aos_s)
    aos_cmd = tracker.plan.command_at(aos_s)
    assert before.any()
    assert np.all(np.abs(az[before] - aos_cmd.az_deg) < 0.5)
    assert np.all(np.abs(el[before] - aos_cmd.el_deg) < 0.5)
    assert abs((aos_cmd.az_deg - pass_.aos_az_deg + 180.0) % 360.0 - 180.0) < 0.5
    assert stats.prepositioned
    # The pass crosses north: the overlap keeps the azimuth continuous (no unwind).
    during = (t >= aos_s) & (t <= pass_.los.timestamp())
    assert np.all((az >= 0.0) & (az <= 450.0))
    assert np.max(np.abs(np.diff(az[during]))) < 1.0
    assert stats.parked
    # parked = arrived within the tracker's arrival tolerance (0.75 deg)
    assert abs(mount.pos.az_deg) <= 0.75, mount.pos
    assert abs(mount.pos.el_deg - 90.0) <= 0.75, mount.pos


async def test_overhead_pass_flip_mode_over_the_zenith() -> None:
    station, full = overhead_station(offset_deg=0.05)
    pass_ = _high_part(station, full)
    assert pass_.max_el_deg > 89.0
    limits = RotatorLimits(max_az_deg=450.0, max_el_deg=180.0)
    tracker, _mount, samples = await _track(station, pass_, limits=limits, lead_in_s=40.0)
    stats = tracker.stats
    assert stats.strategy == "flip"
    assert stats.max_error_deg < THRESHOLD_DEG, stats.summary()
    # Over the top instead of a fast azimuth swing: el beyond 90, azimuth nearly still.
    tracked = [s for s in samples if s.phase == "track" and s.reported is not None]
    assert max(s.reported.el_deg for s in tracked if s.reported) > 120.0
    az = np.array([s.reported.az_deg for s in tracked if s.reported])
    assert np.ptp(az) < 15.0
    assert stats.keyhole_max_error_deg < 1.5


async def test_sun_cone_never_entered_on_a_daytime_pass() -> None:
    # 2016-12-19 ~03:46 UTC, noon at Xinglong: Micius rises at az ~174, right below
    # the winter Sun (az ~175, el ~26), passing 3 deg from it ~100 s after AOS: the
    # first ~155 s of the track are inside a 20 deg cone.
    full = predict_passes(MICIUS, XINGLONG, EPOCH, 12.0, 10.0)[0]
    pass_ = dataclasses.replace(full, los=full.aos + dt.timedelta(seconds=230))
    limits = RotatorLimits(max_az_deg=450.0)
    # Parked at az 200 el 40: the straight slew to the AOS point crosses the cone.
    tracker, mount, samples = await _track(
        XINGLONG, pass_, limits=limits, lead_in_s=65.0, park=AzEl(200.0, 40.0)
    )
    stats = tracker.stats
    assert tracker.plan is not None
    aos_s = pass_.aos.timestamp()
    direct_az, direct_el = slew_path(AzEl(200.0, 40.0), tracker.plan.command_at(aos_s), (6, 6))
    sun_at_aos = sun_azel(XINGLONG, aos_s)
    assert float(np.min(separation_deg(direct_az, direct_el, *sun_at_aos))) < 20.0
    assert stats.sun_detours >= 1
    assert stats.prepositioned
    assert tracker.plan.sun_hold.any()
    assert stats.sun_hold_s > 10.0
    t, az, el = mount.trajectory(step_s=0.02)
    sun_az, sun_el = sun_azel(XINGLONG, t)
    assert float(np.min(separation_deg(az, el, sun_az, sun_el))) >= 20.0
    assert stats.min_sun_separation_deg >= 20.0
    # Once out of the cone, on target.
    tracked = [s for s in samples if s.phase == "track" and not (s.sun_hold or s.keyhole or s.late)]
    assert len(tracked) > 50
    assert max(s.error_deg for s in tracked) < THRESHOLD_DEG


async def test_rotator_timeouts_and_disconnect_do_not_abort_the_pass() -> None:
    station, full = overhead_station(offset_deg=2.0)
    pass_ = _high_part(station, full)
    pass_ = dataclasses.replace(pass_, los=pass_.aos + dt.timedelta(seconds=90))
    aos = pass_.aos.timestamp()
    faults: dict[float, type[DeviceError]] = {
        aos + 10.0: DeviceTimeout,
        aos + 20.0: DeviceTimeout,
        aos + 30.0: DeviceDisconnected,
        aos + 50.0: DeviceTimeout,
    }
    limits = RotatorLimits(max_az_deg=450.0)
    tracker, mount, samples = await _track(
        station, pass_, limits=limits, lead_in_s=40.0, faults=faults
    )
    stats = tracker.stats
    assert not mount.faults  # every fault fired
    assert stats.rotator_errors >= 4
    assert stats.reconnects >= 1
    assert mount.opens >= 1
    assert [s for s in samples if s.phase == "track" and s.time_s > aos + 60.0]
    assert stats.tracked_s > 85.0
    assert stats.parked


def test_safe_route_detours_around_the_sun() -> None:
    limits = RotatorLimits(max_az_deg=450.0)
    sun = (180.0, 30.0)
    start, end = AzEl(150.0, 30.0), AzEl(210.0, 30.0)
    route = safe_route(start, end, sun=sun, cone_deg=20.0, limits=limits, rates_deg_s=(6.0, 6.0))
    assert route is not None
    assert len(route) >= 2
    assert route[-1] == end
    for a, b in zip([start, *route[:-1]], route, strict=True):
        az, el = slew_path(a, b, (6.0, 6.0))
        assert float(np.min(separation_deg(az, el, *sun))) >= 20.0
    clear = safe_route(
        start, AzEl(150.0, 60.0), sun=sun, cone_deg=20.0, limits=limits, rates_deg_s=(6.0, 6.0)
    )
    assert clear == [AzEl(150.0, 60.0)]
    inside = safe_route(
        start, AzEl(185.0, 30.0), sun=sun, cone_deg=20.0, limits=limits, rates_deg_s=(6.0, 6.0)
    )
    assert inside is None


def test_slew_path_moves_axes_at_their_rates() -> None:
    az, el = slew_path(AzEl(0.0, 10.0), AzEl(60.0, 20.0), (6.0, 2.0))
    assert az[0] == 0.0
    assert el[0] == 10.0
    assert az[-1] == 60.0
    assert el[-1] == 20.0
    # Elevation (10 deg at 2 deg/s) is still moving when azimuth (10 s) arrives together.
    assert np.all(np.diff(az) >= 0)
    assert np.all(np.diff(el) >= 0)


@pytest.mark.parametrize(("max_az", "unwind"), [(450.0, False), (360.0, True)])
def test_plan_uses_the_azimuth_overlap(max_az: float, unwind: bool) -> None:
    # The night pass over Xinglong rises at az ~0 and sets at ~211, crossing north.
    pass_ = predict_passes(MICIUS, XINGLONG, EPOCH, 24.0, 10.0)[1]
    assert pass_.aos_az_deg < 5.0
    assert pass_.los_az_deg > 200.0
    plan = plan_track(
        MICIUS,
        XINGLONG,
        pass_,
        limits=RotatorLimits(max_az_deg=max_az),
        rates_deg_s=(6.0, 6.0),
        settings=_settings(),
    )
    assert np.all((plan.cmd_az_deg >= 0.0) & (plan.cmd_az_deg <= max_az))
    assert plan.keyhole.any() == unwind
    if not unwind:
        assert plan.strategy == "none"
        assert np.max(np.abs(np.diff(plan.cmd_az_deg))) < 1.0


def test_settings_from_config() -> None:
    from groundkey_daemon.config import config_from_dict

    config = config_from_dict(
        {"station": {"sun_avoid_deg": 30.0}, "tracking": {"rate_hz": 10.0, "keyhole": "lead"}}
    )
    settings = TrackingSettings.from_config(config)
    assert settings.sun_avoid_deg == 30.0
    assert settings.rate_hz == 10.0
    assert settings.keyhole == "lead"


async def test_pass_in_progress_is_joined() -> None:
    """A restart mid-pass must not lose the pass: next_pass returns it, the tracker
    skips pre-positioning, catches up and tracks to LOS."""
    first = predict_passes(MICIUS, XINGLONG, EPOCH, 24.0, 10.0)[1]
    joined, skipped = next_pass(MICIUS, XINGLONG, first.tca, min_el_deg=10.0)
    assert abs((joined.aos - first.aos).total_seconds()) < 0.01
    assert skipped == []
    later, _ = next_pass(MICIUS, XINGLONG, first.los, min_el_deg=10.0)
    assert later.aos > first.los
    pass_ = dataclasses.replace(first, los=first.tca + dt.timedelta(seconds=60))
    clock = SimClock(epoch=first.tca, speed=SPEED)
    mount = SimpleMount(clock, limits=RotatorLimits(max_az_deg=450.0), park=AzEl(270.0, 40.0))
    samples: list[TrackSample] = []
    tracker = Tracker(mount, MICIUS, XINGLONG, pass_, clock, _settings(), samples.append)
    stats = await tracker.run()
    assert not stats.prepositioned
    assert stats.tracked_s > 45.0  # from when it got going (planning takes sim time too)
    settled = [s for s in samples if s.phase == "track" and s.time_s > first.tca.timestamp() + 30]
    assert settled
    assert max(s.error_deg for s in settled if not s.late) < THRESHOLD_DEG
    assert stats.parked


@pytest.mark.parametrize("phase", ["preposition", "track"])
async def test_abort_cuts_the_pass_short_and_parks(phase: str) -> None:
    station, full = overhead_station(offset_deg=2.0)
    pass_ = _high_part(station, full)
    aos = pass_.aos.timestamp()
    clock = SimClock(epoch=pass_.aos - dt.timedelta(seconds=40.0), speed=SPEED)
    mount = SimpleMount(clock, limits=RotatorLimits(max_az_deg=450.0), park=AzEl(0.0, 90.0))
    samples: list[TrackSample] = []
    tracker = Tracker(mount, MICIUS, station, pass_, clock, _settings(), samples.append)
    run = asyncio.create_task(tracker.run())
    at_s = aos - 20.0 if phase == "preposition" else aos + 20.0
    await asyncio.sleep(clock.wall_delay_until_s(at_s))
    assert not run.done()
    tracker.abort("operator request")
    stats = await asyncio.wait_for(run, 60.0)
    aborted_at = clock.now_s()
    assert stats.aborted == "operator request"
    assert stats.parked
    assert abs(mount.pos.az_deg) <= 0.75, mount.pos
    assert abs(mount.pos.el_deg - 90.0) <= 0.75, mount.pos
    # nothing tracked after the abort
    assert pass_.los.timestamp() - aborted_at > 60.0  # parked long before LOS
    assert all(s.phase == "park" for s in samples if s.time_s > at_s + 1.0)
    assert stats.summary()["aborted"] == "operator request"
