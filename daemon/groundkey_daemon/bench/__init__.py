"""Benchmarks behind ``groundkey bench``.

Every module in this package defines ``BENCHMARKS``: a list of :class:`Benchmark`.
A benchmark declares the record names it produces (so ``--only`` can select it
without running it) and a function that returns those records. Report medians
over repeats measured in one run; benchmarks never assert.
"""

from __future__ import annotations

import importlib
import pkgutil
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    value: float
    unit: str

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "unit": self.unit}


@dataclass(frozen=True, slots=True)
class Benchmark:
    names: tuple[str, ...]
    run: Callable[[], Iterable[Record]]

    def selected(self, prefixes: Sequence[str]) -> bool:
        return not prefixes or any(n.startswith(p) for n in self.names for p in prefixes)


def all_benchmarks() -> list[Benchmark]:
    found: list[Benchmark] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "BENCHMARKS", []))
    return found


def median_time_s(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux ru_maxrss is KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
