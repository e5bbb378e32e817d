"""``groundkey-sim satellite``: the satellite's payload computer on the classical link.

Plays Alice for key distillation over ZeroMQ (ROUTER), answering from the same
counter-based record the downlink model (``groundkey-sim tagger --seed``) uses.
Prints its endpoint as the first line of stdout, then serves until killed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("satellite", help="serve the satellite's side of the classical link")
    parser.add_argument("--listen", default="tcp://127.0.0.1:0", help="ZeroMQ endpoint to bind")
    parser.add_argument("--seed", type=int, default=1, help="downlink seed (as for the tagger)")
    parser.add_argument(
        "--link-key", required=True, help="file with the pre-shared link key (hex or raw)"
    )
    parser.add_argument("--keys-dir", default=None, help="write committed keys here (0600)")
    parser.add_argument("--local", default="satellite", help="this end's link name")
    parser.add_argument("--peer", default="ground", help="the station's link name")
    parser.add_argument("--rng-seed", type=int, default=None, help="seed of Alice's choices")
    parser.set_defaults(run=run)


def _read_key(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read().rstrip(b"\r\n")
    try:
        return bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return raw


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from groundkey_sim.downlink.source import Alice
    from groundkey_sim.satellite import AliceRecord, SatellitePeer, SatelliteServer
    from groundkey_sim.satellite.server import KeyDirectory

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    logging.getLogger("groundkey_sim").setLevel(logging.INFO)
    key = _read_key(args.link_key)
    peer = SatellitePeer(
        key,
        AliceRecord(Alice(args.seed)),
        local=args.local,
        peer=args.peer,
        rng=np.random.default_rng(args.rng_seed),
        on_key=KeyDirectory(args.keys_dir) if args.keys_dir else None,
    )
    server = SatelliteServer(peer, args.listen)
    print(server.start(), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
