"""Where the Sun is, analytically (no ephemeris file, nothing downloaded).

The low-precision formula of the Astronomical Almanac ("Sun", section C; also
Meeus, *Astronomical Algorithms*, ch. 25 low accuracy): apparent right ascension
and declination to ~0.01° for 1950-2050. Local sidereal time uses UTC for UT1
(|DUT1| < 0.9 s, i.e. < 0.004°). Elevation is geometric (no refraction, no
parallax: 8.8"), which is what a sun-avoidance cone needs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from groundkey_protocol.orbit import Station

__all__ = ["sun_azel", "sun_radec_deg"]

FloatArray = npt.NDArray[np.float64]

_J2000_JD = 2451545.0
_UNIX_EPOCH_JD = 2440587.5


def _days_since_j2000(times_unix_s: npt.ArrayLike) -> FloatArray:
    seconds = np.asarray(times_unix_s, dtype=np.float64)
    return seconds / 86400.0 + (_UNIX_EPOCH_JD - _J2000_JD)


def sun_radec_deg(times_unix_s: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Apparent geocentric right ascension and declination of the Sun, degrees."""
    n = _days_since_j2000(times_unix_s)
    mean_lon = np.radians((280.460 + 0.9856474 * n) % 360.0)
    anomaly = np.radians((357.528 + 0.9856003 * n) % 360.0)
    ecl_lon = mean_lon + np.radians(1.915 * np.sin(anomaly) + 0.020 * np.sin(2.0 * anomaly))
    obliquity = np.radians(23.439 - 0.0000004 * n)
    ra = np.arctan2(np.cos(obliquity) * np.sin(ecl_lon), np.cos(ecl_lon))
    dec = np.arcsin(np.sin(obliquity) * np.sin(ecl_lon))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def sun_azel(station: Station, times_unix_s: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Azimuth (from north through east) and elevation of the Sun, degrees, vectorized."""
    n = _days_since_j2000(times_unix_s)
    ra_deg, dec_deg = sun_radec_deg(times_unix_s)
    gmst_deg = (280.46061837 + 360.98564736629 * n) % 360.0
    hour = np.radians(gmst_deg + station.lon_deg - ra_deg)
    dec = np.radians(dec_deg)
    lat = np.radians(station.lat_deg)
    el = np.arcsin(np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(hour))
    az = np.arctan2(
        -np.sin(hour) * np.cos(dec),
        np.cos(lat) * np.sin(dec) - np.sin(lat) * np.cos(dec) * np.cos(hour),
    )
    return np.degrees(az) % 360.0, np.degrees(el)
