"""Service benchmarks: event-loop lag while a key block is being distilled.

``daemon.loop_lag_p99_ms``: the daemon's event loop (sampled every 1 ms) while a
worker process syncs and distills a bench-fiber block of ~1.7 M tags with the
simulated satellite over the authenticated ZeroMQ link (target p99 < 10 ms).
``daemon.block_distill.wall_s``: that block's wall time (spool read, clock
recovery, sifting, estimation, Cascade, verification, amplification, link
round trips) and ``daemon.block_distill.key_bits`` its secret key. The simulators
run as subprocesses, reached like hardware.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from groundkey_daemon.bench import Benchmark, Record
from groundkey_daemon.distill_runner import BlockJob, DistillRunner, SyncSettings
from groundkey_daemon.link import LinkSettings
from groundkey_daemon.metrics import LoopLagMonitor
from groundkey_daemon.spool import Spool

SEED = 99
LINK_KEY = bytes(range(7, 39))


def _spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "groundkey_sim.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def _measure(workdir: Path, tagger_url: str, sat_url: str) -> tuple[float, float, int]:
    from groundkey_drivers.timetagger.base import open_tagger

    spool = Spool(workdir / "spool")
    names = []
    async with open_tagger(tagger_url) as tagger:
        await tagger.start()
        async for batch in tagger.batches():
            names.append(await asyncio.to_thread(
                spool.append, "bench", batch.timestamps_ps, batch.channels
            ))  # fmt: skip
    grid_s = np.arange(-1.0, 6.0, 0.05)
    job = BlockJob(
        pass_id="bench",
        chunk_paths=tuple(str(spool.pass_dir("bench") / n) for n in names),
        link=LinkSettings(sat_url, LINK_KEY, timeout_s=120.0),
        params={"frame_bits": 100_000},
        sync=SyncSettings(
            np.rint(grid_s * 1e12).astype(np.int64), np.full(grid_s.shape, 5_000_000, np.int64)
        ),
    )
    runner = DistillRunner(workers=1)
    lag = LoopLagMonitor(interval_s=0.001, window=1_000_000)
    try:
        await runner.start()
        sampler = asyncio.create_task(lag.run())
        result = await runner.run(job)
        sampler.cancel()
    finally:
        await runner.close()
    return lag.p99_s * 1e3, result.wall_s, result.key_bits


def _loop_lag() -> Iterator[Record]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key = work / "link.key"
        key.write_text(LINK_KEY.hex())
        procs = []
        try:
            tagger, tagger_url = _spawn(
                "tagger", "--preset", "bench-fiber", "--duration", "4", "--seed", str(SEED)
            )
            procs.append(tagger)
            sat, sat_url = _spawn(
                "satellite", "--seed", str(SEED), "--link-key", str(key)
            )  # fmt: skip
            procs.append(sat)
            p99_ms, wall_s, key_bits = asyncio.run(_measure(work, tagger_url, sat_url))
        finally:
            for proc in procs:
                proc.terminate()
                proc.communicate(timeout=30)
    yield Record("daemon.loop_lag_p99_ms", p99_ms, "ms")
    yield Record("daemon.block_distill.wall_s", wall_s, "s")
    yield Record("daemon.block_distill.key_bits", float(key_bits), "bit")


BENCHMARKS = [
    Benchmark(
        names=(
            "daemon.loop_lag_p99_ms",
            "daemon.block_distill.wall_s",
            "daemon.block_distill.key_bits",
        ),
        run=_loop_lag,
    )
]
