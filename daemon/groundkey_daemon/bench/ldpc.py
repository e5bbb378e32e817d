"""LDPC reconciliation benchmarks, and the QBER sweep behind ``groundkey bench reconcile``.

Records, on 9·10^4-bit frames: ``ldpc.bits_per_s.qber{2,5}`` (key bits reconciled
per second, one core, whole protocol: syndrome, decoding, blind round if any),
``ldpc.efficiency.qber{2,5}`` (f = disclosed / (n·h(Q)), true QBER),
``ldpc.fer.qber{2,5}`` (frames whose bits differ from Alice's after reconciliation),
the same for ``ldpc-blind`` as ``ldpc.blind.*``, and ``ldpc.decoder.bits_per_s``
(the decoder alone). ``ldpc.blind.plan.{bits_per_s,efficiency,fer}.qber{1,2}``: blind mode at
the frame size of the frame plan (:func:`frame_bits_for`: 3.6·10^5 key bits at
QBER <= 2.5 %), the same number of key bits per point.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from groundkey_daemon.bench import Benchmark, Record
from groundkey_protocol.qkd.distill import automatic_frame_bits
from groundkey_protocol.qkd.ldpc import (
    RECOMMENDED_FRAME_BITS,
    LdpcAlice,
    LdpcBob,
    frame_bits_for,
    get_code,
    get_decoder,
)
from groundkey_protocol.qkd.ldpc.decoder import bsc_llr
from groundkey_protocol.qkd.reconcile import (
    RECONCILERS,
    ReconcileParams,
    Reconciler,
    create_reconciler,
    run_pair,
)

#: The default operating point: 9·10^4 key bits per frame (9.1·10^4-bit codewords).
FRAME_BITS = RECOMMENDED_FRAME_BITS
FRAMES = 16


def _h2(q: float) -> float:
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


@dataclass(frozen=True, slots=True)
class Point:
    """One method at one QBER: throughput, efficiency, frame error rates, messages."""

    method: str
    qber: float
    frame_bits: int
    bits_per_s: float
    efficiency: float
    fer: float
    messages: int


def _roles(
    method: str, alice_bits: np.ndarray, bob_bits: np.ndarray, params: ReconcileParams
) -> tuple[Reconciler, Reconciler]:
    if method.startswith("ldpc") and method not in RECONCILERS:
        return LdpcAlice(alice_bits, params), LdpcBob(bob_bits, params)
    return (
        create_reconciler("alice", alice_bits, params),
        create_reconciler("bob", bob_bits, params),
    )


def measure(
    method: str, qber: float, *, frames: int = FRAMES, frame_bits: int = FRAME_BITS, seed: int = 0
) -> Point:
    """Reconcile ``frames`` random frames at ``qber`` (estimate = true error rate)."""
    rng = np.random.default_rng([seed, round(qber * 1e6)])
    alice_bits = rng.integers(0, 2, (frames, frame_bits), dtype=np.uint8)
    bob_bits = alice_bits ^ (rng.random((frames, frame_bits)) < qber).astype(np.uint8)
    actual = float((alice_bits != bob_bits).mean())
    params = ReconcileParams(method=method, qber=actual, seed=seed, block_id="bench")
    alice, bob = _roles(method, alice_bits, bob_bits, params)
    t0 = time.perf_counter()
    transcript = run_pair(alice, bob)
    dt = time.perf_counter() - t0
    corrected = bob.corrected_bits  # type: ignore[attr-defined]
    return Point(
        method=method,
        qber=qber,
        frame_bits=frame_bits,
        bits_per_s=alice_bits.size / dt,
        efficiency=float(bob.disclosed_bits.sum()) / (alice_bits.size * _h2(actual)),
        fer=float((corrected != alice_bits).any(axis=1).mean()),
        messages=len(transcript),
    )


def _records(prefix: str, pct: int, points: Sequence[Point], *, speed: bool) -> Iterable[Record]:
    """Median throughput (if ``speed``) and efficiency, mean FER, of one QBER's points."""
    if speed:
        yield Record(
            f"{prefix}.bits_per_s.qber{pct}",
            statistics.median(p.bits_per_s for p in points),
            "bit/s",
        )
    yield Record(
        f"{prefix}.efficiency.qber{pct}", statistics.median(p.efficiency for p in points), "f"
    )
    yield Record(f"{prefix}.fer.qber{pct}", statistics.mean(p.fer for p in points), "frames")


def bench_ldpc() -> Iterable[Record]:
    for method, prefix in (("ldpc", "ldpc"), ("ldpc-blind", "ldpc.blind")):
        for pct in (2, 5):
            points = [measure(method, pct / 100, seed=s) for s in range(3)]
            yield from _records(prefix, pct, points, speed=method == "ldpc")


def bench_plan() -> Iterable[Record]:
    """Blind mode at the frame plan's frame size, QBER 1 and 2 %."""
    for pct in (1, 2):
        bits = frame_bits_for(pct / 100)
        frames = max(1, FRAMES * FRAME_BITS // bits)
        points = [
            measure("ldpc-blind", pct / 100, frames=frames, frame_bits=bits, seed=s)
            for s in range(3)
        ]
        yield from _records("ldpc.blind.plan", pct, points, speed=True)


def bench_decoder() -> Iterable[Record]:
    """The decoder alone on the rate-0.5 code at QBER 7 % (f ≈ 1.28), 64 frames."""
    code = get_code(0.5, 50_000)
    dec = get_decoder(0.5, 50_000)
    rng = np.random.default_rng(4)
    frames, q = 64, 0.07
    x = rng.integers(0, 2, (frames, code.n), dtype=np.uint8)
    y = x ^ (rng.random(x.shape) < q).astype(np.uint8)
    llr = bsc_llr(q) * (1.0 - 2.0 * y.astype(np.float32))
    syndrome = code.syndrome(x)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        dec.decode(llr, syndrome)
        times.append(time.perf_counter() - t0)
    yield Record("ldpc.decoder.bits_per_s", x.size / statistics.median(times), "bit/s")


def reconcile_sweep(
    methods: Sequence[str],
    qbers: Sequence[float],
    *,
    frames: int = 32,
    frame_bits: int = 9_000,
) -> list[Point]:
    """Every method at every QBER (the data of ``groundkey bench reconcile``).

    ``frame_bits = 0``: the daemon's automatic frame sizes (:func:`automatic_frame_bits`:
    LDPC's frame plan, 10^5 bits for Cascade), i.e. its operating points.
    """
    return [
        measure(m, q, frames=frames, frame_bits=frame_bits or automatic_frame_bits(m, q), seed=1)
        for m in methods
        for q in qbers
    ]


def default_methods() -> list[str]:
    """Cascade (when registered) and both LDPC modes."""
    cascade = [m for m in ("cascade-yan", "cascade-original") if m in RECONCILERS]
    return [*cascade, "ldpc", "ldpc-blind"]


def plot_sweep(points: Sequence[Point], path: str | Path) -> None:
    """Draw efficiency and FER against QBER per method into a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_f, ax_fer) = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(p.method for p in points):
        pts = sorted((p for p in points if p.method == method), key=lambda p: p.qber)
        q_pct = [100 * p.qber for p in pts]
        style = "--" if method.endswith("blind") else "-"
        ax_f.plot(q_pct, [p.efficiency for p in pts], style, marker="o", label=method)
        fer = [max(p.fer, 1e-4) for p in pts]
        ax_fer.semilogy(q_pct, fer, style, marker="o", label=method)
    ax_f.axhline(1.0, color="grey", lw=0.8)
    ax_f.set_xlabel("QBER (%)")
    ax_f.set_ylabel("efficiency f = leak / (n h(Q))")
    ax_f.legend()
    ax_fer.set_xlabel("QBER (%)")
    ax_fer.set_ylabel("frame error rate (floor 1e-4 = none seen)")
    ax_fer.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


BENCHMARKS = [
    Benchmark(
        names=tuple(
            f"{prefix}.{what}.qber{pct}"
            for prefix, whats in (
                ("ldpc", ("bits_per_s", "efficiency", "fer")),
                ("ldpc.blind", ("efficiency", "fer")),
            )
            for what in whats
            for pct in (2, 5)
        ),
        run=bench_ldpc,
    ),
    Benchmark(
        names=tuple(
            f"ldpc.blind.plan.{what}.qber{pct}"
            for what in ("bits_per_s", "efficiency", "fer")
            for pct in (1, 2)
        ),
        run=bench_plan,
    ),
    Benchmark(names=("ldpc.decoder.bits_per_s",), run=bench_decoder),
]
