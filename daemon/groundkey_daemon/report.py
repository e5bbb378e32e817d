"""Pass report from the daemon's telemetry: text and a PNG plot (matplotlib, Agg).

:class:`PassRecord` collects the telemetry messages of one pass (as decoded JSON)
into time series: elevation and pointing error, detection rates, key blocks.
:func:`report_lines` renders the human report, :func:`write_png` the plot.
Key material never appears here: the telemetry carries IDs and lengths only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundkey_protocol.clock import parse_utc

__all__ = ["BlockRow", "PassRecord", "report_lines", "tracking_lines", "write_png"]


def _time_s(message: dict[str, Any]) -> float | None:
    text = message.get("time")
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_utc(text).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class BlockRow:
    """One distilled key block as announced on telemetry."""

    time_s: float
    block_id: str
    length_bits: int
    qber: float
    secret_fraction: float
    n_keys: int

    @property
    def sifted_bits(self) -> int:
        """Sifted key behind the block (secret = sifted x secret fraction)."""
        if self.secret_fraction <= 0:
            return 0
        return round(self.length_bits / self.secret_fraction)


@dataclass(slots=True)
class PassRecord:
    """Time series of one pass, fed with decoded telemetry messages.

    ``pointing``: (time, satellite elevation, pointing error); ``counts``: (time,
    detection rate without the sync beacon, sync rate, window); ``predicted_el``
    optionally holds the predicted elevation curve (time, deg) for the plot."""

    sync_channel: int = 5
    pointing: list[tuple[float, float, float]] = field(default_factory=list)
    counts: list[tuple[float, float, float, float]] = field(default_factory=list)
    blocks: list[BlockRow] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    predicted_el: list[tuple[float, float]] = field(default_factory=list)
    #: (AOS, LOS) of the predicted pass: pointing outside it (parking) is not kept
    pass_window_s: tuple[float, float] | None = None
    aos_s: float | None = None
    los_s: float | None = None
    pass_id: str = ""

    def add(self, message: dict[str, Any]) -> None:
        t_s = _time_s(message)
        if t_s is None:
            return
        kind = message.get("type")
        if kind == "pointing":
            target = message.get("target_el_deg")
            window = self.pass_window_s
            if target is None or (window is not None and not window[0] <= t_s <= window[1]):
                return  # pre-positioning or parking, nothing to follow
            error = message.get("error_deg")
            self.pointing.append((t_s, float(target), math.nan if error is None else float(error)))
        elif kind == "counts":
            rates = {int(k): float(v) for k, v in dict(message["rates_hz"]).items()}
            sync_hz = rates.pop(self.sync_channel, 0.0)
            window_s = float(message.get("window_s", 1.0))
            self.counts.append((t_s, sum(rates.values()), sync_hz, window_s))
        elif kind == "keyexchange":
            self.blocks.append(
                BlockRow(
                    time_s=t_s,
                    block_id=str(message["block_id"]),
                    length_bits=int(message["length_bits"]),
                    qber=float(message["qber"]),
                    secret_fraction=float(message["secret_fraction"]),
                    n_keys=len(message.get("key_ids", [])),
                )
            )
        elif kind == "pass":
            event = str(message.get("event", ""))
            self.pass_id = str(message.get("pass_id", self.pass_id))
            self.events.append((t_s, event))
            if event == "aos":
                self.aos_s = t_s
            elif event == "los":
                self.los_s = t_s

    @property
    def secret_bits(self) -> int:
        return sum(b.length_bits for b in self.blocks)

    @property
    def sifted_bits(self) -> int:
        return sum(b.sifted_bits for b in self.blocks)

    @property
    def detections(self) -> float:
        """Detections (sync beacon excluded) over the reported count windows."""
        return sum(c[1] * c[3] for c in self.counts)

    def key_rates_hz(self) -> list[tuple[float, float, float]]:
        """(time, sifted, secret) key rate over the pass: the detection rate times the
        pass's measured sifted and secret yield per detection."""
        detections = self.detections
        if not detections or not self.blocks:
            return []
        sifted_yield = self.sifted_bits / detections
        secret_yield = self.secret_bits / detections
        return [(t, hz * sifted_yield, hz * secret_yield) for t, hz, _, _ in self.counts]

    @property
    def mean_qber(self) -> float:
        sifted = self.sifted_bits
        if not sifted:
            return math.nan
        return sum(b.qber * b.sifted_bits for b in self.blocks) / sifted


def _hms(t_s: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t_s, tz=dt.UTC).strftime("%H:%M:%SZ")


def tracking_lines(summary: dict[str, Any]) -> list[str]:
    """The tracking summary (``PointingStats.summary()``) as text."""
    s = summary
    return [
        f"pointing error (outside keyhole/sun hold): max {s.get('max_error_deg', math.nan):.3f} "
        f"deg, RMS {s.get('rms_error_deg', math.nan):.3f} deg over {s.get('samples', 0)} samples",
        f"time on target (<= {s.get('threshold_deg', math.nan):g} deg): "
        f"{s.get('time_on_target_s', 0.0):.1f} s of {s.get('tracked_s', 0.0):.1f} s tracked",
        f"keyhole manoeuvre ({s.get('strategy', '?')}): {s.get('keyhole_s', 0.0):.1f} s, "
        f"sun hold {s.get('sun_hold_s', 0.0):.1f} s "
        f"(closest to the Sun {s.get('min_sun_separation_deg', math.nan):.1f} deg)",
        f"pre-positioned before AOS: {'yes' if s.get('prepositioned') else 'NO'}, "
        f"parked after LOS: {'yes' if s.get('parked') else 'NO'}, "
        f"rotator errors {s.get('rotator_errors', 0)} (reconnects {s.get('reconnects', 0)}), "
        f"late cycles {s.get('late_cycles', 0)}",
    ]


def report_lines(record: PassRecord, *, slice_note: str = "") -> list[str]:
    """Elevation, count rates, QBER, sifted and secret bits, key rate over time."""
    lines: list[str] = []
    if record.pointing:
        peak = max(record.pointing, key=lambda p: p[1])
        lines.append(
            f"elevation: max {peak[1]:.1f} deg at {_hms(peak[0])} "
            f"({len(record.pointing)} pointing samples)"
        )
    if record.counts:
        peak_c = max(record.counts, key=lambda c: c[1])
        mean_hz = sum(c[1] for c in record.counts) / len(record.counts)
        lines.append(
            f"detection rate (signal + background, sync beacon excluded): "
            f"peak {peak_c[1] / 1e3:.1f} kHz at {_hms(peak_c[0])}, mean {mean_hz / 1e3:.1f} kHz; "
            f"sync beacon {peak_c[2] / 1e3:.1f} kHz"
        )
    if slice_note:
        lines.append(slice_note)
    if not record.blocks:
        lines.append("no key block was distilled")
        return lines
    lines.append(
        f"key blocks: {len(record.blocks)}, sifted {record.sifted_bits} bits, "
        f"secret {record.secret_bits} bits, QBER {100 * record.mean_qber:.2f} % (sifted-weighted)"
    )
    lines.append("  time        block                                 QBER %   sifted   secret")
    for b in record.blocks:
        lines.append(
            f"  {_hms(b.time_s)}   {b.block_id}  {100 * b.qber:6.2f} {b.sifted_bits:8d} "
            f"{b.length_bits:8d}"
        )
    span_s = _acquired_span_s(record)
    if span_s > 0:
        lines.append(
            f"key rate: {record.secret_bits / span_s:.0f} bit/s secret, "
            f"{record.sifted_bits / span_s:.0f} bit/s sifted on average over {span_s:.0f} s "
            f"of acquisition"
        )
    rates = record.key_rates_hz()
    if rates:
        lines.append("key rate over time (detection rate x measured yield per detection):")
        lines.append("  time        elevation  detections   sifted bit/s   secret bit/s")
        for t_s, sifted_hz, secret_hz in rates[:: max(1, len(rates) // 12)]:
            hz = next(c[1] for c in record.counts if c[0] == t_s)
            el = _elevation_at(record, t_s)
            el_text = f"{el:5.1f} deg" if math.isfinite(el) else "    ?    "
            lines.append(
                f"  {_hms(t_s)}   {el_text}  {hz / 1e3:7.2f} kHz {sifted_hz:12.0f} "
                f"{secret_hz:14.0f}"
            )
    return lines


def _elevation_at(record: PassRecord, t_s: float) -> float:
    curve = record.predicted_el or [(p[0], p[1]) for p in record.pointing]
    if not curve:
        return math.nan
    return min(curve, key=lambda c: abs(c[0] - t_s))[1]


def _acquired_span_s(record: PassRecord) -> float:
    if record.aos_s is not None and record.los_s is not None and record.los_s > record.aos_s:
        return record.los_s - record.aos_s
    if record.counts:
        return record.counts[-1][0] - record.counts[0][0]
    return 0.0


def write_png(record: PassRecord, path: Path, *, title: str = "") -> Path:
    """Elevation and pointing error, count rates, key rate, cumulative secret key and QBER
    over (simulated) UTC; the acquisition window shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    def dates(ts: list[float]) -> list[Any]:
        return [_dt(t) for t in ts]

    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True, constrained_layout=True)
    ax_el, ax_rate, ax_kr, ax_key = axes
    if record.predicted_el:
        ax_el.plot(dates([p[0] for p in record.predicted_el]),
                   [p[1] for p in record.predicted_el], "-", color="tab:blue",
                   label="satellite (predicted)")  # fmt: skip
    if record.pointing:
        t = dates([p[0] for p in record.pointing])
        ax_el.plot(t, [p[1] for p in record.pointing], "o", ms=3, color="tab:blue",
                   label="telemetry")  # fmt: skip
        ax_err = ax_el.twinx()
        ax_err.plot(t, [p[2] for p in record.pointing], "x", color="tab:red", ms=4)
        ax_err.set_ylabel("pointing error (deg)", color="tab:red")
        ax_err.tick_params(axis="y", colors="tab:red")
        ax_err.set_ylim(0, max(2.0, 1.2 * max((p[2] for p in record.pointing
                                               if math.isfinite(p[2])), default=0.0)))  # fmt: skip
    ax_el.set_ylabel("elevation (deg)", color="tab:blue")
    ax_el.tick_params(axis="y", colors="tab:blue")
    ax_el.legend(loc="lower left", fontsize=8)
    if record.counts:
        t = dates([c[0] for c in record.counts])
        ax_rate.plot(t, [c[1] / 1e3 for c in record.counts], "o-", ms=3, color="tab:green",
                     label="detections (sync excluded)")  # fmt: skip
        ax_rate.plot(t, [c[2] / 1e3 for c in record.counts], "--", color="tab:gray",
                     label="sync beacon")  # fmt: skip
        ax_rate.legend(loc="upper left", fontsize=8)
    ax_rate.set_ylabel("count rate (kHz)")
    ax_rate.set_ylim(bottom=0)
    rates = record.key_rates_hz()
    if rates:
        t = dates([r[0] for r in rates])
        ax_kr.plot(t, [r[1] for r in rates], "o-", ms=3, color="tab:cyan", label="sifted")
        ax_kr.plot(t, [r[2] for r in rates], "o-", ms=3, color="tab:purple",
                   label="secret")  # fmt: skip
        ax_kr.legend(loc="upper left", fontsize=8)
    ax_kr.set_ylabel("key rate (bit/s)")
    ax_kr.set_yscale("log")
    if record.blocks:
        t = dates([b.time_s for b in record.blocks])
        cumulative = np.cumsum([b.length_bits for b in record.blocks]) / 1e3
        start = record.aos_s if record.aos_s is not None else record.blocks[0].time_s
        ax_key.step(dates([start]) + t, [0.0, *cumulative], "-", where="post", color="tab:purple")
        ax_key.plot(t, cumulative, "o", color="tab:purple")
        for when, total, block in zip(t, cumulative, record.blocks, strict=True):
            ax_key.annotate(f"{total:.1f} kbit, QBER {100 * block.qber:.2f} %", (when, total),
                            textcoords="offset points", xytext=(-8, 6), ha="right",
                            fontsize=8)  # fmt: skip
        ax_key.set_ylim(0, 1.3 * float(cumulative[-1]))
    ax_key.set_ylabel("secret key stored (kbit)")
    ax_key.set_xlabel("UTC (simulated clock)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if record.aos_s is not None and record.los_s is not None:
            a, b = dates([record.aos_s, record.los_s])
            ax.axvspan(a, b, color="gold", alpha=0.15, lw=0)
    ax_rate.text(0.99, 0.95, "shaded: acquisition", transform=ax_rate.transAxes,
                 ha="right", va="top", fontsize=8)  # fmt: skip
    ax_key.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    fig.suptitle(title or f"pass {record.pass_id}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _dt(t_s: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(t_s, tz=dt.UTC).replace(tzinfo=None)
