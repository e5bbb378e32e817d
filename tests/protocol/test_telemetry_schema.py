from __future__ import annotations

import json

import pytest
from msgspec.structs import replace

from groundkey_protocol import telemetry as tm
from groundkey_protocol.errors import ProtocolError

T0_S = 1482105600.0  # 2016-12-19T00:00:00Z, near the Micius TLE epoch


def key_event() -> tm.KeyExchange:
    return tm.KeyExchange(
        station="xinglong",
        pass_id="2016-12-19T13:02Z-41731",
        peer="micius",
        block_id="7f1d6b1e-0000-4000-8000-000000000001",
        key_ids=["a", "b"],
        length_bits=512,
        qber=0.011,
        secret_fraction=0.12,
        eps_sec=1e-9,
        eps_cor=1e-15,
    )


def test_roundtrip_every_kind_and_topic() -> None:
    seq = tm.Sequencer()
    messages: list[tm.TelemetryMessage] = [
        tm.StationStatus(station="xinglong", state="online", version="0.1.0"),
        tm.Pointing(station="xinglong", az_deg=181.5, el_deg=42.0, error_deg=0.01),
        tm.CountRates(station="xinglong", rates_hz={"1": 1.2e4, "2": 9.0e3}),
        tm.DetectorTemps(
            station="xinglong",
            detectors=[tm.DetectorReading(channel=1, temperature_c=-40.1, armed=True)],
        ),
        tm.PassEvent(station="xinglong", event="aos", pass_id="p1", satellite="MICIUS"),
        key_event(),
    ]
    topics = []
    for m in messages:
        stamped = seq.stamp(m, T0_S)
        assert stamped.seq == 1
        assert stamped.time == "2016-12-19T00:00:00.000Z"
        data = tm.encode(stamped)
        assert tm.decode(data) == stamped
        assert json.loads(data)["v"] == tm.SCHEMA_VERSION
        topics.append(tm.topic(stamped))
    assert topics == [
        f"groundkey/xinglong/{k}"
        for k in ("status", "pointing", "counts", "detectors", "pass", "keyexchange")
    ]
    assert seq.stamp(messages[0], T0_S).seq == 2  # per-kind numbering


def test_key_exchange_event_has_no_material_field() -> None:
    doc = json.loads(tm.encode(key_event()))
    assert set(doc) == {
        "type", "station", "seq", "time", "v", "pass_id", "peer", "block_id", "key_ids",
        "length_bits", "qber", "secret_fraction", "eps_sec", "eps_cor", "key_bytes",
    }  # fmt: skip


def test_unknown_fields_ignored_but_bad_input_rejected() -> None:
    doc = json.loads(tm.encode(key_event()))
    doc["future_field"] = 3
    assert isinstance(tm.decode(json.dumps(doc)), tm.KeyExchange)
    with pytest.raises(ProtocolError, match="version"):
        tm.decode(json.dumps({**doc, "v": 2}))
    with pytest.raises(ProtocolError):
        tm.decode(b'{"type": "nope", "station": "x"}')
    with pytest.raises(ProtocolError):
        tm.decode(b"not json")
    with pytest.raises(ProtocolError):
        tm.decode(json.dumps({**doc, "qber": "high"}))


def test_sequence_tracker_counts_gaps_and_duplicates() -> None:
    tracker = tm.SequenceTracker()
    base = tm.Pointing(station="xinglong", az_deg=0.0, el_deg=10.0)
    other = tm.Pointing(station="nanshan", az_deg=0.0, el_deg=10.0)
    gaps = [tracker.feed(replace(base, seq=s)) for s in (1, 2, 5, 5, 6)]
    assert gaps == [0, 0, 2, 0, 0]
    assert (tracker.missing, tracker.duplicates) == (2, 1)
    assert tracker.feed(replace(other, seq=7)) == 0  # its own stream
    assert tracker.feed(replace(base, seq=1)) == 0  # publisher restarted
    assert tracker.feed(replace(base, seq=3)) == 1
