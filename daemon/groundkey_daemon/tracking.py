"""Tracking a pass with an az/el mount: plan, pre-position, track, park.

The pass is planned once, vectorized (:func:`plan_track`): satellite direction on
a fine time grid, azimuth unwrapped into the mount's travel (0-450° overlap, so a
pass never unwinds through 360° mid-track), a keyhole strategy for high passes
(flip over the zenith if the mount's elevation reaches ~180°, otherwise start the
azimuth swing early: a rate-limited, centred manoeuvre whose interval is marked
and excluded from the pointing statistics), and the sun-avoidance cone (commands
that would fall inside it are moved to the cone's edge; those samples are marked
as a sun hold).

:class:`Tracker` then runs the plan against a :class:`Rotator` on a
:class:`Clock` (a SimClock accelerates everything): it pre-positions to the AOS
point early enough for the slew, commands at ``rate_hz`` with lead-ahead (half a
cycle + measured link latency + slew lag + ``lead_s``), checks every slew path
against the sun cone (detouring through waypoints when the straight path would
cross it), measures pointing error against the true satellite direction, survives
rotator timeouts and disconnects (logged, reopened, retried next cycle), and
parks after LOS.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from groundkey_drivers.errors import DeviceDisconnected, DeviceError
from groundkey_protocol.clock import Clock
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
from groundkey_protocol.orbit import (
    Pass,
    Station,
    Tle,
    look_angles,
    predict_passes,
    separation_deg,
)
from groundkey_protocol.sun import sun_azel

if TYPE_CHECKING:
    from groundkey_daemon.config import Config
    from groundkey_drivers.rotator.base import Rotator

__all__ = [
    "PointingStats",
    "TrackPlan",
    "TrackSample",
    "Tracker",
    "TrackingSettings",
    "next_pass",
    "plan_track",
    "rotator_from_config",
    "safe_route",
    "slew_path",
]

log = logging.getLogger("groundkey.tracking")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Phase = Literal["preposition", "track", "park"]

_PLAN_STEP_S = 0.2
_RATE_MARGIN = 0.85  # plan manoeuvres at this fraction of the mount's slew rates
_ARRIVED_DEG = 0.75


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """Everything the tracker needs besides the mount, the orbit and the clock."""

    rate_hz: float = 5.0
    lead_s: float = 0.0
    preposition_s: float = 120.0
    threshold_deg: float = 1.0
    keyhole: Literal["auto", "flip", "lead", "none"] = "auto"
    keyhole_el_deg: float = 78.0
    sun_avoid_deg: float = 20.0
    sun_margin_deg: float = 1.0
    max_wall_rate_hz: float = 20.0
    command_timeout_s: float = 5.0  # wall seconds per rotator call, on top of the driver's

    @classmethod
    def from_config(cls, config: Config) -> TrackingSettings:
        t = config.tracking
        return cls(
            rate_hz=t.rate_hz,
            lead_s=t.lead_s,
            preposition_s=t.preposition_s,
            threshold_deg=t.threshold_deg,
            keyhole=t.keyhole,
            keyhole_el_deg=t.keyhole_el_deg,
            sun_avoid_deg=config.station.sun_avoid_deg,
            max_wall_rate_hz=t.max_wall_rate_hz,
            command_timeout_s=max(5.0, 3.0 * config.rotator.timeout_s),
        )


# --------------------------------------------------------------------------- geometry


def _unit(az_deg: npt.ArrayLike, el_deg: npt.ArrayLike) -> FloatArray:
    """Unit vectors (north, east, up); elevations above 90 (flip) work as they should."""
    az = np.radians(np.asarray(az_deg, dtype=np.float64))
    el = np.radians(np.asarray(el_deg, dtype=np.float64))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def _wrap180(deg: npt.ArrayLike) -> FloatArray:
    return np.asarray((np.asarray(deg, dtype=np.float64) + 180.0) % 360.0 - 180.0)


def slew_path(
    start: AzEl, end: AzEl, rates_deg_s: tuple[float, float], *, step_deg: float = 0.25
) -> tuple[FloatArray, FloatArray]:
    """Directions an az/el mount passes through from ``start`` to ``end``.

    Both axes start together and move at their own rate; the faster one stops first.
    """
    daz = end.az_deg - start.az_deg
    d_el = end.el_deg - start.el_deg
    t_end = max(abs(daz) / rates_deg_s[0], abs(d_el) / rates_deg_s[1], 1e-9)
    n = max(2, math.ceil(max(abs(daz), abs(d_el)) / step_deg) + 1)
    t = np.linspace(0.0, t_end, n)
    az = start.az_deg + np.sign(daz) * np.minimum(rates_deg_s[0] * t, abs(daz))
    el = start.el_deg + np.sign(d_el) * np.minimum(rates_deg_s[1] * t, abs(d_el))
    return az, el


def slew_time_s(start: AzEl, end: AzEl, rates_deg_s: tuple[float, float]) -> float:
    return max(
        abs(end.az_deg - start.az_deg) / rates_deg_s[0],
        abs(end.el_deg - start.el_deg) / rates_deg_s[1],
    )


def _path_clearance_deg(
    start: AzEl, end: AzEl, rates: tuple[float, float], sun: tuple[float, float]
) -> float:
    az, el = slew_path(start, end, rates)
    return float(np.min(separation_deg(az, el, sun[0], sun[1])))


def safe_route(
    start: AzEl,
    end: AzEl,
    *,
    sun: tuple[float, float],
    cone_deg: float,
    limits: RotatorLimits,
    rates_deg_s: tuple[float, float],
    margin_deg: float = 1.0,
) -> list[AzEl] | None:
    """Legs (ending with ``end``) whose slew paths all stay outside the sun cone.

    The direct path if it is clear; else the fastest route through one or two
    waypoints (single-axis moves first, then points around the cone). ``None`` if
    ``end`` itself is inside the cone or nothing found is clear.
    """
    if cone_deg <= 0.0:
        return [end]
    if float(separation_deg(end.az_deg, end.el_deg, sun[0], sun[1])) < cone_deg:
        return None
    if _path_clearance_deg(start, end, rates_deg_s, sun) >= cone_deg:
        return [end]
    el_top = min(limits.max_el_deg, 90.0)
    candidates = [
        AzEl(start.az_deg, end.el_deg),
        AzEl(end.az_deg, start.el_deg),
        AzEl(start.az_deg, el_top),
        AzEl(end.az_deg, el_top),
        AzEl(start.az_deg, max(limits.min_el_deg, 0.0)),
        AzEl(end.az_deg, max(limits.min_el_deg, 0.0)),
    ]
    ring = cone_deg + 3.0 * margin_deg
    sun_vec = _unit(sun[0], sun[1])
    helper = np.array([0.0, 0.0, 1.0]) if abs(sun_vec[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(sun_vec, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(sun_vec, e1)
    angles = np.radians(np.arange(0.0, 360.0, 20.0))
    ring_vecs = math.cos(math.radians(ring)) * sun_vec + math.sin(math.radians(ring)) * (
        np.cos(angles)[:, None] * e1 + np.sin(angles)[:, None] * e2
    )
    ring_az = np.degrees(np.arctan2(ring_vecs[:, 1], ring_vecs[:, 0]))
    ring_el = np.degrees(np.arcsin(np.clip(ring_vecs[:, 2], -1.0, 1.0)))
    for az, el in zip(ring_az.tolist(), ring_el.tolist(), strict=True):
        unwrapped = start.az_deg + float(_wrap180(az - start.az_deg))
        if limits.min_el_deg <= el <= limits.max_el_deg:
            candidates.append(AzEl(unwrapped, el))
    candidates = [c for c in candidates if limits.contains(c)]

    def clear(a: AzEl, b: AzEl) -> bool:
        return _path_clearance_deg(a, b, rates_deg_s, sun) >= cone_deg

    def cost(route: list[AzEl]) -> float:
        points = [start, *route]
        return sum(slew_time_s(a, b, rates_deg_s) for a, b in itertools.pairwise(points))

    routes: list[list[AzEl]] = []
    from_start = [c for c in candidates if clear(start, c)]
    to_end = [c for c in candidates if clear(c, end)]
    routes.extend([c, end] for c in from_start if c in to_end)
    if not routes:
        for first in from_start:
            routes.extend([first, second, end] for second in to_end if clear(first, second))
    return min(routes, key=cost) if routes else None


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True, eq=False)
class TrackPlan:
    """The commanded trajectory of one pass, in mount coordinates, on a time grid.

    ``cmd_*`` is what the mount is told (before lead-ahead), unwrapped into its
    azimuth travel and, in flip mode, with elevations beyond 90.
    """

    times_s: FloatArray
    sat_vec: FloatArray  # (n, 3) unit vectors north, east, up of the true satellite
    cmd_az_deg: FloatArray
    cmd_el_deg: FloatArray
    cmd_rate_az_deg_s: FloatArray
    cmd_rate_el_deg_s: FloatArray
    keyhole: BoolArray
    sun_hold: BoolArray
    flip: bool
    strategy: str

    @property
    def aos_s(self) -> float:
        return float(self.times_s[0])

    @property
    def los_s(self) -> float:
        return float(self.times_s[-1])

    def _interp(self, t_s: float, values: FloatArray) -> float:
        return float(np.interp(t_s, self.times_s, values))

    def _flag(self, t_s: float, mask: BoolArray) -> bool:
        i = int(np.clip(np.searchsorted(self.times_s, t_s), 0, self.times_s.size - 1))
        return bool(mask[i])

    def command_at(self, t_s: float) -> AzEl:
        return AzEl(self._interp(t_s, self.cmd_az_deg), self._interp(t_s, self.cmd_el_deg))

    def satellite_at(self, t_s: float) -> AzEl:
        """The true satellite direction (sky coordinates: az 0-360, el <= 90)."""
        v = np.array([self._interp(t_s, self.sat_vec[:, k]) for k in range(3)])
        v /= np.linalg.norm(v)
        az = math.degrees(math.atan2(float(v[1]), float(v[0]))) % 360.0
        return AzEl(az, math.degrees(math.asin(float(np.clip(v[2], -1.0, 1.0)))))

    def command_rate_at(self, t_s: float) -> tuple[float, float]:
        return (
            self._interp(t_s, self.cmd_rate_az_deg_s),
            self._interp(t_s, self.cmd_rate_el_deg_s),
        )

    def in_keyhole(self, t_s: float) -> bool:
        return self._flag(t_s, self.keyhole)

    def in_sun_hold(self, t_s: float) -> bool:
        return self._flag(t_s, self.sun_hold)

    @property
    def keyhole_s(self) -> float:
        return float(np.count_nonzero(self.keyhole)) * float(self.times_s[1] - self.times_s[0])


def _rate_limit(values: FloatArray, step_s: float, rate_deg_s: float) -> FloatArray:
    """Centred rate limit: mean of a forward (lagging) and backward (leading) limiter.

    Equal to ``values`` wherever they are slow enough; where not, the manoeuvre
    starts early and ends late by the same amount (the classic keyhole swing).
    """
    max_step = rate_deg_s * step_s
    n = values.size
    fwd = np.empty(n)
    bwd = np.empty(n)
    fwd[0] = values[0]
    bwd[-1] = values[-1]
    for i in range(1, n):  # planning only: once per pass, a few thousand samples
        fwd[i] = fwd[i - 1] + min(max(values[i] - fwd[i - 1], -max_step), max_step)
        j = n - 1 - i
        bwd[j] = bwd[j + 1] + min(max(values[j] - bwd[j + 1], -max_step), max_step)
    return np.asarray(0.5 * (fwd + bwd))


def _choose_offset(az: FloatArray, limits: RotatorLimits, near_az_deg: float) -> float | None:
    """A multiple of 360 that fits the unwrapped track into the limits (nearest first)."""
    best: tuple[float, float] | None = None
    for k in range(-3, 4):
        offset = 360.0 * k
        low = float(az.min()) + offset
        high = float(az.max()) + offset
        if low >= limits.min_az_deg - 1e-9 and high <= limits.max_az_deg + 1e-9:
            distance = abs(float(az[0]) + offset - near_az_deg)
            if best is None or distance < best[0]:
                best = (distance, offset)
    return None if best is None else best[1]


def _normal_track(
    az_sky: FloatArray, el_sky: FloatArray, limits: RotatorLimits, near_az_deg: float
) -> tuple[FloatArray, FloatArray, bool]:
    """Unwrapped mount azimuth; ``True`` if the whole track fits the azimuth travel."""
    az = np.degrees(np.unwrap(np.radians(az_sky)))
    offset = _choose_offset(az, limits, near_az_deg)
    if offset is not None:
        return az + offset, el_sky.copy(), True
    # Travel under 360 + track span: wrap into the limits; the jump becomes a
    # rate-limited unwind, marked like a keyhole manoeuvre.
    wrapped = limits.min_az_deg + (az - limits.min_az_deg) % 360.0
    return np.minimum(wrapped, limits.max_az_deg), el_sky.copy(), False


def _over_the_top_track(
    az_sky: FloatArray, el_sky: FloatArray, limits: RotatorLimits, near_az_deg: float
) -> tuple[FloatArray, FloatArray]:
    """Flip mode for mounts with 180 deg of elevation: each direction in whichever of
    (az, el) and (az + 180, 180 - el) is nearer the azimuth of the vertical plane that
    best fits the pass; above 60 deg, where azimuth swings fast and costs little, the
    azimuth is interpolated across (the elevation runs over the zenith)."""
    v = _unit(az_sky, el_sky)
    horizontal = v[:, :2]
    _, vectors = np.linalg.eigh(horizontal.T @ horizontal)
    normal = vectors[:, 0]  # the smallest eigenvalue: the plane's horizontal normal
    along = np.array([normal[1], -normal[0]])
    if float(horizontal[0] @ along) < 0.0:
        along = -along  # face the AOS point
    plane_az = math.degrees(math.atan2(along[1], along[0]))
    flipped = np.abs(_wrap180(az_sky - plane_az)) > 90.0
    az = plane_az + _wrap180(np.where(flipped, az_sky + 180.0, az_sky) - plane_az)
    el = np.where(flipped, 180.0 - el_sky, el_sky)
    high = el_sky >= 60.0
    if np.any(high) and not np.all(high):
        index = np.arange(az.size)
        az[high] = np.interp(index[high], index[~high], az[~high])
        # Keep the pointing on the satellite's elevation circle's plane: project.
        h = np.stack([np.cos(np.radians(az)), np.sin(np.radians(az))], axis=-1)
        el = np.degrees(np.arctan2(v[:, 2], np.sum(horizontal * h, axis=-1)))
    offset = _choose_offset(az, limits, near_az_deg) or 0.0
    return az + offset, el


def _manoeuvre(
    cmd_az: FloatArray, cmd_el: FloatArray, sat_vec: FloatArray, step: float, tol_deg: float
) -> BoolArray:
    """Samples where the planned command leaves the satellite by more than ``tol_deg``,
    widened by a second on each side for the mount to settle onto the track."""
    cmd_vec = _unit(cmd_az, cmd_el)
    cos = np.clip(np.sum(cmd_vec * sat_vec, axis=-1), -1.0, 1.0)
    off = np.degrees(np.arccos(cos)) > tol_deg
    widen = math.ceil(1.0 / step)
    if np.any(off):
        off = np.convolve(off, np.ones(2 * widen + 1), mode="same") > 0
    return np.asarray(off, dtype=bool)


def _edge_of_cone(
    az: FloatArray,
    el: FloatArray,
    sun_az: FloatArray,
    sun_el: FloatArray,
    radius_deg: float,
    can_flip: bool,
) -> tuple[FloatArray, FloatArray]:
    """Move directions closer than ``radius_deg`` to the Sun onto the cone's edge, in the
    mount representation (normal or over the top) closest to the original command."""
    v = _unit(az, el)
    s = _unit(sun_az, sun_el)
    perp = v - np.sum(v * s, axis=-1, keepdims=True) * s
    norm = np.linalg.norm(perp, axis=-1)
    # Exactly at the Sun: keep the side of the last good sample.
    for i in np.flatnonzero(norm < 1e-9):
        perp[i] = perp[i - 1] if i > 0 else np.cross(s[i], [0.0, 0.0, 1.0])
    perp /= np.linalg.norm(perp, axis=-1, keepdims=True)
    r = math.radians(radius_deg)
    edge = math.cos(r) * s + math.sin(r) * perp
    new_az = np.degrees(np.arctan2(edge[:, 1], edge[:, 0]))
    new_el = np.degrees(np.arcsin(np.clip(edge[:, 2], -1.0, 1.0)))
    new_az = az + _wrap180(new_az - az)
    if can_flip:
        flip_az = az + _wrap180(new_az + 180.0 - az)
        flip_el = 180.0 - new_el
        better = np.abs(flip_az - az) + np.abs(flip_el - el) < np.abs(new_az - az) + np.abs(
            new_el - el
        )
        new_az = np.where(better, flip_az, new_az)
        new_el = np.where(better, flip_el, new_el)
    return new_az, new_el


def plan_track(
    tle: Tle,
    station: Station,
    pass_: Pass,
    *,
    limits: RotatorLimits,
    rates_deg_s: tuple[float, float],
    settings: TrackingSettings,
    near_az_deg: float = 0.0,
    step_s: float = _PLAN_STEP_S,
) -> TrackPlan:
    """Plan the commanded trajectory from AOS to LOS (see the module docstring).

    Strategies: ``none`` commands the satellite as is; ``lead`` rate-limits both axes
    with a centred manoeuvre (the keyhole swing starts early); ``flip`` (mounts with
    elevation travel to ~180) holds the azimuth of the pass's plane and runs the
    elevation over the zenith. ``auto`` picks, for passes above ``keyhole_el_deg``,
    whichever of lead and flip leaves the satellite for the least time.
    """
    t0, t1 = pass_.aos.timestamp(), pass_.los.timestamp()
    n = max(2, math.ceil((t1 - t0) / step_s) + 1)
    times = np.linspace(t0, t1, n)
    step = float(times[1] - times[0])
    look = look_angles(tle, station, times)
    sat_vec = _unit(look.az_deg, look.el_deg)
    high = pass_.max_el_deg >= settings.keyhole_el_deg
    can_flip = limits.max_el_deg >= 180.0 - max(float(look.el_deg.min()), limits.min_el_deg)
    tol = 0.25 * settings.threshold_deg
    rates = (rates_deg_s[0] * _RATE_MARGIN, rates_deg_s[1] * _RATE_MARGIN)

    def lead() -> tuple[FloatArray, FloatArray, BoolArray]:
        az, el, _ = _normal_track(look.az_deg, look.el_deg, limits, near_az_deg)
        az, el = _rate_limit(az, step, rates[0]), _rate_limit(el, step, rates[1])
        return az, el, _manoeuvre(az, el, sat_vec, step, tol)

    def flip() -> tuple[FloatArray, FloatArray, BoolArray]:
        az, el = _over_the_top_track(look.az_deg, look.el_deg, limits, near_az_deg)
        az, el = _rate_limit(az, step, rates[0]), _rate_limit(el, step, rates[1])
        return az, el, _manoeuvre(az, el, sat_vec, step, tol)

    strategy = settings.keyhole
    if strategy == "flip" and not can_flip:
        log.warning("flip needs elevation travel to ~180 deg; leading the swing instead")
        strategy = "lead"
    if strategy == "none":
        cmd_az, cmd_el, fits = _normal_track(look.az_deg, look.el_deg, limits, near_az_deg)
        keyhole = np.zeros(n, dtype=bool)
        if not fits:  # an unwind through the azimuth travel cannot be avoided
            cmd_az, cmd_el, keyhole = lead()
    elif strategy == "lead" or (strategy == "auto" and not (high and can_flip)):
        cmd_az, cmd_el, keyhole = lead()
        strategy = "lead" if np.any(keyhole) or strategy == "lead" else "none"
    elif strategy == "flip":
        cmd_az, cmd_el, keyhole = flip()
    else:  # auto, high pass, flip possible: the one that stays on the satellite longer
        lead_plan, flip_plan = lead(), flip()
        use_flip = np.count_nonzero(flip_plan[2]) < np.count_nonzero(lead_plan[2])
        cmd_az, cmd_el, keyhole = flip_plan if use_flip else lead_plan
        strategy = "flip" if use_flip else "lead"
    sun_hold = np.zeros(n, dtype=bool)
    if settings.sun_avoid_deg > 0.0:
        sun_az, sun_el = sun_azel(station, times)
        if float(sun_el.max()) > -settings.sun_avoid_deg:
            sun_hold = separation_deg(look.az_deg, look.el_deg, sun_az, sun_el) < (
                settings.sun_avoid_deg
            )
            radius = settings.sun_avoid_deg + settings.sun_margin_deg
            close = separation_deg(cmd_az, cmd_el, sun_az, sun_el) < radius
            if np.any(close):
                cmd_az[close], cmd_el[close] = _edge_of_cone(
                    cmd_az[close], cmd_el[close], sun_az[close], sun_el[close], radius, can_flip
                )
                sun_hold |= close
    cmd_az = np.clip(cmd_az, limits.min_az_deg, limits.max_az_deg)
    cmd_el = np.clip(cmd_el, limits.min_el_deg, limits.max_el_deg)
    return TrackPlan(
        times_s=times,
        sat_vec=sat_vec,
        cmd_az_deg=cmd_az,
        cmd_el_deg=cmd_el,
        cmd_rate_az_deg_s=np.gradient(cmd_az, step),
        cmd_rate_el_deg_s=np.gradient(cmd_el, step),
        keyhole=keyhole & ~sun_hold,
        sun_hold=sun_hold,
        flip=strategy == "flip",
        strategy=strategy,
    )


# --------------------------------------------------------------------------- run


@dataclass(frozen=True, slots=True)
class TrackSample:
    """One tracking cycle, for progress lines and telemetry."""

    time_s: float
    phase: Phase
    commanded: AzEl | None
    reported: AzEl | None
    satellite: AzEl
    error_deg: float  # reported vs true satellite direction (great circle), nan if no report
    command_error_deg: float  # commanded vs reported
    keyhole: bool
    sun_hold: bool
    sun_separation_deg: float  # of the reported direction
    #: the cycle ran late: its reply came more than half a cycle after its tick (a
    #: blocked event loop or a slow device; under a fast SimClock, any wall hiccup)
    late: bool = False


@dataclass(slots=True)
class PointingStats:
    """Pointing quality of a pass.

    ``max_error_deg``/RMS cover on-schedule cycles outside the keyhole manoeuvre and
    sun holds; those are reported on their own (``keyhole_*``, ``sun_hold_s``,
    ``late_*``). ``time_on_target_s`` counts every cycle within the threshold."""

    threshold_deg: float
    samples: int = 0
    max_error_deg: float = 0.0
    sum_sq_error: float = 0.0
    max_command_error_deg: float = 0.0
    time_on_target_s: float = 0.0
    tracked_s: float = 0.0
    keyhole_s: float = 0.0
    keyhole_max_error_deg: float = 0.0
    sun_hold_s: float = 0.0
    no_report_s: float = 0.0
    min_sun_separation_deg: float = 180.0
    late_cycles: int = 0
    late_max_error_deg: float = 0.0
    rotator_errors: int = 0
    reconnects: int = 0
    sun_detours: int = 0
    prepositioned: bool = False
    preposition_error_deg: float = math.nan
    parked: bool = False
    aborted: str = ""  # why the pass was cut short (Tracker.abort), "" if it was not
    flip: bool = False
    strategy: str = "none"
    latency_s: float = 0.0
    cycle_s: float = 0.0

    @property
    def rms_error_deg(self) -> float:
        return math.sqrt(self.sum_sq_error / self.samples) if self.samples else math.nan

    def add(self, sample: TrackSample, weight_s: float) -> None:
        self.tracked_s += weight_s
        if sample.reported is None:
            self.no_report_s += weight_s
            return
        self.min_sun_separation_deg = min(self.min_sun_separation_deg, sample.sun_separation_deg)
        if sample.sun_hold:
            self.sun_hold_s += weight_s
            return
        if sample.keyhole:
            self.keyhole_s += weight_s
            self.keyhole_max_error_deg = max(self.keyhole_max_error_deg, sample.error_deg)
            return
        if sample.error_deg <= self.threshold_deg:
            self.time_on_target_s += weight_s
        if sample.late:  # scheduling, not pointing: reported on its own
            self.late_cycles += 1
            self.late_max_error_deg = max(self.late_max_error_deg, sample.error_deg)
            return
        self.samples += 1
        self.max_error_deg = max(self.max_error_deg, sample.error_deg)
        self.sum_sq_error += sample.error_deg**2
        self.max_command_error_deg = max(self.max_command_error_deg, sample.command_error_deg)

    def summary(self) -> dict[str, Any]:
        return {
            "max_error_deg": round(self.max_error_deg, 4),
            "rms_error_deg": round(self.rms_error_deg, 4),
            "threshold_deg": self.threshold_deg,
            "time_on_target_s": round(self.time_on_target_s, 2),
            "tracked_s": round(self.tracked_s, 2),
            "keyhole_s": round(self.keyhole_s, 2),
            "keyhole_max_error_deg": round(self.keyhole_max_error_deg, 3),
            "sun_hold_s": round(self.sun_hold_s, 2),
            "min_sun_separation_deg": round(self.min_sun_separation_deg, 2),
            "late_cycles": self.late_cycles,
            "late_max_error_deg": round(self.late_max_error_deg, 3),
            "rotator_errors": self.rotator_errors,
            "reconnects": self.reconnects,
            "sun_detours": self.sun_detours,
            "prepositioned": self.prepositioned,
            "parked": self.parked,
            "aborted": self.aborted,
            "strategy": self.strategy,
            "samples": self.samples,
        }


@dataclass(slots=True)
class _CallResult:
    ok: bool
    value: Any = None


@dataclass(slots=True)
class Tracker:
    """Runs one pass: ``stats = await Tracker(...).run()``. The rotator must be open."""

    rotator: Rotator
    tle: Tle
    station: Station
    pass_: Pass
    clock: Clock
    settings: TrackingSettings = field(default_factory=TrackingSettings)
    on_sample: Callable[[TrackSample], None] | None = None
    plan: TrackPlan | None = None
    stats: PointingStats = field(init=False)
    _latency_s: float = field(init=False, default=0.0)
    _in_sun_hold: bool = field(init=False, default=False)
    _reopen: bool = field(init=False, default=False)
    _last_reported: AzEl | None = field(init=False, default=None)
    _abort: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.stats = PointingStats(threshold_deg=self.settings.threshold_deg)

    def abort(self, reason: str) -> None:
        """Cut the pass short: stop pre-positioning or tracking now, then park (by a
        sun-safe route, as at LOS). :meth:`run` returns once the mount is parked."""
        if not self._abort.is_set():
            log.info("tracking aborted: %s", reason)
            self.stats.aborted = reason
            self._abort.set()

    @property
    def cycle_s(self) -> float:
        """Simulated seconds per cycle: ``1/rate_hz``, capped in wall rate for fast clocks."""
        s = self.settings
        return max(1.0 / s.rate_hz, self.clock.speed / s.max_wall_rate_hz)

    @property
    def _rates(self) -> tuple[float, float]:
        return self.rotator.slew_rate_deg_s

    async def run(self) -> PointingStats:
        """Pre-position, track from AOS to LOS, park. Rotator errors never abort it."""
        self.stats.cycle_s = self.cycle_s
        start = await self._position()
        if self.plan is None:
            self.plan = plan_track(
                self.tle,
                self.station,
                self.pass_,
                limits=self.rotator.limits,
                rates_deg_s=self._rates,
                settings=self.settings,
                near_az_deg=(start or self.rotator.park_position).az_deg,
            )
        plan = self.plan
        self.stats.flip = plan.flip
        self.stats.strategy = plan.strategy
        log.info(
            "tracking %s: AOS %s, max el %.1f deg, strategy %s, planned keyhole %.1f s",
            self.tle.name or self.tle.norad_id,
            self.pass_.aos.isoformat(timespec="seconds"),
            self.pass_.max_el_deg,
            plan.strategy,
            plan.keyhole_s,
        )
        if not self._abort.is_set():
            await self._preposition(plan, start)
        if not self._abort.is_set():
            await self._track(plan)
        await self._park()
        return self.stats

    # -- rotator calls that never raise ----------------------------------------

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> _CallResult:
        try:
            if self._reopen:
                async with asyncio.timeout(self.settings.command_timeout_s):
                    await self.rotator.close()
                async with asyncio.timeout(self.settings.command_timeout_s):
                    await self.rotator.open()
                self._reopen = False
                self.stats.reconnects += 1
                log.info("%s: reconnected", self.rotator.name)
            async with asyncio.timeout(self.settings.command_timeout_s):
                value = await fn(*args)
        except (DeviceError, TimeoutError, OSError) as exc:
            self.stats.rotator_errors += 1
            if isinstance(exc, DeviceDisconnected | ConnectionError) or not isinstance(
                exc, DeviceError
            ):
                self._reopen = True
            log.warning("%s: %s failed (retrying next cycle): %s", self.rotator.name, what, exc)
            return _CallResult(False)
        return _CallResult(True, value)

    async def _position(self) -> AzEl | None:
        result = await self._call("position", self.rotator.position)
        if result.ok:
            self._last_reported = result.value
        return self._last_reported if result.ok else None

    def _sun(self, t_s: float) -> tuple[float, float]:
        az, el = sun_azel(self.station, np.array([t_s]))
        return float(az[0]), float(el[0])

    def _route(self, start: AzEl | None, end: AzEl, t_s: float) -> list[AzEl] | None:
        """Sun-safe legs from ``start`` (unknown: assume the last reported) to ``end``."""
        cone = self.settings.sun_avoid_deg
        if cone <= 0.0:
            return [end]
        origin = start or self._last_reported
        sun = self._sun(t_s)
        if origin is None:
            ok = float(separation_deg(end.az_deg, end.el_deg, *sun)) >= cone
            return [end] if ok else None
        return safe_route(
            origin,
            end,
            sun=sun,
            cone_deg=cone,
            limits=self.rotator.limits,
            rates_deg_s=self._rates,
            margin_deg=self.settings.sun_margin_deg,
        )

    async def _sleep_until(self, t_s: float, *, parking: bool = False) -> None:
        """Sleep until simulated time ``t_s``; an abort ends the sleep, except when parking."""
        delay = self.clock.wall_delay_until_s(t_s)
        if delay <= 0:
            return
        if parking:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._abort.wait()

    def _cut_short(self, phase: Phase) -> bool:
        return phase != "park" and self._abort.is_set()

    async def _goto(self, target: AzEl, deadline_s: float, phase: Phase) -> bool:
        """Slew (sun-safely, leg by leg) to ``target``; True once reported there (False
        at the deadline, or at once if the pass is aborted while not parking)."""
        parking = phase == "park"
        while self.clock.now_s() < deadline_s and not self._cut_short(phase):
            now = self.clock.now_s()
            route = self._route(self._last_reported, target, now)
            if route is None:
                log.warning("no sun-safe route to az %.1f el %.1f; holding", *_pair(target))
                await self._stop()
                await self._sleep_until(min(now + 5.0, deadline_s), parking=parking)
                continue
            leg = route[0]
            if len(route) > 1:
                self.stats.sun_detours += 1
                log.info("sun avoidance: detour via az %.1f el %.1f", *_pair(leg))
            if not (await self._call("point", self.rotator.point, leg)).ok:
                await self._sleep_until(min(now + self.cycle_s, deadline_s), parking=parking)
                continue
            while self.clock.now_s() < deadline_s and not self._cut_short(phase):
                await self._sleep_until(self.clock.now_s() + self.cycle_s, parking=parking)
                reported = await self._position()
                if reported is not None:
                    self._emit_idle(phase, leg, reported)
                if reported is not None and _close(reported, leg):
                    break
                if reported is None and self._reopen:
                    break  # resend the leg after reconnecting
            else:
                return False
            if leg == target:
                return True
        return False

    async def _stop(self) -> None:
        await self._call("stop", self.rotator.stop)

    def _emit_idle(self, phase: Phase, commanded: AzEl, reported: AzEl) -> None:
        now = self.clock.now_s()
        sun = self._sun(now)
        sun_sep = float(separation_deg(reported.az_deg, reported.el_deg, *sun))
        self.stats.min_sun_separation_deg = min(self.stats.min_sun_separation_deg, sun_sep)
        if self.on_sample is not None:
            error = float(separation_deg(commanded.az_deg, commanded.el_deg, *_pair(reported)))
            self._emit(
                TrackSample(
                    time_s=now,
                    phase=phase,
                    commanded=commanded,
                    reported=reported,
                    satellite=commanded,
                    error_deg=error,
                    command_error_deg=error,
                    keyhole=False,
                    sun_hold=False,
                    sun_separation_deg=sun_sep,
                )
            )

    async def _preposition(self, plan: TrackPlan, start: AzEl | None) -> None:
        s = self.settings
        if self.clock.now_s() >= plan.aos_s:
            log.warning("pass in progress: joining it without pre-positioning")
            return
        target = plan.command_at(plan.aos_s)
        origin = start or self.rotator.park_position
        slew_s = slew_time_s(origin, target, self._rates)
        begin = plan.aos_s - max(s.preposition_s, 1.5 * slew_s + 10.0)
        await self._sleep_until(begin)
        log.info(
            "pre-positioning to az %.1f el %.1f (%.0f s slew)", target.az_deg, target.el_deg, slew_s
        )
        self.stats.prepositioned = await self._goto(target, plan.aos_s, "preposition")
        if not self.stats.prepositioned:
            log.warning("mount not at the AOS point by AOS")
        reported = self._last_reported
        if reported is not None:
            self.stats.preposition_error_deg = float(
                separation_deg(*_pair(reported), *_pair(plan.satellite_at(plan.aos_s)))
            )
        await self._sleep_until(plan.aos_s)

    async def _track(self, plan: TrackPlan) -> None:
        cycle = self.cycle_s
        next_tick = max(plan.aos_s, self.clock.now_s())
        last_t: float | None = None
        while True:
            await self._sleep_until(next_tick)
            now = self.clock.now_s()
            if now >= plan.los_s or self._abort.is_set():
                break
            await self._cycle(plan, now, cycle, last_t, next_tick)
            last_t = now
            next_tick += cycle
            if next_tick < self.clock.now_s():
                next_tick = self.clock.now_s()

    async def _cycle(
        self, plan: TrackPlan, now: float, cycle: float, last_t: float | None, tick: float
    ) -> None:
        rate_az, rate_el = plan.command_rate_at(now)
        ra, re = self._rates
        slew_lag = min(cycle, 0.5 * cycle * max(abs(rate_az) / ra, abs(rate_el) / re))
        lead = self.settings.lead_s + 0.5 * cycle + self._latency_s + slew_lag
        target = plan.command_at(min(now + lead, plan.los_s))
        command: AzEl | None = target
        route = self._route(None, target, now)
        if route is None:
            command = None
        elif len(route) > 1:
            command = route[0]
            self.stats.sun_detours += 1
        if command is not None:
            await self._call("point", self.rotator.point, command)
        t_query = self.clock.now_s()
        reported = await self._position()
        t_reply = self.clock.now_s()
        if reported is not None:
            one_way = 0.5 * (t_reply - t_query)
            self._latency_s = (
                one_way if self._latency_s == 0.0 else (0.8 * self._latency_s + 0.2 * one_way)
            )
            self.stats.latency_s = self._latency_s
        t_pos = 0.5 * (t_query + t_reply)
        satellite = plan.satellite_at(t_pos)
        sun = self._sun(t_pos)
        if reported is not None:
            error = float(separation_deg(*_pair(reported), *_pair(satellite)))
            sun_sep = float(separation_deg(*_pair(reported), *sun))
            cmd_error = (
                float(separation_deg(*_pair(command), *_pair(reported)))
                if command is not None
                else math.nan
            )
        else:
            error = cmd_error = sun_sep = math.nan
        if command is not None:
            sun_sep_cmd = float(separation_deg(*_pair(command), *sun))
            self.stats.min_sun_separation_deg = min(self.stats.min_sun_separation_deg, sun_sep_cmd)
        sample = TrackSample(
            time_s=t_pos,
            phase="track",
            commanded=command,
            reported=reported,
            satellite=satellite,
            error_deg=error,
            command_error_deg=cmd_error,
            keyhole=plan.in_keyhole(t_pos),
            sun_hold=plan.in_sun_hold(t_pos) or command is None,
            sun_separation_deg=sun_sep,
            late=t_reply - tick > 0.5 * cycle,
        )
        weight = cycle if last_t is None else min(now - last_t, 2.0 * cycle)
        self.stats.add(sample, weight)
        if sample.sun_hold != self._in_sun_hold:
            self._in_sun_hold = sample.sun_hold
            if sample.sun_hold:
                log.warning(
                    "satellite inside the %g deg sun cone: holding on the cone's edge",
                    self.settings.sun_avoid_deg,
                )
            else:
                log.info("satellite out of the sun cone: tracking again")
        self._emit(sample)

    def _emit(self, sample: TrackSample) -> None:
        """Hand a sample to ``on_sample``; a failing callback never stops the tracking."""
        if self.on_sample is None:
            return
        try:
            self.on_sample(sample)
        except Exception:
            log.exception("on_sample callback failed")

    async def _park(self) -> None:
        park = self.rotator.park_position
        origin = self._last_reported or park
        budget = 2.0 * slew_time_s(origin, park, self._rates) + 30.0
        why = f"aborted ({self.stats.aborted})" if self.stats.aborted else "LOS"
        log.info("%s: parking at az %.1f el %.1f", why, park.az_deg, park.el_deg)
        self.stats.parked = await self._goto(park, self.clock.now_s() + budget, "park")
        if self.stats.parked:
            log.info("parked at az %.1f el %.1f", park.az_deg, park.el_deg)
        else:
            log.error("parking failed: not at az %.1f el %.1f in time", park.az_deg, park.el_deg)


def _pair(value: AzEl) -> tuple[float, float]:
    return value.az_deg, value.el_deg


def _close(a: AzEl, b: AzEl) -> bool:
    return abs(a.az_deg - b.az_deg) <= _ARRIVED_DEG and abs(a.el_deg - b.el_deg) <= _ARRIVED_DEG


# --------------------------------------------------------------------------- helpers


def next_pass(
    tle: Tle,
    station: Station,
    start: dt.datetime,
    *,
    min_el_deg: float,
    hours: float = 48.0,
    dark_sun_el_deg: float | None = None,
) -> tuple[Pass, list[tuple[Pass, float]]]:
    """The next pass still in view 30 s after ``start`` (optionally only with the Sun below
    ``dark_sun_el_deg`` at TCA) and the passes skipped for daylight with the Sun's
    elevation. Raises LookupError when there is none in ``hours``."""
    skipped: list[tuple[Pass, float]] = []
    for candidate in predict_passes(tle, station, start, hours, min_el_deg):
        if candidate.los < start + dt.timedelta(seconds=30):
            continue  # a pass in progress is joined (a restart must not lose it)
        if dark_sun_el_deg is not None:
            _, sun_el = sun_azel(station, np.array([candidate.tca.timestamp()]))
            if float(sun_el[0]) > dark_sun_el_deg:
                skipped.append((candidate, float(sun_el[0])))
                continue
        return candidate, skipped
    raise LookupError(f"no pass of {tle} above {min_el_deg:g} deg within {hours:g} h")


def rotator_from_config(config: Config) -> Rotator:
    """The driver named by ``[rotator]`` (not opened). ConfigError on a bad URL/protocol."""
    from groundkey_daemon.errors import ConfigError
    from groundkey_drivers.rotator.registry import create_rotator

    r = config.rotator
    if not r.url:
        raise ConfigError("rotator.url: required (serial:///dev/ttyUSB0?baud=9600 or tcp://...)")
    try:
        return create_rotator(
            r.protocol,
            r.url,
            name=r.name,
            limits=r.limits(),
            park=r.park(),
            slew_rate_deg_s=r.slew_rate_deg_s(),
            timeout_s=r.timeout_s,
        )
    except ValueError as exc:
        raise ConfigError(f"rotator: {exc}") from None
