"""Orbit tests: TLE parsing, and pass prediction / look angles checked against an
independent computation on python-sgp4 directly (TEME -> PEF by the IAU-82 GMST
rotation, WGS84 station, topocentric ENU, own root finding): no skyfield here."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sgp4.api import WGS72, Satrec

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.orbit import (
    Station,
    Tle,
    ground_track,
    look_angles,
    parse_tle,
    predict_passes,
    separation_deg,
)

MICIUS_TLE = (Path(__file__).parents[2] / "config" / "tle" / "micius.tle").read_text()
XINGLONG = Station(40.3959, 117.5775, 893.0)
EPOCH = dt.datetime(2016, 12, 18, 21, 38, 11, tzinfo=dt.UTC)
# IERS Bulletin A, December 2016: UT1-UTC was about -0.40 s (before the 2016-12-31
# leap second). Ignoring it would still be within tolerance (0.4 s of Earth rotation).
DUT1_S = -0.40

Arr = npt.NDArray[np.float64]


# ---------------------------------------------------------------- independent model


def _independent_look(tle: Tle, station: Station, unix_s: Arr) -> tuple[Arr, Arr, Arr, Arr]:
    """az, el (deg), range (m), range rate (m/s) from sgp4 + textbook frame rotations."""
    sat = Satrec.twoline2rv(tle.line1, tle.line2, WGS72)
    jd_utc = unix_s / 86400.0 + 2440587.5
    jd = np.floor(jd_utc)
    fr = jd_utc - jd
    err, r_teme, v_teme = sat.sgp4_array(jd, fr)
    assert not np.any(err)
    r_teme = r_teme * 1000.0
    v_teme = v_teme * 1000.0
    # Greenwich mean sidereal time, IAU 1982 (Vallado eq. 3-45), on UT1.
    t = (jd_utc + DUT1_S / 86400.0 - 2451545.0) / 36525.0
    gmst_s = (
        67310.54841 + (876600.0 * 3600.0 + 8640184.812866) * t + 0.093104 * t**2 - 6.2e-6 * t**3
    )
    theta = np.radians((gmst_s % 86400.0) / 240.0)
    c, s = np.cos(theta), np.sin(theta)
    r = np.stack(
        [c * r_teme[:, 0] + s * r_teme[:, 1], -s * r_teme[:, 0] + c * r_teme[:, 1], r_teme[:, 2]],
        axis=1,
    )
    v = np.stack(
        [c * v_teme[:, 0] + s * v_teme[:, 1], -s * v_teme[:, 0] + c * v_teme[:, 1], v_teme[:, 2]],
        axis=1,
    )
    omega = 7.292115146706979e-5  # rad/s, Earth rotation (Vallado)
    v = v - np.cross(np.array([0.0, 0.0, omega]), r)
    # WGS84 geodetic -> ECEF
    a, f = 6378137.0, 1.0 / 298.257223563
    e2 = f * (2.0 - f)
    lat, lon = math.radians(station.lat_deg), math.radians(station.lon_deg)
    n = a / math.sqrt(1.0 - e2 * math.sin(lat) ** 2)
    site = np.array(
        [
            (n + station.alt_m) * math.cos(lat) * math.cos(lon),
            (n + station.alt_m) * math.cos(lat) * math.sin(lon),
            (n * (1.0 - e2) + station.alt_m) * math.sin(lat),
        ]
    )
    d = r - site
    east = -math.sin(lon) * d[:, 0] + math.cos(lon) * d[:, 1]
    north = (
        -math.sin(lat) * math.cos(lon) * d[:, 0]
        - math.sin(lat) * math.sin(lon) * d[:, 1]
        + math.cos(lat) * d[:, 2]
    )
    up = (
        math.cos(lat) * math.cos(lon) * d[:, 0]
        + math.cos(lat) * math.sin(lon) * d[:, 1]
        + math.sin(lat) * d[:, 2]
    )
    rng = np.linalg.norm(d, axis=1)
    az = np.degrees(np.arctan2(east, north)) % 360.0
    el = np.degrees(np.arctan2(up, np.hypot(east, north)))
    rate = np.einsum("ij,ij->i", d, v) / rng
    return az, el, rng, rate


def _independent_el(tle: Tle, station: Station, unix_s: Arr) -> Arr:
    return _independent_look(tle, station, unix_s)[1]


def _independent_passes(
    tle: Tle, station: Station, start_s: float, hours: float, min_el: float
) -> list[tuple[float, float, float]]:
    """(aos, los, max_el) by a 5 s scan, bisection of the crossings, dense peak search."""
    grid = np.arange(start_s, start_s + hours * 3600.0, 5.0)
    el = _independent_el(tle, station, grid) - min_el
    up = np.flatnonzero((el[:-1] < 0) & (el[1:] >= 0))
    down = np.flatnonzero((el[:-1] >= 0) & (el[1:] < 0))

    def bisect(lo: float, hi: float) -> float:
        f_lo = _independent_el(tle, station, np.array([lo]))[0] - min_el
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            f_mid = _independent_el(tle, station, np.array([mid]))[0] - min_el
            if (f_mid < 0) == (f_lo < 0):
                lo, f_lo = mid, f_mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    out = []
    for i in up:
        later = down[down > i]
        if later.size == 0:
            continue
        aos = bisect(grid[i], grid[i + 1])
        los = bisect(grid[later[0]], grid[later[0] + 1])
        dense = np.arange(aos, los, 0.05)
        out.append((aos, los, float(_independent_el(tle, station, dense).max())))
    return out


# ---------------------------------------------------------------- parsing


def _with_checksum(line: str) -> str:
    total = sum(int(ch) if ch.isdigit() else (1 if ch == "-" else 0) for ch in line[:68])
    return line[:68] + str(total % 10)


def test_parse_micius_fields() -> None:
    (tle,) = parse_tle(MICIUS_TLE)
    assert tle.name == "MICIUS (QUESS)"
    assert tle.norad_id == 41731
    assert tle.inclination_deg == pytest.approx(97.3699)
    assert tle.mean_motion_rev_day == pytest.approx(15.23915303)
    # day 353.90152003 of 2016 = 18 Dec 21:38:11.33
    assert abs((tle.epoch - EPOCH).total_seconds() - 0.33) < 0.01


def test_parse_two_line_and_many() -> None:
    lines = MICIUS_TLE.splitlines()
    two = "\n".join(lines[1:])
    assert parse_tle(two)[0].name == ""
    many = parse_tle(MICIUS_TLE + "\n\n0 OTHER\n" + two + "\n")
    assert [t.name for t in many] == ["MICIUS (QUESS)", "OTHER"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda l1, l2: (l1[:68] + "4", l2), "line 2: bad checksum"),
        (lambda l1, l2: (l1, l2[:68] + "0"), "line 3: bad checksum"),
        (lambda l1, l2: (l1[:60], l2), "line 2: TLE line 1 must be 69 characters, got 60"),
        (
            lambda l1, l2: (l1, _with_checksum(l2[:8] + " 9x.3699" + l2[16:])),
            "line 3: bad inclination in columns 9-16",
        ),
        (
            lambda l1, l2: (l1, _with_checksum(l2[:8] + " 197.369" + l2[16:])),
            "line 3: inclination 197.369 outside [0, 180]",
        ),
        (
            lambda l1, l2: (l1, _with_checksum(l2[:2] + "41732" + l2[7:])),
            "line 3: satellite number '41732' does not match",
        ),
        (lambda l1, l2: (l1, l1), "line 3: expected TLE line 2"),
        (lambda l1, l2: (l1, ""), "line 2: TLE line 1 is not followed by line 2"),
    ],
)
def test_parse_errors_name_line_and_problem(mutate: object, expected: str) -> None:
    name, l1, l2 = MICIUS_TLE.splitlines()
    new1, new2 = mutate(l1, l2)  # type: ignore[operator]
    with pytest.raises(ProtocolError, match="^tle: " + re.escape(expected)):
        parse_tle("\n".join([name, new1, new2]))


def test_parse_empty_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="no TLE found"):
        parse_tle("\n\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40.4,117.6,893", Station(40.4, 117.6, 893.0)),
        ("40.4, 117.6", Station(40.4, 117.6, 0.0)),
    ],
)
def test_station_parse(text: str, expected: Station) -> None:
    assert Station.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("91,117,0", "latitude 91.0 outside"),
        ("40,abc,0", "longitude is not a number: 'abc'"),
        ("40", "must be LAT,LON,ALT_M"),
        ("40,117,1e6", "altitude"),
    ],
)
def test_station_parse_errors(text: str, expected: str) -> None:
    with pytest.raises(ProtocolError, match=expected):
        Station.parse(text)


# ---------------------------------------------------------------- geometry


def test_passes_agree_with_independent_sgp4() -> None:
    (tle,) = parse_tle(MICIUS_TLE)
    for min_el in (0.0, 10.0):
        ours = predict_passes(tle, XINGLONG, EPOCH, 48.0, min_el)
        theirs = _independent_passes(tle, XINGLONG, EPOCH.timestamp(), 48.0, min_el)
        assert len(ours) == len(theirs) >= 3
        for p, (aos, los, max_el) in zip(ours, theirs, strict=True):
            assert abs(p.aos.timestamp() - aos) < 1.0
            assert abs(p.los.timestamp() - los) < 1.0
            assert abs(p.max_el_deg - max_el) < 0.05
            assert p.aos < p.tca < p.los
            assert p.min_el_deg == min_el


def test_look_angles_agree_with_independent_sgp4() -> None:
    (tle,) = parse_tle(MICIUS_TLE)
    p = predict_passes(tle, XINGLONG, EPOCH, 24.0, 0.0)[0]
    times = np.linspace(p.aos.timestamp() - 60.0, p.los.timestamp() + 60.0, 400)
    look = look_angles(tle, XINGLONG, times)
    az, el, rng, rate = _independent_look(tle, XINGLONG, times)
    assert look.az_deg.shape == look.el_deg.shape == look.range_rate_m_s.shape == (400,)
    assert np.max(np.abs((look.az_deg - az + 180.0) % 360.0 - 180.0)) < 0.05
    assert np.max(np.abs(look.el_deg - el)) < 0.05
    assert np.max(np.abs(look.range_m - rng)) < 200.0
    assert np.max(np.abs(look.range_rate_m_s - rate)) < 1.0
    # A ~500 km orbit: range rate is several km/s, receding after TCA.
    assert rate.min() < -5000.0 < 5000.0 < rate.max()


def test_look_angles_shapes_and_scalars() -> None:
    (tle,) = parse_tle(MICIUS_TLE)
    grid = EPOCH.timestamp() + np.arange(6.0).reshape(2, 3)
    assert look_angles(tle, XINGLONG, grid).el_deg.shape == (2, 3)
    lat, lon = ground_track(tle, grid)
    assert lat.shape == lon.shape == (2, 3)
    assert np.all(np.abs(lat) <= 97.4)


def test_pass_in_progress_at_start_is_included() -> None:
    (tle,) = parse_tle(MICIUS_TLE)
    first = predict_passes(tle, XINGLONG, EPOCH, 24.0, 10.0)[0]
    again = predict_passes(tle, XINGLONG, first.tca, 1.0, 10.0)
    assert again[0].aos == pytest.approx(first.aos, abs=dt.timedelta(milliseconds=1))
    assert predict_passes(tle, XINGLONG, first.los + dt.timedelta(seconds=1), 0.5, 10.0) == []


def test_pass_json_fields() -> None:
    (tle,) = parse_tle(MICIUS_TLE)
    record = predict_passes(tle, XINGLONG, EPOCH, 12.0, 10.0)[0].as_json()
    assert record["aos"].endswith("Z")
    assert set(record) >= {"aos", "tca", "los", "max_el_deg", "aos_az_deg", "los_az_deg"}


def test_separation() -> None:
    assert separation_deg(0.0, 90.0, 123.0, 90.0) == pytest.approx(0.0, abs=1e-9)
    assert separation_deg(10.0, 0.0, 190.0, 0.0) == pytest.approx(180.0)
    assert separation_deg(359.5, 45.0, 0.5, 45.0) == pytest.approx(
        1.0 * math.cos(math.radians(45)), rel=1e-3
    )
    got = separation_deg(np.zeros(4), np.zeros(4), np.arange(4.0), np.zeros(4))
    assert got.shape == (4,)
    assert got == pytest.approx(np.arange(4.0))


def test_bad_prediction_arguments() -> None:
    (tle,) = parse_tle(MICIUS_TLE)
    with pytest.raises(ProtocolError, match="aware"):
        predict_passes(tle, XINGLONG, EPOCH.replace(tzinfo=None), 1.0)
    with pytest.raises(ProtocolError, match="hours"):
        predict_passes(tle, XINGLONG, EPOCH, -1.0)


@settings(max_examples=300, deadline=None)
@given(
    line=st.sampled_from([1, 2]),
    column=st.integers(min_value=0, max_value=67),
    char=st.sampled_from(list("0123456789 .-+abcXYZ")),
    fix_checksum=st.booleans(),
)
def test_mutated_tle_parses_or_raises_protocol_error(
    line: int, column: int, char: str, fix_checksum: bool
) -> None:
    name, l1, l2 = MICIUS_TLE.splitlines()
    lines = [l1, l2]
    text = lines[line - 1]
    text = text[:column] + char + text[column + 1 :]
    lines[line - 1] = _with_checksum(text) if fix_checksum else text
    messages: list[str] = []
    try:
        parse_tle("\n".join([name, *lines]))
    except ProtocolError as exc:  # anything else (a traceback in the CLI) fails the test
        messages.append(str(exc))
    assert all(m.startswith("tle: line ") for m in messages)
