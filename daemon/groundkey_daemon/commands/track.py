"""``groundkey track``: track the next pass of the configured satellite with the mount."""

from __future__ import annotations

import argparse
from typing import Any

from groundkey_daemon.errors import ConfigError, UserError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "track",
        help="track the next pass with the configured mount",
        description=(
            "Predict the next pass of [station] satellite from its TLE files, pre-position "
            "the [rotator], track from AOS to LOS, park, and print a pointing summary."
        ),
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="station TOML config")
    parser.add_argument(
        "--clock", default="wall", metavar="SPEC", help="wall | sim:EPOCH[,speed=S][,anchor=T]"
    )
    parser.add_argument("--hours", type=float, default=48.0, help="search window for the pass")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def satellite_from_config(config: Any) -> Any:
    """The TLE named by ``[station] satellite`` in ``tle_files`` (the first by default)."""
    from groundkey_daemon.commands.passes import load_tles, select

    if not config.station.tle_files:
        raise ConfigError("station.tle_files: no TLE file configured")
    tles = [tle for path in config.station.tle_files for tle in load_tles(path)]
    return select(tles, config.station.satellite)[0]


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import signal
    import sys

    from groundkey_daemon.config import load_config
    from groundkey_daemon.progress import ProgressPrinter, summary_lines
    from groundkey_daemon.tracking import (
        Tracker,
        TrackingSettings,
        next_pass,
        rotator_from_config,
    )
    from groundkey_protocol.clock import Clock
    from groundkey_protocol.orbit import Station

    config = load_config(args.config)
    clock = Clock.from_spec(args.clock)
    tle = satellite_from_config(config)
    s = config.station
    station = Station(s.lat_deg, s.lon_deg, s.alt_m)
    try:
        pass_, _ = next_pass(tle, station, clock.now(), min_el_deg=s.min_el_deg, hours=args.hours)
    except LookupError as exc:
        raise UserError(str(exc)) from None
    rotator = rotator_from_config(config)
    print(
        f"next pass of {tle}: AOS {pass_.aos:%Y-%m-%d %H:%M:%S}Z az {pass_.aos_az_deg:.1f}, "
        f"max el {pass_.max_el_deg:.1f}, LOS {pass_.los:%H:%M:%S}Z",
        flush=True,
    )

    async def main() -> Any:
        from groundkey_drivers.errors import DeviceError

        try:
            await rotator.open()
        except DeviceError as exc:
            raise UserError(f"rotator.url {config.rotator.url}: cannot open: {exc}") from None
        async with rotator:
            tracker = Tracker(
                rotator,
                tle,
                station,
                pass_,
                clock,
                TrackingSettings.from_config(config),
                on_sample=None if args.json else ProgressPrinter(),
            )
            # Ctrl-C or SIGTERM: end the pass and park; a second one stops at once
            loop = asyncio.get_running_loop()
            run = asyncio.ensure_future(tracker.run())

            def interrupted(signame: str) -> None:
                if tracker.stats.aborted:
                    run.cancel()
                else:
                    print(f"{signame}: parking (again to stop at once)", file=sys.stderr)
                    tracker.abort(signame)

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, interrupted, sig.name)
            try:
                return await run
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    stats = asyncio.run(main())
    if args.json:
        print(json.dumps(stats.summary()))
    else:
        for line in summary_lines(stats):
            print(line)
    return 0
