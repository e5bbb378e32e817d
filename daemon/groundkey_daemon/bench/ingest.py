"""Detection-chain benchmarks: ingest throughput and downlink simulation cost.

``ingest.tags_per_s``: GKTT frame decode + ingest (concatenate, split the beacon
channel) + clock recovery of a synthetic 100 MHz stream, one core. Target ≥ 20 M/s.
``sim.micius_pass.*``: ``groundkey-sim tagger --bench`` generating a full 274 s Micius
pass in a subprocess (the daemon never imports the simulator): wall time (target
< 10 s) and that process's peak RSS (bounded: generation runs in chunks).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np

from groundkey_daemon.bench import Benchmark, Record, median_time_s
from groundkey_protocol.devices import timetagger as tt
from groundkey_protocol.qkd.sync import recover

BEACON_CHANNEL = 5
N_SIGNAL = 4_000_000


def _synthetic_stream() -> tuple[list[bytes], tuple[np.ndarray, np.ndarray], int]:
    """Bench-fiber-like stream: 4 M detections over 10 s, 10 kHz beacon, 20 ppm drift."""
    rng = np.random.default_rng(7)
    n_slots = 10**9
    slots = np.sort(rng.choice(n_slots, N_SIGNAL, replace=False)).astype(np.int64)
    beacons = np.arange(0, n_slots, 10_000, dtype=np.int64)
    tof_ps = 5_000_000.0

    def arrival(k: np.ndarray) -> np.ndarray:
        return 3_000_000 + k * 10_000 * (1 + 20e-6) + tof_ps

    ts = np.concatenate([arrival(slots) + rng.normal(0, 170, len(slots)), arrival(beacons)])
    ch = np.concatenate(
        [rng.integers(1, 5, len(slots)).astype(np.uint8), np.full(len(beacons), BEACON_CHANNEL)]
    ).astype(np.uint8)
    order = np.argsort(ts, kind="stable")
    ts_i = np.rint(ts[order]).astype(np.int64)
    frames, _, _ = tt.encode_frames(ts_i, ch[order], first_seq=0, epoch=0, start=True)
    # bulk transfers of ~1 MiB, as the driver hands them over
    per = max(1, (1 << 20) // len(frames[0]))
    transfers = [b"".join(frames[i : i + per]) for i in range(0, len(frames), per)]
    grid = np.arange(-1, 12, dtype=np.int64) * 10**12
    return transfers, (grid, np.full(len(grid), int(tof_ps), np.int64)), len(ts_i)


def _ingest(transfers: list[bytes], prediction: tuple[np.ndarray, np.ndarray]) -> None:
    decoder = tt.FrameDecoder()
    batches = [decoder.feed(t) for t in transfers]
    ts = np.concatenate([b.timestamps_ps for b in batches])
    ch = np.concatenate([b.channels for b in batches])
    beacon = ch == BEACON_CHANNEL
    recover(ts[~beacon], ch[~beacon], ts[beacon], prediction)


def bench_ingest() -> Iterator[Record]:
    transfers, prediction, n_tags = _synthetic_stream()
    seconds = median_time_s(lambda: _ingest(transfers, prediction), repeats=3)
    yield Record("ingest.tags_per_s", n_tags / seconds, "tags/s")


def bench_sim() -> Iterator[Record]:
    out = subprocess.run(
        [sys.executable, "-m", "groundkey_sim.cli", "tagger", "--preset", "micius-2017", "--bench"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    yield Record("sim.micius_pass.wall_s", float(stats["wall_s"]), "s")
    yield Record("sim.micius_pass.tags", float(stats["tags"]), "tags")
    yield Record("sim.micius_pass.peak_rss_mib", float(stats["peak_rss_mib"]), "MiB")


BENCHMARKS = [
    Benchmark(names=("ingest.tags_per_s",), run=bench_ingest),
    Benchmark(
        names=("sim.micius_pass.wall_s", "sim.micius_pass.tags", "sim.micius_pass.peak_rss_mib"),
        run=bench_sim,
    ),
]
