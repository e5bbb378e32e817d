"""The analytic Sun against published values and an independent frame rotation."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from groundkey_protocol.orbit import Station
from groundkey_protocol.sun import sun_azel, sun_radec_deg

XINGLONG = Station(40.3959, 117.5775, 893.0)


def _unix(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC).timestamp()


def test_meeus_example_25a() -> None:
    # Meeus, Astronomical Algorithms (2nd ed.), example 25.a: 1992 Oct 13.0 TD,
    # apparent RA 13h13m31.4s = 198.38083 deg, Dec -7d47m06s = -7.78507 deg.
    # TT - UTC in Oct 1992 = 32.184 s + 27 leap seconds.
    t = _unix(1992, 10, 13) - 59.184
    ra, dec = sun_radec_deg(np.array([t]))
    assert ra[0] == pytest.approx(198.38083, abs=0.01)
    assert dec[0] == pytest.approx(-7.78507, abs=0.01)


def test_solstice_and_equinox_declination() -> None:
    # December solstice 2016-12-21 10:44 UTC, March equinox 2017-03-20 10:29 UTC (USNO).
    _, dec = sun_radec_deg(np.array([_unix(2016, 12, 21, 10, 44), _unix(2017, 3, 20, 10, 29)]))
    assert dec[0] == pytest.approx(-23.437, abs=0.01)
    assert dec[1] == pytest.approx(0.0, abs=0.01)


def test_azel_matches_independent_rotation() -> None:
    times = _unix(2016, 12, 18) + np.arange(0.0, 2 * 86400.0, 600.0)
    az, el = sun_azel(XINGLONG, times)
    ra, dec = np.radians(sun_radec_deg(times))
    # Independent: equatorial unit vector -> rotate by GMST (IAU 1982, seconds form)
    # into Earth-fixed -> east/north/up at the station.
    t = (times / 86400.0 + 2440587.5 - 2451545.0) / 36525.0
    gmst = np.radians(((67310.54841 + (876600.0 * 3600.0 + 8640184.812866) * t) % 86400.0) / 240.0)
    x = np.cos(dec) * np.cos(ra - gmst)
    y = np.cos(dec) * np.sin(ra - gmst)
    z = np.sin(dec)
    lat, lon = math.radians(XINGLONG.lat_deg), math.radians(XINGLONG.lon_deg)
    east = -math.sin(lon) * x + math.cos(lon) * y
    north = (
        -math.sin(lat) * math.cos(lon) * x - math.sin(lat) * math.sin(lon) * y + math.cos(lat) * z
    )
    up = math.cos(lat) * math.cos(lon) * x + math.cos(lat) * math.sin(lon) * y + math.sin(lat) * z
    assert az.shape == el.shape == times.shape
    assert np.degrees(np.arcsin(up)) == pytest.approx(el, abs=0.005)
    daz = (np.degrees(np.arctan2(east, north)) - az + 180.0) % 360.0 - 180.0
    assert np.max(np.abs(daz)) < 0.01


def test_noon_at_xinglong() -> None:
    times = _unix(2016, 12, 19, 2) + np.arange(0.0, 4 * 3600.0, 1.0)
    az, el = sun_azel(XINGLONG, times)
    noon = int(np.argmax(el))
    _, dec = sun_radec_deg(times[noon : noon + 1])
    assert az[noon] == pytest.approx(180.0, abs=0.1)
    assert el[noon] == pytest.approx(90.0 - XINGLONG.lat_deg + dec[0], abs=0.02)
    # Local apparent noon at 117.58 E in mid-December: about 04:07 UTC.
    assert abs(times[noon] - _unix(2016, 12, 19, 4, 7)) < 180.0
