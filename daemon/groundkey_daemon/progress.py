"""Progress lines and summaries of a tracked pass, for the CLI (``track``, ``demo``)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

from groundkey_daemon.tracking import PointingStats, TrackSample

__all__ = ["ProgressPrinter", "summary_lines"]


def _hms(t_s: float) -> str:
    return dt.datetime.fromtimestamp(t_s, tz=dt.UTC).strftime("%H:%M:%SZ")


class ProgressPrinter:
    """Prints one line per ``every_s`` of (simulated) time, and every phase change."""

    def __init__(self, *, every_s: float = 15.0, write: Callable[[str], None] = print) -> None:
        self.every_s = every_s
        self.write = write
        self._last_t = -math.inf
        self._last_phase = ""

    def __call__(self, sample: TrackSample) -> None:
        if sample.time_s - self._last_t < self.every_s and sample.phase == self._last_phase:
            return
        self._last_t = sample.time_s
        self._last_phase = sample.phase
        self.write(format_sample(sample))


def format_sample(sample: TrackSample) -> str:
    cmd = sample.commanded
    rep = sample.reported
    cmd_text = f"cmd {cmd.az_deg:6.1f} {cmd.el_deg:5.1f}" if cmd else "cmd   hold      "
    rep_text = f"rep {rep.az_deg:6.1f} {rep.el_deg:5.1f}" if rep else "rep      ?     ?"
    flags = "".join([" keyhole" if sample.keyhole else "", " sun-hold" if sample.sun_hold else ""])
    what = "err" if sample.phase == "track" else "to go"
    error = f"{sample.error_deg:6.2f}" if math.isfinite(sample.error_deg) else "     ?"
    return (
        f"  {_hms(sample.time_s)} {sample.phase:<11} {cmd_text}  {rep_text}  "
        f"sat {sample.satellite.az_deg:5.1f} {sample.satellite.el_deg:4.1f}  "
        f"{what} {error} deg{flags}"
    )


def summary_lines(stats: PointingStats) -> list[str]:
    """Human summary of a pass: pointing error, time on target, keyhole and sun time."""
    lines = [
        f"pointing error (reported vs satellite, outside keyhole/sun hold): "
        f"max {stats.max_error_deg:.3f} deg, RMS {stats.rms_error_deg:.3f} deg "
        f"over {stats.samples} samples",
        f"time on target (<= {stats.threshold_deg:g} deg): {stats.time_on_target_s:.1f} s "
        f"of {stats.tracked_s:.1f} s tracked",
        f"keyhole manoeuvre ({stats.strategy}): {stats.keyhole_s:.1f} s "
        f"(max error there {stats.keyhole_max_error_deg:.2f} deg)",
        f"sun hold: {stats.sun_hold_s:.1f} s, closest approach to the Sun "
        f"{stats.min_sun_separation_deg:.1f} deg",
        f"pre-positioned before AOS: {'yes' if stats.prepositioned else 'NO'}, "
        f"parked after LOS: {'yes' if stats.parked else 'NO'}",
        f"late cycles (excluded above): {stats.late_cycles}, max error there "
        f"{stats.late_max_error_deg:.2f} deg",
        f"rotator errors: {stats.rotator_errors} (reconnects {stats.reconnects}), "
        f"command cycle {stats.cycle_s:.2f} s, link latency {stats.latency_s * 1000:.0f} ms "
        f"(simulated time)",
    ]
    return lines
