"""``groundkey config check FILE``: validate a config file the way ``groundkey run`` does.

Prints a short summary and exits 0, or prints the error naming the file and the
field (``station.toml: link.timeout_s: expected > 0``) and exits 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from groundkey_daemon.config import load_config


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="work with config files")
    inner = parser.add_subparsers(dest="config_command", required=True)
    check = inner.add_parser(
        "check",
        help="validate a config file (unknown keys, ranges, paths)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    check.add_argument("file", help="TOML config file")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.file, check_paths=True)
    st = config.station
    parts = [
        f"station {st.name} ({st.lat_deg:.4f}, {st.lon_deg:.4f}, {st.alt_m:g} m)",
        f"{len(st.tle_files)} TLE file(s)",
        f"rotator {config.rotator.protocol} at {config.rotator.url or '(none)'}",
        f"tagger {config.acquisition.tagger_url or '(none)'}",
        f"link {config.link.endpoint or '(none)'}"
        + (", Wegman-Carter transcripts" if config.link.transcript_auth else ", HMAC only"),
        f"distill {config.distill.method}",
        f"state {config.keystore.state_dir}",
        f"clock {config.service.clock}",
    ]
    print(f"{args.file}: OK")
    for part in parts:
        print(f"  {part}")
    return 0
