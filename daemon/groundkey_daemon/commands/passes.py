"""``groundkey passes``: predict passes of a satellite over a station (table or JSON)."""

from __future__ import annotations

import argparse
from typing import Any

from groundkey_daemon.errors import UserError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "passes",
        help="predict passes (AOS, TCA, LOS, max elevation) from a TLE",
        description="Predict passes of the satellites in a TLE file over a station.",
    )
    parser.add_argument("--tle", required=True, metavar="FILE", help="two/three-line elements")
    parser.add_argument(
        "--station", required=True, metavar="LAT,LON,ALT_M", help="degrees N, degrees E, metres"
    )
    parser.add_argument("--start", metavar="ISO-8601", help="UTC start time (default: now)")
    parser.add_argument("--hours", type=float, default=24.0, help="window length (default 24)")
    parser.add_argument("--min-el", type=float, default=0.0, metavar="DEG", help="default 0")
    parser.add_argument("--satellite", default="", help="name or NORAD number (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of passes")
    parser.set_defaults(run=run)


def load_tles(path: str) -> list[Any]:
    """Parse a TLE file; errors name the file and line (UserError, exit 2)."""
    from groundkey_protocol.errors import ProtocolError
    from groundkey_protocol.orbit import parse_tle

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise UserError(f"--tle {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"--tle {path}: not a text file") from None
    try:
        return parse_tle(text)
    except ProtocolError as exc:
        raise UserError(f"{path}: {exc}") from None


def select(tles: list[Any], wanted: str) -> list[Any]:
    if not wanted:
        return tles
    chosen = [t for t in tles if wanted.strip().lower() in (t.name.lower(), str(t.norad_id))]
    if not chosen:
        names = ", ".join(f"{t.name or '?'} ({t.norad_id})" for t in tles)
        raise UserError(f"no satellite {wanted!r} in the TLE file; it has: {names}")
    return chosen


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import json
    import math

    from groundkey_protocol.clock import format_utc, parse_utc
    from groundkey_protocol.errors import ProtocolError
    from groundkey_protocol.orbit import Station, predict_passes

    tles = select(load_tles(args.tle), args.satellite)
    try:
        station = Station.parse(args.station)
    except ProtocolError as exc:
        raise UserError(f"--station: {exc}") from None
    if args.start is None:
        start = dt.datetime.now(dt.UTC)
    else:
        try:
            start = parse_utc(args.start)
        except ValueError as exc:
            raise UserError(f"--start: {exc}") from None
    if not (math.isfinite(args.hours) and 0.0 < args.hours <= 744.0):
        raise UserError(f"--hours must be in (0, 744], got {args.hours:g}")
    if not (math.isfinite(args.min_el) and -5.0 <= args.min_el < 90.0):
        raise UserError(f"--min-el must be in [-5, 90), got {args.min_el:g}")
    records: list[dict[str, Any]] = []
    for tle in tles:
        for p in predict_passes(tle, station, start, args.hours, args.min_el):
            record = {"satellite": tle.name, "norad_id": tle.norad_id, **p.as_json()}
            records.append(record)
    records.sort(key=lambda r: str(r["aos"]))
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    age_days = abs((start - tles[0].epoch).total_seconds()) / 86400.0
    print(
        f"station {station.lat_deg:.4f}N {station.lon_deg:.4f}E {station.alt_m:.0f} m, "
        f"from {format_utc(start)} for {args.hours:g} h, min el {args.min_el:g} deg"
    )
    if age_days > 14:
        print(f"note: TLE epoch is {age_days:.0f} days from the start: predictions degrade")
    header = (
        f"{'satellite':<16} {'AOS (UTC)':<20} {'TCA':<9} {'LOS':<9} "
        f"{'dur s':>6} {'max el':>7} {'AOS az':>7} {'LOS az':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in records:
        print(
            f"{(r['satellite'] or str(r['norad_id']))[:16]:<16} "
            f"{r['aos'][:19].replace('T', ' '):<20} {r['tca'][11:19]:<9} {r['los'][11:19]:<9} "
            f"{r['duration_s']:>6.0f} {r['max_el_deg']:>7.1f} {r['aos_az_deg']:>7.1f} "
            f"{r['los_az_deg']:>7.1f}"
        )
    if not records:
        print("(no passes)")
    return 0
