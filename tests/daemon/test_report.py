"""The pass report from telemetry messages: series, text, PNG; and the live progress."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import msgspec

from groundkey_daemon.progress import TelemetryProgress
from groundkey_daemon.report import PassRecord, report_lines, tracking_lines, write_png
from groundkey_protocol import telemetry as tm
from groundkey_protocol.clock import format_utc

T0 = dt.datetime(2016, 12, 19, 16, 50, 49, tzinfo=dt.UTC)
BLOCK = "2f319bab-dc85-4c84-b999-c2861831ef7c"


def at(s: float) -> str:
    return format_utc(T0 + dt.timedelta(seconds=s))


def as_json(message: Any, t_s: float) -> dict[str, Any]:
    """A telemetry message as a subscriber decodes it."""
    doc: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(message))
    doc["time"] = at(t_s)
    return doc


def pass_messages() -> list[dict[str, Any]]:
    st = "xinglong"
    msgs = [as_json(tm.PassEvent(station=st, event="aos", pass_id="p1", satellite="M"), 0.0)]
    for i in range(10):
        t = 10.0 * i
        msgs.append(as_json(tm.Pointing(station=st, az_deg=300.0, el_deg=30.0 + i,
                                        target_az_deg=300.0, target_el_deg=30.0 + i,
                                        error_deg=0.1 * i), t))  # fmt: skip
        msgs.append(as_json(tm.CountRates(station=st, rates_hz={"1": 1000.0 * (i + 1),
                                                                "2": 1000.0, "5": 9500.0},
                                          window_s=10.0), t))  # fmt: skip
    # parked after LOS: no target; the mount at zenith must not count as elevation
    msgs.append(as_json(tm.Pointing(station=st, az_deg=0.0, el_deg=90.0), 150.0))
    msgs.append(as_json(tm.Pointing(station=st, az_deg=0.0, el_deg=90.0, target_az_deg=0.0,
                                    target_el_deg=90.0, error_deg=0.0), 400.0))  # fmt: skip
    msgs.append(as_json(tm.PassEvent(station=st, event="los", pass_id="p1", satellite="M"), 100.0))
    msgs.append(
        as_json(
            tm.KeyExchange(station=st, pass_id="p1", peer="satellite", block_id=BLOCK,
                           key_ids=["k1", "k2"], length_bits=20_000, qber=0.0125,
                           secret_fraction=0.04, eps_sec=1e-9, eps_cor=1e-15),
            110.0,
        )
    )  # fmt: skip
    return msgs


def test_record_collects_series_and_the_report_names_what_matters(tmp_path: Path) -> None:
    record = PassRecord(sync_channel=5, pass_window_s=(T0.timestamp(), T0.timestamp() + 200))
    for message in pass_messages():
        record.add(message)
    assert [p[1] for p in record.pointing] == [30.0 + i for i in range(10)]  # no parking
    assert record.counts[0][1:] == (2000.0, 9500.0, 10.0)  # sync channel kept apart
    assert record.aos_s == T0.timestamp()
    assert record.los_s == T0.timestamp() + 100.0
    (block,) = record.blocks
    assert block.sifted_bits == 500_000  # secret / secret fraction
    assert record.secret_bits == 20_000
    assert math.isclose(record.mean_qber, 0.0125)
    # key rate over time: detection rate x yield per detection
    detections = sum(1000.0 * (i + 2) * 10.0 for i in range(10))
    rates = record.key_rates_hz()
    assert len(rates) == 10
    assert math.isclose(rates[-1][2], 11_000.0 * 20_000 / detections)
    assert math.isclose(sum(r[1] * 10.0 for r in rates), 500_000)

    text = "\n".join(report_lines(record, slice_note="a slice"))
    assert "elevation: max 39.0 deg at 16:52:19Z" in text
    assert "peak 11.0 kHz" in text
    assert "sifted 500000 bits, secret 20000 bits, QBER 1.25 %" in text
    assert BLOCK in text
    assert "key rate: 200 bit/s secret, 5000 bit/s sifted on average over 100 s" in text
    assert "key rate over time" in text
    assert "a slice" in text

    png = write_png(record, tmp_path / "sub" / "report.png", title="test pass")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000


def test_report_without_blocks_says_so(tmp_path: Path) -> None:
    record = PassRecord()
    for message in pass_messages()[:-1]:
        record.add(message)
    assert report_lines(record)[-1] == "no key block was distilled"
    assert record.key_rates_hz() == []
    assert write_png(record, tmp_path / "empty.png").stat().st_size > 10_000


def test_messages_without_time_or_of_other_kinds_are_ignored() -> None:
    record = PassRecord()
    record.add({"type": "pointing", "el_deg": 10.0, "target_el_deg": 10.0})
    record.add({"type": "detectors", "time": at(0.0), "detectors": []})
    record.add({"type": "pointing", "time": "not a time", "target_el_deg": 1.0})
    assert record.pointing == []
    assert record.blocks == []


def test_tracking_lines_from_the_summary() -> None:
    summary = {"max_error_deg": 0.7, "rms_error_deg": math.nan, "threshold_deg": 1.5,
               "samples": 3, "time_on_target_s": 50.0, "tracked_s": 51.0,
               "prepositioned": True, "parked": False}  # fmt: skip
    lines = tracking_lines(summary)
    assert "max 0.700 deg, RMS nan deg over 3 samples" in lines[0]
    assert "50.0 s of 51.0 s tracked" in lines[1]
    assert "pre-positioned before AOS: yes, parked after LOS: NO" in lines[3]


def test_progress_prints_states_blocks_and_paced_status_lines() -> None:
    lines: list[str] = []
    progress = TelemetryProgress(
        write=lines.append, every_s=30.0, pass_window_s=(T0.timestamp(), T0.timestamp() + 200)
    )
    st = "xinglong"
    progress.feed(as_json(tm.StationStatus(station=st, state="tracking",
                                           detail="pass p1: acquire"), 0.0))  # fmt: skip
    progress.feed(as_json(tm.StationStatus(station=st, state="tracking",
                                           detail="pass p1: acquire"), 1.0))  # fmt: skip
    for message in pass_messages():
        progress.feed(message)
    assert lines[0] == "  16:50:49Z state  pass p1: acquire"  # once, not per status
    assert lines[1] == "  16:50:49Z pass   aos p1"
    status = [line for line in lines if " det " in line]
    # one status line per 30 s of pass time, not one per message
    assert len(status) == 6  # 0, 30, 60, 90 s, then the two parking samples
    assert status[0].endswith("el  30.0 deg  err  0.00 deg  det      -  blocks 0 (0 bits)")
    assert status[1].endswith("el  33.0 deg  err  0.30 deg  det   4.00 kHz  blocks 0 (0 bits)")
    assert "el     ? deg" in status[-1]  # parked at 16:57:29: outside the pass
    assert lines[-1] == (f"  16:52:39Z key    block {BLOCK}: 20000 bits, QBER 1.25 %, 2 key(s)")
    assert progress.blocks == 1
    assert progress.key_bits == 20_000
    quiet: list[str] = []
    silent = TelemetryProgress(write=quiet.append, quiet=True)
    for message in pass_messages():
        silent.feed(message)
    assert quiet == []
    assert silent.messages == len(pass_messages())
