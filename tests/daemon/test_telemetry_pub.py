from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from groundkey_daemon.keystore import KeyBlock, KeyStore
from groundkey_daemon.metrics import Metrics
from groundkey_daemon.service_config import MqttConfig
from groundkey_daemon.telemetry_pub import (
    MqttTelemetryPublisher,
    TelemetryHub,
    ZmqTelemetryPublisher,
    announce_key_block,
)
from groundkey_protocol import telemetry as tm
from groundkey_protocol.clock import SimClock, parse_utc

STATION = "xinglong"


def clock() -> SimClock:
    return SimClock(epoch=parse_utc("2016-12-19T13:02:00Z"), speed=1.0)


class Recorder:
    def __init__(self) -> None:
        self.items: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        self.items.append((topic, payload, qos, retain))


def test_hub_stamps_and_routes_with_qos_and_retain() -> None:
    rec = Recorder()
    hub = TelemetryHub(STATION, clock=clock(), sinks=[rec])
    hub.publish(tm.StationStatus(station=STATION, state="online"))
    hub.publish(tm.Pointing(station=STATION, az_deg=10.0, el_deg=20.0))
    hub.publish(tm.Pointing(station=STATION, az_deg=11.0, el_deg=21.0))
    hub.publish(tm.PassEvent(station=STATION, event="aos", pass_id="p", satellite="MICIUS"))
    got = [(t, json.loads(p)["seq"], q, r) for t, p, q, r in rec.items]
    assert got == [
        ("groundkey/xinglong/status", 1, 1, True),
        ("groundkey/xinglong/pointing", 1, 0, False),
        ("groundkey/xinglong/pointing", 2, 0, False),
        ("groundkey/xinglong/pass", 1, 1, False),
    ]
    assert json.loads(rec.items[0][1])["time"].startswith("2016-12-19T13:02:")
    with pytest.raises(ValueError, match="station"):
        hub.publish(tm.StationStatus(station="elsewhere", state="online"))


async def test_mqtt_backlog_is_bounded_and_counts_drops() -> None:
    pub = MqttTelemetryPublisher(
        MqttConfig(port=1, backlog_messages=3),
        will_topic="groundkey/xinglong/status",
        will_payload=TelemetryHub.will_payload(STATION),
    )
    hub = TelemetryHub(STATION, clock=clock(), sinks=[pub])
    for i in range(5):
        hub.publish(tm.Pointing(station=STATION, az_deg=float(i), el_deg=0.0))
    assert pub.dropped == 2
    assert len(pub) == 3
    assert not await pub.flush(0.01)
    assert pub.connected is False


async def test_zmq_pub_reaches_a_real_subscriber_in_order() -> None:
    pub = ZmqTelemetryPublisher("tcp://127.0.0.1:0")
    endpoint = pub.start()
    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"groundkey/xinglong/")
    sub.connect(endpoint)
    hub = TelemetryHub(STATION, clock=clock(), sinks=[pub])
    try:
        # PUB drops until the subscription has propagated: ping status until one arrives
        for _ in range(600):
            hub.publish(tm.StationStatus(station=STATION, state="online"))
            if await sub.poll(100):
                break
        else:
            pytest.fail("subscription never propagated")
        for i in range(5):
            hub.publish(tm.Pointing(station=STATION, az_deg=float(i), el_deg=45.0))
        tracker = tm.SequenceTracker()
        seen: list[tuple[int, float]] = []
        while len(seen) < 5:
            assert await sub.poll(30_000)
            topic, payload = await sub.recv_multipart()
            msg = tm.decode(payload)
            assert topic.decode() == tm.topic(msg)
            if isinstance(msg, tm.Pointing):
                tracker.feed(msg)
                seen.append((msg.seq, msg.az_deg))
        assert seen == [(i + 1, float(i)) for i in range(5)]
        assert tracker.missing == 0
    finally:
        sub.close()
        ctx.term()
        pub.close()
    assert pub.dropped == 0


async def test_key_block_is_announced_after_it_is_durable(tmp_path: Path) -> None:
    rec = Recorder()
    hub = TelemetryHub(STATION, clock=clock(), sinks=[rec])
    metrics = Metrics()
    material = bytes(range(256)) * 2
    block = KeyBlock(
        block_id=str(uuid.uuid4()),
        pass_id="41731-20161219T1302",
        peer="micius",
        material=material,
        qber=0.011,
        eps_sec=1e-9,
        eps_cor=1e-15,
        secret_fraction=0.07,
    )
    async with KeyStore(tmp_path, key_size_bytes=64) as store:
        key_ids = await store.store(block)  # durable first ...
        event = announce_key_block(hub, block, key_ids, key_bytes=64, metrics=metrics)
    [(topic, payload, qos, retain)] = rec.items  # ... then announced
    assert (topic, qos, retain) == ("groundkey/xinglong/keyexchange", 1, False)
    assert tm.decode(payload) == event
    assert event.key_ids == key_ids
    assert event.length_bits == 4096
    assert material[:16].hex() not in payload.decode()
    assert base64.b64encode(material[:12]) not in payload
    assert b"groundkey_key_bits_stored_total 4096.0" in metrics.render()


def test_hub_feeds_metrics() -> None:
    metrics = Metrics()
    hub = TelemetryHub(STATION, clock=clock(), sinks=[], metrics=metrics)
    hub.publish(tm.Pointing(station=STATION, az_deg=1.0, el_deg=2.0, error_deg=0.004))
    hub.publish(tm.CountRates(station=STATION, rates_hz={"1": 1500.0}))
    hub.publish(
        tm.DetectorTemps(
            station=STATION, detectors=[tm.DetectorReading(channel=2, temperature_c=-40.5)]
        )
    )
    hub.publish(tm.PassEvent(station=STATION, event="completed", pass_id="p", satellite="M"))
    text = metrics.render().decode()
    assert "groundkey_pointing_error_degrees 0.004" in text
    assert 'groundkey_detector_count_rate_hertz{channel="1"} 1500.0' in text
    assert 'groundkey_detector_temperature_celsius{channel="2"} -40.5' in text
    assert 'groundkey_passes_total{outcome="completed"} 1.0' in text
