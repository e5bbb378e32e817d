"""Progress lines and summaries of a pass, for the CLI (``track``, ``demo``).

:class:`ProgressPrinter` follows a local :class:`Tracker`; :class:`TelemetryProgress`
follows a running daemon through its telemetry messages (decoded JSON).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Callable
from typing import Any

from groundkey_daemon.tracking import PointingStats, TrackSample
from groundkey_protocol.clock import parse_utc

__all__ = ["ProgressPrinter", "TelemetryProgress", "summary_lines"]


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


class TelemetryProgress:
    """Live progress from a daemon's telemetry: every state change and key block, and a
    line of elevation, pointing error, detection rate and blocks every ``every_s`` of the
    daemon's (simulated) time. Elevation is shown inside ``pass_window_s`` only."""

    def __init__(
        self,
        *,
        every_s: float = 10.0,
        write: Callable[[str], None] = print,
        quiet: bool = False,
        sync_channel: int = 5,
        pass_window_s: tuple[float, float] | None = None,
    ) -> None:
        self.every_s = every_s
        self.pass_window_s = pass_window_s
        self.write = write
        self.quiet = quiet
        self.sync_channel = sync_channel
        self.messages = 0
        self.blocks = 0
        self.key_bits = 0
        self._detail = ""
        self._el_deg = math.nan
        self._error_deg = math.nan
        self._rate_hz = math.nan
        self._time = ""
        self._time_s = -math.inf
        self._next_s = -math.inf

    def feed(self, message: dict[str, Any]) -> None:
        self.messages += 1
        kind = message.get("type")
        stamp = str(message.get("time", ""))
        if len(stamp) >= 19:
            self._time = stamp[11:19]
            with contextlib.suppress(ValueError):
                self._time_s = parse_utc(stamp).timestamp()
        if kind == "status":
            detail = str(message.get("detail", ""))
            if detail and detail != self._detail and detail.startswith("pass "):
                self._detail = detail
                self._say(f"state  {detail}")
        elif kind == "pass":
            if message.get("event") == "los":
                self._rate_hz = math.nan
            reason = message.get("reason") or ""
            self._say(f"pass   {message.get('event')} {message.get('pass_id')} {reason}".rstrip())
        elif kind == "pointing":
            target = message.get("target_el_deg")
            window = self.pass_window_s
            if window is not None and not window[0] <= self._time_s <= window[1]:
                target = None
            error = message.get("error_deg")
            self._el_deg = math.nan if target is None else float(target)
            self._error_deg = math.nan if error is None or target is None else float(error)
            self._tick()
        elif kind == "counts":
            rates = {int(k): float(v) for k, v in dict(message.get("rates_hz", {})).items()}
            rates.pop(self.sync_channel, None)
            self._rate_hz = sum(rates.values())
            self._tick()
        elif kind == "keyexchange":
            self.blocks += 1
            self.key_bits += int(message.get("length_bits", 0))
            self._say(
                f"key    block {message.get('block_id')}: {message.get('length_bits')} bits, "
                f"QBER {100 * float(message.get('qber', 0.0)):.2f} %, "
                f"{len(message.get('key_ids', []))} key(s)"
            )

    def _tick(self) -> None:
        if self._time_s < self._next_s:
            return
        if not (math.isfinite(self._el_deg) or math.isfinite(self._rate_hz)):
            return  # slewing or parked: the state lines say so
        self._next_s = self._time_s + self.every_s
        el = f"el {self._el_deg:5.1f} deg" if math.isfinite(self._el_deg) else "el     ? deg"
        err = f"err {self._error_deg:5.2f} deg" if math.isfinite(self._error_deg) else "err     ?"
        rate = (
            f"det {self._rate_hz / 1e3:6.2f} kHz" if math.isfinite(self._rate_hz) else "det      -"
        )
        self._say(f"{el}  {err}  {rate}  blocks {self.blocks} ({self.key_bits} bits)")

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.write(f"  {self._time or '--:--:--'}Z {text}")
