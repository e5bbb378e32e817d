from __future__ import annotations

import json

import pytest
import zmq
import zmq.asyncio

from groundkey_daemon.service_config import MqttConfig
from groundkey_daemon.telemetry_pub import (
    MqttTelemetryPublisher,
    TelemetryHub,
    ZmqTelemetryPublisher,
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
        seen = []
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
