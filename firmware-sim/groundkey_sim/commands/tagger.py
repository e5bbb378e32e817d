"""``groundkey-sim tagger``: an emulated USB time tagger fed by the satellite downlink."""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.parse
from typing import Any

from groundkey_protocol.clock import Clock, parse_utc


def register(sub: Any) -> None:
    parser = sub.add_parser("tagger", help="serve an emulated USB time tagger over usbnet")
    parser.add_argument("--preset", default="micius-2017", help="downlink preset")
    parser.add_argument("--listen", default="tcp://127.0.0.1:0", help="tcp://HOST:PORT")
    parser.add_argument("--clock", default=None, help="clock spec; default: as fast as read")
    parser.add_argument("--start", default=None, help="ISO UTC start of the run (no --clock)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of data")
    parser.add_argument("--seed", type=int, default=1, help="downlink seed (secret in service)")
    parser.add_argument("--serial", default="GKTT0001")
    parser.add_argument(
        "--background", default=None, help="new-moon | full-moon | urban | day (preset default)"
    )
    parser.add_argument(
        "--bench",
        action="store_true",
        help="generate the whole run, print JSON stats (wall_s, tags, peak_rss_mib), exit",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.bench:
        return _bench(args)
    return asyncio.run(_serve(args))


def _bench(args: argparse.Namespace) -> int:
    import time

    from groundkey_sim.downlink import Downlink, preset

    start = parse_utc(args.start).timestamp() if args.start else None
    t0 = time.perf_counter()
    link = Downlink(
        preset(args.preset), seed=args.seed, start_unix_s=start, duration_s=args.duration
    )
    tags = sum(len(chunk) for chunk in link.chunks(0.1))
    wall_s = time.perf_counter() - t0
    rss = _peak_rss_mib()
    stats = {"wall_s": wall_s, "tags": tags, "sim_s": link.duration_s, "peak_rss_mib": rss}
    print(json.dumps(stats), flush=True)
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from groundkey_sim.downlink import Downlink, preset
    from groundkey_sim.downlink.presets import BACKGROUND_CPS
    from groundkey_sim.timetagger import SimTimeTagger, UsbnetServer

    link = preset(args.preset)
    if args.background:
        if args.background not in BACKGROUND_CPS:
            raise ValueError(f"--background must be one of {sorted(BACKGROUND_CPS)}")
        link = link.replace(background=args.background)
    start = parse_utc(args.start).timestamp() if args.start else None
    clock = Clock.from_spec(args.clock) if args.clock else None

    def make(now_s: float | None) -> Downlink:
        begin = now_s if now_s is not None else start
        return Downlink(link, seed=args.seed, start_unix_s=begin, duration_s=args.duration)

    url = urllib.parse.urlsplit(args.listen)
    if url.scheme != "tcp" or url.port is None:
        raise ValueError(f"--listen must be tcp://HOST:PORT, got {args.listen!r}")
    server = UsbnetServer(SimTimeTagger(make, clock=clock, serial=args.serial))
    port = await server.start(url.hostname or "127.0.0.1", url.port)
    print(f"usbnet://{url.hostname}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
    return 0


def _peak_rss_mib() -> float:
    """This process image's peak RSS. VmHWM, unlike ru_maxrss, is not inherited from a
    parent that forked us (ru_maxrss survives fork + exec on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
