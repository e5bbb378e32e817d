"""``groundkey bench``: run the performance benchmarks and print a table or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from groundkey_daemon.errors import UserError


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="run performance benchmarks")
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument(
        "--only", default="", help="comma-separated name prefixes, e.g. cascade,toeplitz"
    )
    parser.add_argument(
        "suite",
        nargs="?",
        choices=["reconcile"],
        help="reconcile: sweep Cascade and LDPC over QBER (efficiency, FER)",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="with reconcile: draw f and FER")
    parser.add_argument(
        "--frames", type=int, default=32, help="with reconcile: frames per point (default 32)"
    )
    parser.add_argument(
        "--frame-bits",
        type=int,
        default=9_000,
        help="with reconcile: key bits per frame (default 9000; 0: the daemon's automatic "
        "sizes, LDPC's frame plan and 10^5 for Cascade; use few --frames)",
    )
    parser.set_defaults(run=run)


def run_reconcile(args: argparse.Namespace) -> int:
    from groundkey_daemon.bench.ldpc import default_methods, plot_sweep, reconcile_sweep

    if args.frames < 1 or 0 < args.frame_bits < 100 or args.frame_bits < 0:
        raise UserError("--frames must be at least 1 and --frame-bits 0 or at least 100")
    qbers = [0.01, 0.02, 0.03, 0.05, 0.08]
    points = reconcile_sweep(
        default_methods(), qbers, frames=args.frames, frame_bits=args.frame_bits
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in points], indent=1))
    for p in [] if args.json else points:
        print(
            f"{p.method:<18} qber {100 * p.qber:4.1f} %  {p.frame_bits:>9,d} bits  "
            f"f {p.efficiency:6.3f}  "
            f"FER {p.fer:7.4f}  {p.messages:4d} messages  {p.bits_per_s / 1e6:6.2f} Mbit/s",
            flush=True,
        )
    if args.plot:
        plot_sweep(points, args.plot)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.suite == "reconcile":
        return run_reconcile(args)
    if args.plot:
        raise UserError("--plot needs the reconcile suite: groundkey bench reconcile --plot F")
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
