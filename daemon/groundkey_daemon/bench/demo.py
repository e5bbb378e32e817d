"""``daemon.demo_pass.wall_s``: wall time of ``groundkey demo`` with its defaults.

The real CLI in a subprocess (what ``make demo`` runs): the simulators, ``groundkey
run`` for one accelerated Micius pass, the report and the key listing, in a scratch
demo directory. One run (it takes tens of seconds); ``daemon.demo_pass.key_bits`` is
the secret key that pass stored (0 if the pass produced none).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from groundkey_daemon.bench import Benchmark, Record


def _demo_pass() -> Iterator[Record]:
    groundkey = Path(sys.executable).parent / "groundkey"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(groundkey), "demo", "--quiet", "--json", "--out", str(Path(tmp) / "demo-out")],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        wall_s = time.perf_counter() - t0
    key_bits = 0.0
    if proc.stdout.strip():
        try:
            result = json.loads(proc.stdout.splitlines()[-1])
        except ValueError:  # the demo failed before its summary
            result = {}
        key_bits = float(result.get("report", {}).get("secret_bits", 0))
    yield Record("daemon.demo_pass.wall_s", wall_s, "s")
    yield Record("daemon.demo_pass.key_bits", key_bits, "bit")


BENCHMARKS = [
    Benchmark(names=("daemon.demo_pass.wall_s", "daemon.demo_pass.key_bits"), run=_demo_pass)
]
