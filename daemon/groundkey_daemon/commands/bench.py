"""``groundkey bench``: run the performance benchmarks and print a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from groundkey_daemon.errors import UserError


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="run performance benchmarks")
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument(
        "--only", default="", help="comma-separated name prefixes, e.g. cascade,toeplitz"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from groundkey_daemon.bench import Record, all_benchmarks

    prefixes = [p.strip() for p in args.only.split(",") if p.strip()]
    selected = [b for b in all_benchmarks() if b.selected(prefixes)]
    if not selected:
        raise UserError(f"--only {args.only!r} matches no benchmark")
    records: list[Record] = []
    for bench in selected:
        for record in bench.run():
            if not prefixes or any(record.name.startswith(p) for p in prefixes):
                records.append(record)
                if not args.json:
                    print(f"{record.name:<40} {record.value:>14.4g} {record.unit}", flush=True)
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=1))
    return 0
