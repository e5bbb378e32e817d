"""Orbits: TLE parsing, pass prediction and look angles for a ground station.

Built on skyfield over python-sgp4 with the builtin timescale: nothing is ever
downloaded. Times are aware UTC datetimes or Unix seconds (float64 numpy arrays);
every function over times is vectorized. No refraction is applied (geometric
elevation), as for SGP4 tools like Gpredict.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from groundkey_protocol.errors import ProtocolError

__all__ = [
    "LookAngles",
    "Pass",
    "Station",
    "Tle",
    "ground_track",
    "look_angles",
    "parse_tle",
    "predict_passes",
    "separation_deg",
]

UTC = dt.UTC
FloatArray = npt.NDArray[np.float64]

_TLE_LINE_LENGTH = 69
_SEARCH_STEP_S = 30.0
_SEARCH_PAD_S = 3600.0


# --------------------------------------------------------------------------- TLE


@dataclass(frozen=True, slots=True)
class Tle:
    """One two-line element set (checked). ``epoch`` is an aware UTC datetime."""

    name: str
    line1: str
    line2: str
    norad_id: int
    epoch: dt.datetime
    inclination_deg: float
    mean_motion_rev_day: float

    def __str__(self) -> str:
        return f"{self.name or 'NORAD ' + str(self.norad_id)} (epoch {self.epoch:%Y-%m-%d %H:%M}Z)"


def _tle_error(lineno: int, message: str) -> ProtocolError:
    return ProtocolError(f"line {lineno}: {message}", protocol="tle")


def _checksum(line: str) -> int:
    total = 0
    for char in line[:68]:
        if char.isdigit():
            total += int(char)
        elif char == "-":
            total += 1
    return total % 10


def _field(line: str, lineno: int, start: int, stop: int, what: str) -> float:
    """Columns ``start..stop`` (1-based, inclusive, as in the TLE spec) as a float."""
    text = line[start - 1 : stop].strip()
    try:
        return float(text)
    except ValueError:
        raise _tle_error(
            lineno, f"bad {what} in columns {start}-{stop}: {line[start - 1 : stop]!r}"
        ) from None


def _check_line(line: str, lineno: int, number: int) -> None:
    if len(line) != _TLE_LINE_LENGTH:
        raise _tle_error(
            lineno, f"TLE line {number} must be {_TLE_LINE_LENGTH} characters, got {len(line)}"
        )
    if not line[68].isdigit():
        raise _tle_error(lineno, f"bad checksum character {line[68]!r} in column 69")
    expected = _checksum(line)
    if int(line[68]) != expected:
        raise _tle_error(lineno, f"bad checksum: column 69 is {line[68]}, computed {expected}")


def _parse_pair(name: str, line1: str, line2: str, lineno: int) -> Tle:
    """Validate lines ``lineno`` and ``lineno + 1`` and build a :class:`Tle`."""
    _check_line(line1, lineno, 1)
    _check_line(line2, lineno + 1, 2)
    norad1 = line1[2:7].strip()
    norad2 = line2[2:7].strip()
    if not norad1.isdigit():
        raise _tle_error(lineno, f"bad satellite number in columns 3-7: {line1[2:7]!r}")
    if norad1 != norad2:
        raise _tle_error(
            lineno + 1, f"satellite number {norad2!r} does not match line 1 ({norad1!r})"
        )
    year2 = _field(line1, lineno, 19, 20, "epoch year")
    day = _field(line1, lineno, 21, 32, "epoch day")
    if not 1.0 <= day < 367.0 or year2 != int(year2):
        raise _tle_error(lineno, f"bad epoch in columns 19-32: {line1[18:32]!r}")
    _field(line1, lineno, 34, 43, "mean motion derivative")
    inclination = _field(line2, lineno + 1, 9, 16, "inclination")
    raan = _field(line2, lineno + 1, 18, 25, "right ascension of the ascending node")
    ecc_text = line2[26:33]
    if not ecc_text.strip().isdigit():
        raise _tle_error(lineno + 1, f"bad eccentricity in columns 27-33: {ecc_text!r}")
    argp = _field(line2, lineno + 1, 35, 42, "argument of perigee")
    anomaly = _field(line2, lineno + 1, 44, 51, "mean anomaly")
    mean_motion = _field(line2, lineno + 1, 53, 63, "mean motion")
    for value, what, high in (
        (inclination, "inclination", 180.0),
        (raan, "right ascension of the ascending node", 360.0),
        (argp, "argument of perigee", 360.0),
        (anomaly, "mean anomaly", 360.0),
    ):
        if not 0.0 <= value <= high:
            raise _tle_error(lineno + 1, f"{what} {value} outside [0, {high:g}]")
    if not 0.0 < mean_motion < 20.0:
        raise _tle_error(lineno + 1, f"mean motion {mean_motion} rev/day is not an orbit")
    year = int(year2) + (1900 if year2 >= 57 else 2000)
    epoch = dt.datetime(year, 1, 1, tzinfo=UTC) + dt.timedelta(days=day - 1.0)
    try:
        _satellite(line1, line2)
    except (ValueError, IndexError) as exc:
        raise _tle_error(lineno, f"SGP4 rejects this element set: {exc}") from None
    return Tle(
        name=name,
        line1=line1,
        line2=line2,
        norad_id=int(norad1),
        epoch=epoch,
        inclination_deg=inclination,
        mean_motion_rev_day=mean_motion,
    )


def parse_tle(text: str) -> list[Tle]:
    """Parse two- or three-line element sets (any number, blank lines ignored).

    Raises :class:`ProtocolError` naming the (1-based) line and the problem.
    """
    lines = [(n, raw.rstrip()) for n, raw in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    found: list[Tle] = []
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        name = ""
        if not line.startswith(("1 ", "2 ")):
            name = line[2:].strip() if line.startswith("0 ") else line.strip()
            i += 1
            if i >= len(lines):
                raise _tle_error(lineno, f"name line {name!r} is not followed by TLE line 1")
            lineno, line = lines[i]
        if not line.startswith("1 "):
            raise _tle_error(lineno, f"expected TLE line 1 (starting '1 '), got {line[:20]!r}")
        if i + 1 >= len(lines):
            raise _tle_error(lineno, "TLE line 1 is not followed by line 2")
        lineno2, line2 = lines[i + 1]
        if not line2.startswith("2 "):
            raise _tle_error(lineno2, f"expected TLE line 2 (starting '2 '), got {line2[:20]!r}")
        if lineno2 != lineno + 1:
            raise _tle_error(lineno2, "TLE line 2 must directly follow line 1")
        found.append(_parse_pair(name, line, line2, lineno))
        i += 2
    if not found:
        raise ProtocolError("no TLE found", protocol="tle")
    return found


# --------------------------------------------------------------------------- station


@dataclass(frozen=True, slots=True)
class Station:
    """A ground station on the WGS84 ellipsoid."""

    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0

    def __post_init__(self) -> None:
        for value, what, low, high in (
            (self.lat_deg, "latitude", -90.0, 90.0),
            (self.lon_deg, "longitude", -180.0, 360.0),
            (self.alt_m, "altitude", -500.0, 10_000.0),
        ):
            if not (math.isfinite(value) and low <= value <= high):
                raise ProtocolError(f"station {what} {value} outside [{low:g}, {high:g}]")

    @classmethod
    def parse(cls, text: str) -> Station:
        """``"LAT,LON[,ALT_M]"`` in degrees north/east and metres."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (2, 3):
            raise ProtocolError(f"station must be LAT,LON,ALT_M, got {text!r}")
        values: list[float] = []
        for part, what in zip(parts, ("latitude", "longitude", "altitude"), strict=False):
            try:
                values.append(float(part))
            except ValueError:
                raise ProtocolError(f"station {what} is not a number: {part!r}") from None
        return cls(*values)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, slots=True)
class Pass:
    """One pass above ``min_el_deg``: AOS, TCA (culmination), LOS as aware UTC datetimes."""

    aos: dt.datetime
    tca: dt.datetime
    los: dt.datetime
    max_el_deg: float
    aos_az_deg: float
    tca_az_deg: float
    los_az_deg: float
    min_el_deg: float = 0.0

    @property
    def duration_s(self) -> float:
        return (self.los - self.aos).total_seconds()

    def as_json(self) -> dict[str, Any]:
        from groundkey_protocol.clock import format_utc

        return {
            "aos": format_utc(self.aos),
            "tca": format_utc(self.tca),
            "los": format_utc(self.los),
            "duration_s": round(self.duration_s, 3),
            "max_el_deg": round(self.max_el_deg, 3),
            "aos_az_deg": round(self.aos_az_deg, 3),
            "tca_az_deg": round(self.tca_az_deg, 3),
            "los_az_deg": round(self.los_az_deg, 3),
        }


@dataclass(frozen=True, slots=True, eq=False)
class LookAngles:
    """Topocentric direction of a satellite over an array of times (all arrays one shape)."""

    times_unix_s: FloatArray
    az_deg: FloatArray
    el_deg: FloatArray
    range_m: FloatArray
    range_rate_m_s: FloatArray
    az_rate_deg_s: FloatArray
    el_rate_deg_s: FloatArray


@functools.cache
def _timescale() -> Any:
    from skyfield.api import load

    return load.timescale(builtin=True)


@functools.lru_cache(maxsize=64)
def _satellite(line1: str, line2: str) -> Any:
    from skyfield.api import EarthSatellite

    return EarthSatellite(line1, line2, None, _timescale())


@functools.lru_cache(maxsize=64)
def _topos(station: Station) -> Any:
    from skyfield.api import wgs84

    return wgs84.latlon(station.lat_deg, station.lon_deg, elevation_m=station.alt_m)


def _times(times_unix_s: npt.ArrayLike) -> Any:
    """Skyfield Time for POSIX seconds (UTC days of exactly 86400 s)."""
    seconds = np.asarray(times_unix_s, dtype=np.float64)
    days = np.floor(seconds / 86400.0)
    return _timescale().utc(1970, 1, 1 + days, 0, 0, seconds - days * 86400.0)


def look_angles(tle: Tle, station: Station, times_unix_s: npt.ArrayLike) -> LookAngles:
    """Azimuth, elevation, range and range rate of ``tle`` seen from ``station``."""
    times = np.asarray(times_unix_s, dtype=np.float64)
    topos = _topos(station)
    relative = (_satellite(tle.line1, tle.line2) - topos).at(_times(times.ravel()))
    alt, az, distance, alt_rate, az_rate, range_rate = relative.frame_latlon_and_rates(topos)

    def shaped(values: Any) -> FloatArray:
        return np.asarray(values, dtype=np.float64).reshape(times.shape)

    return LookAngles(
        times_unix_s=times,
        az_deg=shaped(az.degrees) % 360.0,
        el_deg=shaped(alt.degrees),
        range_m=shaped(distance.m),
        range_rate_m_s=shaped(range_rate.m_per_s),
        az_rate_deg_s=shaped(az_rate.degrees.per_second),
        el_rate_deg_s=shaped(alt_rate.degrees.per_second),
    )


def ground_track(tle: Tle, times_unix_s: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Sub-satellite latitude and longitude (degrees, WGS84) at the given times."""
    from skyfield.api import wgs84

    times = np.asarray(times_unix_s, dtype=np.float64)
    geocentric = _satellite(tle.line1, tle.line2).at(_times(times.ravel()))
    lat, lon = wgs84.latlon_of(geocentric)
    return (
        np.asarray(lat.degrees, dtype=np.float64).reshape(times.shape),
        np.asarray(lon.degrees, dtype=np.float64).reshape(times.shape),
    )


def separation_deg(
    az1_deg: npt.ArrayLike, el1_deg: npt.ArrayLike, az2_deg: npt.ArrayLike, el2_deg: npt.ArrayLike
) -> FloatArray:
    """Great-circle angle between two az/el directions (Vincenty form, stable at 0 and 180)."""
    a1, e1, a2, e2 = (
        np.radians(np.asarray(x, dtype=np.float64)) for x in (az1_deg, el1_deg, az2_deg, el2_deg)
    )
    dlon = a2 - a1
    num = np.hypot(
        np.cos(e2) * np.sin(dlon), np.cos(e1) * np.sin(e2) - np.sin(e1) * np.cos(e2) * np.cos(dlon)
    )
    den = np.sin(e1) * np.sin(e2) + np.cos(e1) * np.cos(e2) * np.cos(dlon)
    return np.asarray(np.degrees(np.arctan2(num, den)), dtype=np.float64)


def _elevation(tle: Tle, station: Station, times_unix_s: FloatArray) -> FloatArray:
    topos = _topos(station)
    alt, _, _ = (_satellite(tle.line1, tle.line2) - topos).at(_times(times_unix_s)).altaz()
    return np.asarray(alt.degrees, dtype=np.float64)


def _crossing(
    tle: Tle, station: Station, lo: FloatArray, hi: FloatArray, level_deg: float, *, aos: bool
) -> FloatArray:
    """Bisect (all brackets at once) for el == level; ``lo`` and ``hi`` straddle it.

    A bracket that does not straddle (a satellite that never sets within the search
    padding) gives its outer end: ``lo`` for an AOS, ``hi`` for a LOS."""
    lo = lo.copy()
    hi = hi.copy()
    rising = _elevation(tle, station, lo) < level_deg
    straddle = rising != (_elevation(tle, station, hi) < level_deg)
    outer = lo.copy() if aos else hi.copy()
    while np.any(hi - lo > 1e-4):
        mid = 0.5 * (lo + hi)
        below = _elevation(tle, station, mid) < level_deg
        move_lo = below == rising
        lo = np.where(move_lo, mid, lo)
        hi = np.where(move_lo, hi, mid)
    return np.where(straddle, 0.5 * (lo + hi), outer)


def _culmination(tle: Tle, station: Station, lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Golden-section search (all brackets at once) for the elevation maximum."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo.copy(), hi.copy()
    c = b - ratio * (b - a)
    d = a + ratio * (b - a)
    fc = _elevation(tle, station, c)
    fd = _elevation(tle, station, d)
    while np.any(b - a > 1e-3):
        left = fc > fd  # the maximum lies in [a, d]
        a = np.where(left, a, c)
        b = np.where(left, d, b)
        new_c = np.where(left, b - ratio * (b - a), d)
        new_d = np.where(left, c, a + ratio * (b - a))
        # One new evaluation per bracket per step; the other point is reused.
        fp = _elevation(tle, station, np.where(left, new_c, new_d))
        fc, fd = np.where(left, fp, fd), np.where(left, fc, fp)
        c, d = new_c, new_d
    return 0.5 * (a + b)


def predict_passes(
    tle: Tle,
    station: Station,
    start: dt.datetime,
    hours: float,
    min_el_deg: float = 0.0,
) -> list[Pass]:
    """Passes above ``min_el_deg`` that are in view at some time in ``[start, start+hours]``.

    A pass already in progress at ``start`` is included with its true (earlier) AOS.
    AOS/LOS are accurate to better than 1 ms of the SGP4 model, TCA to ~10 ms.
    """
    if start.tzinfo is None:
        raise ProtocolError("predict_passes needs an aware (UTC) start time")
    if not (math.isfinite(hours) and 0.0 < hours <= 24.0 * 31):
        raise ProtocolError(f"hours must be in (0, 744], got {hours}")
    if not -5.0 <= min_el_deg < 90.0:
        raise ProtocolError(f"minimum elevation {min_el_deg} outside [-5, 90)")
    t0 = start.timestamp()
    t1 = t0 + hours * 3600.0
    grid = np.arange(t0 - _SEARCH_PAD_S, t1 + _SEARCH_PAD_S + _SEARCH_STEP_S, _SEARCH_STEP_S)
    el = _elevation(tle, station, grid)
    peak = np.flatnonzero((el[1:-1] >= el[:-2]) & (el[1:-1] > el[2:])) + 1
    # A peak between grid points can rise well above its samples near zenith.
    peak = peak[el[peak] > min_el_deg - 30.0]
    if peak.size == 0:
        return []
    tca = _culmination(tle, station, grid[peak - 1], grid[peak + 1])
    max_el = _elevation(tle, station, tca)
    keep = max_el >= min_el_deg
    peak, tca, max_el = peak[keep], tca[keep], max_el[keep]
    above = el >= min_el_deg
    aos_lo, aos_hi, los_lo, los_hi = [], [], [], []
    for i, t_max in zip(peak.tolist(), tca.tolist(), strict=True):
        m = i if grid[i] <= t_max else i - 1  # last grid point at or before TCA
        k = m
        while k > 0 and above[k]:
            k -= 1
        aos_lo.append(grid[k])
        aos_hi.append(grid[k + 1] if k + 1 <= m else t_max)
        k = m + 1
        while k < grid.size - 1 and above[k]:
            k += 1
        los_lo.append(grid[k - 1] if k - 1 >= m + 1 else t_max)
        los_hi.append(grid[k])
    aos = _crossing(tle, station, np.array(aos_lo), np.array(aos_hi), min_el_deg, aos=True)
    los = _crossing(tle, station, np.array(los_lo), np.array(los_hi), min_el_deg, aos=False)
    az = look_angles(tle, station, np.concatenate([aos, tca, los])).az_deg.reshape(3, -1)
    passes: list[Pass] = []
    seen: set[int] = set()
    for j in range(tca.size):
        if los[j] < t0 or aos[j] > t1 or round(aos[j]) in seen:
            continue
        seen.add(round(aos[j]))
        passes.append(
            Pass(
                aos=_datetime(aos[j]),
                tca=_datetime(tca[j]),
                los=_datetime(los[j]),
                max_el_deg=float(max_el[j]),
                aos_az_deg=float(az[0, j]),
                tca_az_deg=float(az[1, j]),
                los_az_deg=float(az[2, j]),
                min_el_deg=min_el_deg,
            )
        )
    return passes


def _datetime(unix_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(unix_s), tz=UTC)
