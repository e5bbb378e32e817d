"""``groundkey demo`` (``make demo``): one simulated pass on embedded defaults.

Steps: predict the next night pass of Micius over Xinglong from the TLE epoch,
start the rotator emulator (``groundkey-sim``, a subprocess reached over TCP like
hardware) on a shared accelerated SimClock, connect the real GS-232B driver, track
the pass, print a summary. Later issues append steps (detectors, time tagger, key
distillation) to :data:`STEPS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundkey_daemon.errors import UserError

if TYPE_CHECKING:
    from groundkey_daemon.config import Config
    from groundkey_daemon.tracking import PointingStats
    from groundkey_drivers.rotator.base import Rotator
    from groundkey_protocol.clock import SimClock
    from groundkey_protocol.orbit import Pass, Station, Tle

#: Simulated time before AOS at which the demo's clock starts (covers the slew
#: from park, 1.5 x 60 s + 10 s).
LEAD_IN_S = 115.0
#: Sun elevation at TCA above which a pass is skipped (QKD needs the night).
DARK_SUN_EL_DEG = -12.0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="track one simulated Micius pass over Xinglong (what `make demo` runs)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--speed", type=float, default=25.0, help="simulated clock speed")
    parser.add_argument(
        "--protocol", default="gs232b", help="rotator protocol of the emulated mount"
    )
    parser.add_argument("--json", action="store_true", help="end with a JSON summary line")
    parser.add_argument("--quiet", action="store_true", help="no progress lines during the pass")
    parser.set_defaults(run=run)


@dataclass
class DemoContext:
    """What the steps share; ``stack`` closes the emulator and driver at the end."""

    args: argparse.Namespace
    config: Config
    stack: contextlib.AsyncExitStack
    out: Callable[[str], None]
    tle: Tle | None = None
    station: Station | None = None
    pass_: Pass | None = None
    clock: SimClock | None = None
    rotator_url: str = ""
    rotator: Rotator | None = None
    stats: PointingStats | None = None
    results: dict[str, Any] = field(default_factory=dict)


Step = tuple[str, Callable[[DemoContext], Awaitable[None]]]


def demo_config(protocol: str) -> Config:
    from groundkey_daemon.config import config_from_dict
    from groundkey_daemon.defaults import XINGLONG, XINGLONG_NAME

    return config_from_dict(
        {
            "station": {
                "name": XINGLONG_NAME,
                "lat_deg": XINGLONG.lat_deg,
                "lon_deg": XINGLONG.lon_deg,
                "alt_m": XINGLONG.alt_m,
                "min_el_deg": 10.0,
            },
            "rotator": {"protocol": protocol, "max_az_deg": 450.0},
            # GS-232 speaks whole degrees: 0.5 deg quantization each way.
            "tracking": {"threshold_deg": 1.5, "preposition_s": 60.0, "max_wall_rate_hz": 25.0},
        },
        source="demo defaults",
    )


async def step_predict(ctx: DemoContext) -> None:
    from groundkey_daemon.defaults import MICIUS_TLE, TLE_EPOCH, XINGLONG
    from groundkey_daemon.tracking import next_pass
    from groundkey_protocol.clock import SimClock, format_utc
    from groundkey_protocol.orbit import parse_tle

    (tle,) = parse_tle(MICIUS_TLE)
    s = ctx.config.station
    pass_, skipped = next_pass(
        tle, XINGLONG, TLE_EPOCH, min_el_deg=s.min_el_deg, dark_sun_el_deg=DARK_SUN_EL_DEG
    )
    ctx.out(
        f"      {tle.name} (NORAD {tle.norad_id}) over {s.name} "
        f"({XINGLONG.lat_deg:.4f}N {XINGLONG.lon_deg:.4f}E {XINGLONG.alt_m:.0f} m), "
        f"from the TLE epoch {format_utc(tle.epoch)}"
    )
    for day_pass, sun_el in skipped:
        ctx.out(
            f"      skipped the {day_pass.aos:%Y-%m-%d %H:%M}Z pass: daylight "
            f"(Sun at {sun_el:.0f} deg)"
        )
    ctx.out(
        f"      AOS {pass_.aos:%Y-%m-%d %H:%M:%S}Z az {pass_.aos_az_deg:.1f} | "
        f"TCA {pass_.tca:%H:%M:%S}Z el {pass_.max_el_deg:.1f} | "
        f"LOS {pass_.los:%H:%M:%S}Z az {pass_.los_az_deg:.1f} ({pass_.duration_s:.0f} s)"
    )
    ctx.tle, ctx.station, ctx.pass_ = tle, XINGLONG, pass_
    epoch = pass_.aos - dt.timedelta(seconds=LEAD_IN_S)
    # The clock reads ``epoch`` a moment from now (anchor): the emulator's start-up
    # then never eats into the pre-positioning time, whatever the machine's load.
    ctx.clock = SimClock(epoch=epoch, speed=ctx.args.speed, anchor_wall_s=time.time() + 1.5)
    ctx.results["pass"] = pass_.as_json()


def simulator_executable() -> str:
    """``groundkey-sim`` next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "groundkey-sim"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("groundkey-sim")
    if found is None:
        raise UserError("groundkey-sim not found next to python or on PATH: pip install -e .")
    return found


async def step_simulator(ctx: DemoContext) -> None:
    assert ctx.clock is not None
    r = ctx.config.rotator
    argv = [
        simulator_executable(),
        "rotator",
        "--protocol",
        r.protocol,
        "--listen",
        "tcp://127.0.0.1:0",
        "--clock",
        ctx.clock.spec(),
        "--max-az",
        f"{r.max_az_deg:g}",
        "--start",
        f"{r.park_az_deg:g},{r.park_el_deg:g}",
        "--slew-rate-deg-s",
        f"{r.slew_rate_az_deg_s:g},{r.slew_rate_el_deg_s:g}",
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )

    async def stop() -> None:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    ctx.stack.push_async_callback(stop)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
    except TimeoutError:
        raise UserError("groundkey-sim rotator did not report its endpoint in 30 s") from None
    endpoint = line.decode(errors="replace").strip()
    if not endpoint.startswith("tcp://"):
        raise UserError(f"groundkey-sim rotator failed to start (said {endpoint!r})")
    ctx.rotator_url = endpoint
    ctx.out(f"      {' '.join(argv[1:6])} -> {endpoint}")
    ctx.out(f"      clock {ctx.clock.spec()}")


async def step_connect(ctx: DemoContext) -> None:
    import msgspec

    from groundkey_daemon.tracking import rotator_from_config

    config = msgspec.structs.replace(
        ctx.config, rotator=msgspec.structs.replace(ctx.config.rotator, url=ctx.rotator_url)
    )
    rotator = rotator_from_config(config)
    await ctx.stack.enter_async_context(rotator)
    position = await rotator.position()
    ctx.rotator = rotator
    ctx.out(
        f"      {config.rotator.protocol} driver at {ctx.rotator_url}: "
        f"mount at az {position.az_deg:.0f} el {position.el_deg:.0f}"
    )


async def step_track(ctx: DemoContext) -> None:
    from groundkey_daemon.progress import ProgressPrinter
    from groundkey_daemon.tracking import Tracker, TrackingSettings

    assert ctx.rotator is not None
    assert ctx.tle is not None
    assert ctx.station is not None
    assert ctx.pass_ is not None
    assert ctx.clock is not None
    tracker = Tracker(
        ctx.rotator,
        ctx.tle,
        ctx.station,
        ctx.pass_,
        ctx.clock,
        TrackingSettings.from_config(ctx.config),
        on_sample=None if ctx.args.quiet else ProgressPrinter(every_s=20.0, write=ctx.out),
    )
    ctx.stats = await tracker.run()
    ctx.results["tracking"] = ctx.stats.summary()


async def step_summary(ctx: DemoContext) -> None:
    from groundkey_daemon.progress import summary_lines

    assert ctx.stats is not None
    for line in summary_lines(ctx.stats):
        ctx.out(f"      {line}")


STEPS: list[Step] = [
    ("predict the next night pass", step_predict),
    ("start the rotator emulator", step_simulator),
    ("connect the mount driver", step_connect),
    ("track the pass", step_track),
    ("summary", step_summary),
]


async def run_demo(args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    ctx_config = demo_config(args.protocol)
    async with contextlib.AsyncExitStack() as stack:
        ctx = DemoContext(args=args, config=ctx_config, stack=stack, out=out)
        for number, (title, step) in enumerate(STEPS, start=1):
            out(f"[{number}/{len(STEPS)}] {title}")
            t0 = time.monotonic()
            await step(ctx)
            ctx.results.setdefault("wall_s", {})[title] = round(time.monotonic() - t0, 2)
        return ctx.results


def run(args: argparse.Namespace) -> int:
    if not args.speed > 0:
        raise UserError(f"--speed must be positive, got {args.speed:g}")

    def out(line: str) -> None:
        print(line, flush=True)

    results = asyncio.run(run_demo(args, out))
    if args.json:
        print(json.dumps(results))
    return 0
