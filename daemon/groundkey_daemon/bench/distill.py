"""Key-distillation benchmarks: sifting, Cascade, privacy amplification, a whole pass."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from groundkey_daemon.bench import Benchmark, Record, median_time_s
from groundkey_protocol.qkd.amplify import (
    clear_fft_cache,
    mas_hash,
    modified_toeplitz_hash,
    seed_bits,
    toeplitz_hash,
)
from groundkey_protocol.qkd.distill import DistillAlice, DistillBob, DistillConfig
from groundkey_protocol.qkd.reconcile import ReconcileParams, create_reconciler, run_pair
from groundkey_protocol.qkd.sifting import alice_sift, bob_sift
from groundkey_protocol.qkd.synth import synthesize_pass


def _h2(q: float) -> float:
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


def bench_sifting() -> Iterable[Record]:
    sp = synthesize_pass(np.random.default_rng(1), detections=4_000_000)

    def sift() -> None:
        _, bases, intensities = alice_sift(sp.bob.slots, sp.bob.bases, sp.alice)
        bob_sift(sp.bob, bases, intensities)

    t = median_time_s(sift, repeats=5)
    yield Record("sifting.detections_per_s", sp.bob.slots.size / t, "detections/s")


def bench_cascade() -> Iterable[Record]:
    """Cascade (Yan) on a 10^6-bit batch of 10^5-bit frames at QBER 2 %.

    The clock covers building both roles and every message between them; only the
    public pass permutations (a function of the public seed, drawn once and shared
    by both roles) are derived before it starts.
    """
    rng = np.random.default_rng(2)
    frames, n, qber = 10, 100_000, 0.02
    alice_bits = rng.integers(0, 2, (frames, n), dtype=np.uint8)
    bob_bits = alice_bits ^ (rng.random((frames, n)) < qber).astype(np.uint8)
    actual = float((alice_bits != bob_bits).mean())
    results: list[tuple[float, float, float, int]] = []
    for seed in [s for s in range(5) for _ in range(3)]:  # 15 runs: 5 seeds, 3 times each
        params = ReconcileParams(method="cascade-yan", qber=actual, seed=seed, block_id="bench")
        create_reconciler("alice", alice_bits, params)  # derives the public permutations
        t0 = time.perf_counter()
        alice = create_reconciler("alice", alice_bits, params)
        bob = create_reconciler("bob", bob_bits, params)
        transcript = run_pair(alice, bob)
        dt = time.perf_counter() - t0
        f = float(bob.disclosed_bits.sum()) / (alice_bits.size * _h2(actual))
        fer = float((bob.corrected_bits != alice_bits).any(axis=1).mean())  # type: ignore[attr-defined]
        results.append((dt, f, fer, len(transcript)))
    yield Record(
        "cascade.bits_per_s", alice_bits.size / statistics.median(r[0] for r in results), "bit/s"
    )
    yield Record("cascade.efficiency", statistics.median(r[1] for r in results), "f")
    yield Record("cascade.fer", statistics.median(r[2] for r in results), "frames")
    yield Record("cascade.messages", statistics.median(r[3] for r in results), "messages")


def bench_amplify() -> Iterable[Record]:
    """Privacy amplification of a 10^7-bit block to 3·10^6 bits.

    ``toeplitz.bits_per_s``: the ``toeplitz`` family, (I | T)·x, with the four-step
    FFT plan (twiddles, working arrays) kept from the previous block, as for the
    blocks of a pass (reused within 10 % of size); ``.cold``: a new plan every call;
    ``toeplitz.plain.bits_per_s``: the plain m × n Toeplitz product;
    ``amplify.mas.bits_per_s``: multiply-add-shift (GMP).
    """
    rng = np.random.default_rng(3)
    n, m = 10_000_000, 3_000_000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, seed_bits("toeplitz", n, m), dtype=np.uint8)
    t = median_time_s(lambda: modified_toeplitz_hash(x, seed, m), repeats=5)
    yield Record("toeplitz.bits_per_s", n / t, "bit/s")

    def cold() -> None:
        clear_fft_cache()
        modified_toeplitz_hash(x, seed, m)

    t = median_time_s(cold, repeats=3)
    yield Record("toeplitz.cold.bits_per_s", n / t, "bit/s")
    plain_seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    t = median_time_s(lambda: toeplitz_hash(x, plain_seed, m), repeats=3)
    yield Record("toeplitz.plain.bits_per_s", n / t, "bit/s")
    seed2 = rng.integers(0, 2, seed_bits("mas", n, m), dtype=np.uint8)
    t = median_time_s(lambda: mas_hash(x, seed2, m), repeats=3)
    yield Record("amplify.mas.bits_per_s", n / t, "bit/s")


def _distill_block(args: tuple[int, int, str]) -> int:
    detections, seed, family = args
    sp = synthesize_pass(np.random.default_rng(seed), detections=detections)
    cfg = DistillConfig(amplify=family)
    block_id = f"bench-{seed}"
    alice = DistillAlice(cfg, sp.alice, np.random.default_rng(seed + 1), block_id=block_id)
    bob = DistillBob(cfg, sp.bob, np.random.default_rng(seed + 2), block_id=block_id)
    run_pair(alice, bob)
    assert bob.outcome is not None
    return bob.outcome.key.key_bits if bob.outcome.key is not None else 0


def bench_micius_pass() -> Iterable[Record]:
    """A whole Micius-class pass (~4 M detections) distilled end to end, one block.

    Synthesis (the simulator's job) is included in the time; it is ~0.4 s.
    """
    times, keys = [], []
    for seed in range(3):
        t0 = time.perf_counter()
        keys.append(_distill_block((4_000_000, 10 + seed, "toeplitz")))
        times.append(time.perf_counter() - t0)
    yield Record("distill.micius_pass.wall_s", statistics.median(times), "s")
    yield Record("distill.micius_pass.key_bits", statistics.median(keys), "bit")
    # the same pass as two independent 2 M-detection blocks in a pool of 2
    workers = min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        times = []
        for seed in range(3):
            t0 = time.perf_counter()
            list(
                pool.map(
                    _distill_block, [(2_000_000, 20 + 2 * seed + i, "toeplitz") for i in range(2)]
                )
            )
            times.append(time.perf_counter() - t0)
    yield Record("distill.micius_pass.pool2_wall_s", statistics.median(times), "s")


BENCHMARKS = [
    Benchmark(names=("sifting.detections_per_s",), run=bench_sifting),
    Benchmark(
        names=("cascade.bits_per_s", "cascade.efficiency", "cascade.fer", "cascade.messages"),
        run=bench_cascade,
    ),
    Benchmark(
        names=(
            "toeplitz.bits_per_s",
            "toeplitz.cold.bits_per_s",
            "toeplitz.plain.bits_per_s",
            "amplify.mas.bits_per_s",
        ),
        run=bench_amplify,
    ),
    Benchmark(
        names=(
            "distill.micius_pass.wall_s",
            "distill.micius_pass.key_bits",
            "distill.micius_pass.pool2_wall_s",
        ),
        run=bench_micius_pass,
    ),
]
