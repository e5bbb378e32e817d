"""``groundkey-sim rotator``: serve an emulated rotator controller over a pty or TCP."""

from __future__ import annotations

import argparse
from typing import Any

PROTOCOL_CHOICES = ("gs232a", "gs232b", "rot2prog", "md01", "easycomm2", "rotctld")
FAULT_CHOICES = ("disconnect", "silence", "garbage", "stall")


def _pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AZ,EL numbers, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected two positive numbers AZ,EL, got {text!r}")
    return values[0], values[1]


def _fault(text: str) -> tuple[str, float]:
    mode, _, at = text.partition("@")
    if mode not in FAULT_CHOICES:
        raise argparse.ArgumentTypeError(f"fault must be one of {', '.join(FAULT_CHOICES)}")
    try:
        return mode, float(at) if at else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"fault time must be seconds, got {at!r}") from None


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "rotator",
        help="emulate a rotator controller (GS-232, SPID, EasyComm, rotctld)",
        description=(
            "Serve an emulated rotator controller. The first stdout line is the endpoint "
            "(pty path, --pty-link path or tcp:// URL); runs until SIGTERM/SIGINT."
        ),
    )
    parser.add_argument("--protocol", required=True, choices=PROTOCOL_CHOICES)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--listen", metavar="tcp://HOST:PORT", help="serve on TCP (PORT 0: any)")
    parser.add_argument("--pty-link", metavar="PATH", help="stable symlink to the pty")
    parser.add_argument("--clock", default="wall", help="wall | sim:EPOCH[,speed=S][,anchor=T]")
    parser.add_argument("--slew-rate-deg-s", type=_pair, default=(6.0, 6.0), metavar="AZ,EL")
    parser.add_argument("--accel-deg-s2", type=_pair, default=(12.0, 12.0), metavar="AZ,EL")
    parser.add_argument("--min-az", type=float, default=0.0)
    parser.add_argument("--max-az", type=float, default=360.0, help="450 for an overlap region")
    parser.add_argument("--start", type=_pair_any, default=(0.0, 0.0), metavar="AZ,EL")
    parser.add_argument(
        "--gs232b-style",
        choices=("crlf", "hardware", "nospace", "azonly"),
        default="crlf",
        help="GS-232B position answer flavour",
    )
    parser.add_argument(
        "--split-replies",
        action="store_true",
        help="send the last byte of every answer separately (CR LF split across reads)",
    )
    parser.add_argument("--resolution", type=int, default=2, help="SPID PH=PV pulses per degree")
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="MODE[@SECONDS]",
        help=f"inject a fault ({', '.join(FAULT_CHOICES)}) after SECONDS of wall time",
    )
    parser.add_argument("--outage-s", type=float, default=1.0, help="length of a disconnect")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def _pair_any(text: str) -> tuple[float, float]:
    try:
        az, el = (float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AZ,EL, got {text!r}") from None
    return az, el


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import sys
    import urllib.parse

    from groundkey_protocol.clock import Clock
    from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
    from groundkey_sim.rotator import SimRotator, device_codec_factory, serve_pty, serve_tcp
    from groundkey_sim.rotator.server import RotatorServer

    mount = SimRotator(
        clock=Clock.from_spec(args.clock),
        limits=RotatorLimits(min_az_deg=args.min_az, max_az_deg=args.max_az),
        slew_rate_deg_s=args.slew_rate_deg_s,
        accel_deg_s2=args.accel_deg_s2,
        start=AzEl(*args.start),
    )
    factory = device_codec_factory(
        args.protocol,
        gs232b_style=args.gs232b_style,
        resolution=(args.resolution, args.resolution),
    )
    server: RotatorServer
    if args.pty:
        server = await serve_pty(
            args.protocol,
            mount=mount,
            link=args.pty_link,
            codec_factory=factory,
            outage_s=args.outage_s,
            seed=args.seed,
        )
    else:
        url = urllib.parse.urlsplit(args.listen)
        if url.scheme != "tcp" or not url.hostname or url.port is None:
            raise ValueError(f"--listen must be tcp://HOST:PORT, got {args.listen!r}")
        server = await serve_tcp(
            args.protocol,
            mount=mount,
            host=url.hostname,
            port=url.port,
            codec_factory=factory,
            outage_s=args.outage_s,
            seed=args.seed,
        )
    server.split_replies = args.split_replies
    print(server.endpoint, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def later(mode: str, at_s: float) -> None:
        await asyncio.sleep(at_s)
        server.inject(mode)
        print(f"fault {mode} injected", file=sys.stderr, flush=True)

    tasks = [loop.create_task(later(mode, at_s)) for mode, at_s in args.fault]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await server.close()
    return 0
