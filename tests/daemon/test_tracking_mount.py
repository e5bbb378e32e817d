"""An in-process az/el mount with slew-rate physics for the tracking tests (and its own
tests), plus the overhead-pass geometry they share."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import numpy.typing as npt
import pytest

from groundkey_drivers.errors import DeviceDisconnected, DeviceError
from groundkey_drivers.rotator.base import Rotator
from groundkey_protocol.clock import Clock
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
from groundkey_protocol.orbit import Pass, Station, Tle, ground_track, parse_tle, predict_passes

MICIUS = parse_tle(
    "1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993\n"
    "2 41731  97.3699 267.4500 0013200 178.5836 246.0824 15.23915303 19063\n"
)[0]
XINGLONG = Station(40.3959, 117.5775, 893.0)
EPOCH = dt.datetime(2016, 12, 18, 21, 38, 11, tzinfo=dt.UTC)


def overhead_station(
    tle: Tle = MICIUS, offset_deg: float = 0.15, index: int = 1
) -> tuple[Station, Pass]:
    """A station just beside the ground track of a pass over Xinglong (1: the night one)."""
    first = predict_passes(tle, XINGLONG, EPOCH, 24.0, 10.0)[index]
    lat, lon = ground_track(tle, np.array([first.tca.timestamp()]))
    station = Station(float(lat[0]), float(lon[0]) + offset_deg, 893.0)
    passes = predict_passes(tle, station, first.aos - dt.timedelta(minutes=10), 0.5, 10.0)
    return station, passes[0]


class SimpleMount(Rotator):
    """Each axis moves toward its target at its slew rate, in the clock's time.

    Keeps every command as a segment so the test can replay the true trajectory.
    ``faults`` maps simulated times to the exception the next call after them raises
    (a DeviceDisconnected keeps raising until the mount is reopened).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        limits: RotatorLimits = RotatorLimits(max_az_deg=450.0),  # noqa: B008
        park: AzEl = AzEl(0.0, 90.0),  # noqa: B008
        rates: tuple[float, float] = (6.0, 6.0),
        faults: dict[float, type[DeviceError]] | None = None,
    ) -> None:
        super().__init__(name="testmount", limits=limits, park=park, slew_rate_deg_s=rates)
        self.clock = clock
        self.pos = park
        self.target = park
        self.t = clock.now_s()
        self.segments: list[tuple[float, AzEl, AzEl]] = [(self.t, park, park)]
        self.faults = dict(faults or {})
        self.connected = True
        self.opens = 0

    async def open(self) -> None:
        self.connected = True
        self.opens += 1

    async def close(self) -> None:
        self.connected = False

    def _advance(self) -> None:
        now = self.clock.now_s()
        dt_s = max(0.0, now - self.t)
        self.t = now
        az = _step(self.pos.az_deg, self.target.az_deg, self.slew_rate_deg_s[0] * dt_s)
        el = _step(self.pos.el_deg, self.target.el_deg, self.slew_rate_deg_s[1] * dt_s)
        self.pos = AzEl(az, el)

    def _maybe_fail(self) -> None:
        if not self.connected:
            raise DeviceDisconnected("gone", device=self.name)
        now = self.clock.now_s()
        for when in sorted(self.faults):
            if now >= when:
                exc = self.faults.pop(when)
                if exc is DeviceDisconnected:
                    self.connected = False
                raise exc("injected", device=self.name)

    async def _get_position(self) -> AzEl:
        self._maybe_fail()
        self._advance()
        return self.pos

    async def _set_position(self, target: AzEl) -> None:
        self._maybe_fail()
        self._advance()
        self.segments.append((self.t, self.pos, target))
        self.target = target

    async def _stop(self) -> None:
        self._advance()
        self.target = self.pos

    def trajectory(self, step_s: float = 0.05) -> tuple[npt.NDArray[np.float64], ...]:
        """(t, az, el) of the true motion, replayed from the commands at ``step_s``."""
        ts, azs, els = [], [], []
        ends = [s[0] for s in self.segments[1:]] + [self.clock.now_s()]
        for (t0, start, target), t1 in zip(self.segments, ends, strict=True):
            t = np.arange(t0, t1, step_s)
            ra, re = self.slew_rate_deg_s
            ts.append(t)
            azs.append(_steps(start.az_deg, target.az_deg, ra * (t - t0)))
            els.append(_steps(start.el_deg, target.el_deg, re * (t - t0)))
        return np.concatenate(ts), np.concatenate(azs), np.concatenate(els)


def _step(value: float, target: float, max_step: float) -> float:
    delta = target - value
    return target if abs(delta) <= max_step else value + math.copysign(max_step, delta)


def _steps(
    value: float, target: float, max_steps: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    delta = target - value
    return np.asarray(value + np.sign(delta) * np.minimum(max_steps, abs(delta)))


def test_simple_mount_slews_at_its_rates_in_clock_time() -> None:
    import asyncio

    from groundkey_protocol.clock import SimClock

    async def scenario() -> None:
        clock = SimClock(epoch=EPOCH, speed=200.0)
        mount = SimpleMount(clock, rates=(5.0, 2.0))
        await mount.point(AzEl(100.0, 70.0))
        t0 = mount.segments[-1][0]
        await asyncio.sleep(clock.wall_delay_s(10.0))
        halfway = await mount.position()  # 100 deg at 5 deg/s takes 20 s
        elapsed = mount.t - t0
        assert halfway.az_deg == pytest.approx(min(100.0, 5.0 * elapsed))
        assert halfway.el_deg == pytest.approx(max(70.0, 90.0 - 2.0 * elapsed))
        await asyncio.sleep(clock.wall_delay_s(21.0 - elapsed))
        assert await mount.position() == AzEl(100.0, 70.0)
        _, az, el = mount.trajectory(step_s=1.0)
        assert np.all(np.diff(az) >= 0)
        assert np.all(np.diff(el) <= 0)  # from park (el 90) down to 70

    asyncio.run(scenario())


def test_overhead_geometry() -> None:
    station, pass_ = overhead_station()
    assert pass_.max_el_deg > 85.0
    assert abs(station.lat_deg - XINGLONG.lat_deg) < 15.0
