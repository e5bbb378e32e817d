"""``groundkey-sim detector``: an emulated SPAD controller (SCPI) on a pty or TCP."""

from __future__ import annotations

import argparse
import asyncio
import urllib.parse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("detector", help="serve an emulated detector controller")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pty")
    where.add_argument("--listen", help="tcp://HOST:PORT")
    parser.add_argument("--link", default=None, help="with --pty: symlink to the pty")
    parser.add_argument("--tau-s", type=float, default=1.0, help="cooler time constant")
    parser.add_argument("--dark-cps", type=float, default=25.0)
    parser.add_argument("--latch-cps", type=float, default=5e7)
    parser.add_argument("--serial", default="ID120-SIM-01")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from groundkey_sim.detector import SimDetector, serve_pty, serve_tcp

    device = SimDetector(
        serial=args.serial, tau_s=args.tau_s, dark_cps=args.dark_cps, latch_cps=args.latch_cps
    )
    if args.pty:
        pty_server = await serve_pty(device, args.link)
        print(pty_server.link or pty_server.path, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            pty_server.close()
        return 0
    url = urllib.parse.urlsplit(args.listen)
    if url.scheme != "tcp" or url.port is None:
        raise ValueError(f"--listen must be tcp://HOST:PORT, got {args.listen!r}")
    server = await serve_tcp(device, url.hostname or "127.0.0.1", url.port)
    port = server.sockets[0].getsockname()[1]
    print(f"tcp://{url.hostname}:{port}", flush=True)
    async with server:
        await server.serve_forever()
    return 0
