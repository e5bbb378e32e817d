"""Telemetry publishers: ZeroMQ PUB and MQTT (aiomqtt 2.x), fed by one :class:`TelemetryHub`.

The hub stamps each message with its per-kind sequence number and the time
(:mod:`groundkey_protocol.telemetry`) and hands ``(topic, JSON)`` to the sinks.
Neither sink ever blocks the caller:

- ZeroMQ PUB drops at its high-water mark (and before a subscription has
  propagated); subscribers detect gaps from the sequence numbers.
- MQTT keeps a bounded backlog. While the broker is away messages queue up; when
  the backlog is full the oldest message is dropped and counted. A reconnect
  loop around ``async with aiomqtt.Client(...)`` drains the backlog in order on
  every (re)connection; a message leaves the backlog only after the broker
  accepted it (QoS 1 PUBACK), so a message may be delivered twice after a
  connection loss, never silently skipped. Events (status, pass, key exchange)
  use QoS 1; high-rate telemetry QoS 0. The station status is retained and the
  broker's last will marks the station ``offline``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from dataclasses import dataclass
from typing import Protocol

import aiomqtt
import zmq

from groundkey_daemon.keystore import KeyBlock
from groundkey_daemon.metrics import Metrics
from groundkey_daemon.service_config import MqttConfig, TelemetryConfig, read_secret
from groundkey_protocol import telemetry as tm
from groundkey_protocol.clock import Clock

__all__ = [
    "MqttTelemetryPublisher",
    "Sink",
    "TelemetryHub",
    "TelemetryService",
    "ZmqTelemetryPublisher",
    "announce_key_block",
    "qos_for",
]

log = logging.getLogger(__name__)

_EVENT_KINDS = frozenset({"status", "pass", "keyexchange"})


def qos_for(kind: str) -> int:
    return 1 if kind in _EVENT_KINDS else 0


class Sink(Protocol):
    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None: ...


class ZmqTelemetryPublisher:
    """ZeroMQ PUB: frames ``[topic, json]``; subscribe by topic prefix."""

    def __init__(self, bind: str, *, sndhwm: int = 10000) -> None:
        self.bind = bind
        self.sndhwm = sndhwm
        self.endpoint = ""
        self.published = 0
        self.dropped = 0
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None

    def start(self) -> str:
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.sndhwm)
        sock.bind(self.bind[:-2] + ":*" if self.bind.endswith(":0") else self.bind)
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.endpoint

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        if self._sock is None:
            self.dropped += 1
            return
        try:
            self._sock.send_multipart([topic.encode(), payload], flags=zmq.NOBLOCK)
            self.published += 1
        except zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


@dataclass(frozen=True, slots=True)
class _Item:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttTelemetryPublisher:
    """MQTT publisher with a bounded backlog and a reconnect loop (:meth:`run`)."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        will_topic: str,
        will_payload: bytes,
        identifier: str | None = None,
    ) -> None:
        self.config = config
        self.will_topic = will_topic
        self.will_payload = will_payload
        self.identifier = identifier or config.client_id
        self.dropped = 0
        self.published = 0
        self.connects = 0
        self.connected = False
        self._backlog: collections.deque[_Item] = collections.deque()
        self._retained: dict[str, _Item] = {}
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()

    def __repr__(self) -> str:
        return f"MqttTelemetryPublisher({self.config.host}:{self.config.port})"

    def __len__(self) -> int:
        return len(self._backlog)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a message (never blocks); drops the oldest when the backlog is full."""
        item = _Item(topic, payload, qos, retain)
        if len(self._backlog) >= self.config.backlog_messages:
            self._backlog.popleft()
            self.dropped += 1
        self._backlog.append(item)
        if retain:
            self._retained[topic] = item
        self._drained.clear()
        self._wakeup.set()

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        (self._up if up else self._down).set()
        (self._down if up else self._up).clear()

    async def wait_connected(self, connected: bool = True) -> None:
        """Wait until the broker connection is up (or, with False, down)."""
        await (self._up if connected else self._down).wait()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the backlog is empty; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    def _client(self) -> aiomqtt.Client:
        c = self.config
        password = read_secret(c.password_file).decode() if c.password_file else None
        tls_params = None
        if c.tls is not None:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=c.tls.ca_file,
                certfile=c.tls.cert_file,
                keyfile=c.tls.key_file,
                cert_reqs=ssl.CERT_NONE if c.tls.insecure else ssl.CERT_REQUIRED,
            )
        return aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=password,
            identifier=self.identifier,
            keepalive=c.keepalive_s,
            timeout=c.publish_timeout_s,
            will=aiomqtt.Will(self.will_topic, self.will_payload, qos=1, retain=True),
            tls_params=tls_params,
            tls_insecure=c.tls.insecure if c.tls is not None else None,
        )

    async def run(self) -> None:
        """Connect, drain, reconnect with backoff; runs until cancelled."""
        delay_s = self.config.reconnect_min_s
        while True:
            try:
                async with self._client() as client:
                    self._set_connected(True)
                    self.connects += 1
                    delay_s = self.config.reconnect_min_s
                    log.info("MQTT connected to %s:%d", self.config.host, self.config.port)
                    await self._republish_retained(client)
                    await self._drain(client)
            except aiomqtt.MqttError as exc:
                if self.connected:
                    log.warning("MQTT connection lost: %s", exc)
                else:
                    log.info("MQTT connect failed: %s (retry in %.1f s)", exc, delay_s)
            finally:
                self._set_connected(False)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self.config.reconnect_max_s)

    async def _republish_retained(self, client: aiomqtt.Client) -> None:
        """After a reconnect the will may have replaced our status: restore it."""
        queued = {item.topic for item in self._backlog if item.retain}
        for topic, item in list(self._retained.items()):
            if topic not in queued:
                await client.publish(topic, item.payload, qos=item.qos, retain=True)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish the backlog whenever it grows; raise MqttError when the connection
        drops, also while idle (noticed through the client's public message iterator,
        which ends with MqttError on a disconnect; we subscribe to nothing)."""
        watch = asyncio.ensure_future(_until_disconnected(client))
        try:
            while True:
                while self._backlog:
                    item = self._backlog[0]
                    await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
                    if self._backlog and self._backlog[0] is item:
                        self._backlog.popleft()
                    self.published += 1
                self._drained.set()
                self._wakeup.clear()
                waker = asyncio.ensure_future(self._wakeup.wait())
                try:
                    await asyncio.wait((waker, watch), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                if watch.done():
                    watch.result()  # raises the MqttError of the disconnect
                    raise aiomqtt.MqttError("disconnected")
        finally:
            watch.cancel()


async def _until_disconnected(client: aiomqtt.Client) -> None:
    async for _ in client.messages:  # no subscriptions: ends only with the connection
        pass


class TelemetryHub:
    """Stamps telemetry messages and fans them out to the configured sinks."""

    def __init__(
        self, station: str, *, clock: Clock, sinks: list[Sink], metrics: Metrics | None = None
    ) -> None:
        self.station = station
        self.clock = clock
        self.sinks = sinks
        self.metrics = metrics
        self._sequencer = tm.Sequencer()

    @staticmethod
    def will_payload(station: str) -> bytes:
        """Payload the broker publishes for us when we vanish (seq 0: broker-made)."""
        return tm.encode(
            tm.StationStatus(station=station, state="offline", detail="connection lost")
        )

    def publish(self, message: tm.TelemetryMessage) -> tm.TelemetryMessage:
        """Stamp (seq, time) and publish; returns the stamped message."""
        if message.station != self.station:
            raise ValueError(f"message for station {message.station!r}, hub is {self.station!r}")
        stamped = self._sequencer.stamp(message, self.clock.now_s())
        kind = tm.kind(stamped)
        payload = tm.encode(stamped)
        topic = tm.topic(stamped)
        for sink in self.sinks:
            sink.publish(topic, payload, qos=qos_for(kind), retain=kind == "status")
        if self.metrics is not None:
            self.metrics.observe_telemetry(stamped)
        return stamped


class TelemetryService:
    """The ``[telemetry]`` section made real: hub + ZeroMQ PUB + MQTT, with metrics.

    Run :meth:`run` in the supervisor's TaskGroup; publish through :attr:`hub`;
    call :meth:`stop` on orderly shutdown (publishes ``offline`` and flushes).
    """

    def __init__(
        self, config: TelemetryConfig, *, clock: Clock, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        station = config.station
        self.zmq = ZmqTelemetryPublisher(config.zmq.bind, sndhwm=config.zmq.sndhwm)
        self.mqtt = MqttTelemetryPublisher(
            config.mqtt,
            will_topic=f"{tm.TOPIC_ROOT}/{station}/status",
            will_payload=TelemetryHub.will_payload(station),
            identifier=config.mqtt.client_id or f"groundkey-{station}",
        )
        sinks: list[Sink] = []
        if config.zmq.enabled:
            sinks.append(self.zmq)
        if config.mqtt.enabled:
            sinks.append(self.mqtt)
        self.hub = TelemetryHub(station, clock=clock, sinks=sinks, metrics=metrics)
        if metrics is not None:
            mqtt, zpub = self.mqtt, self.zmq
            metrics.track_queue("mqtt", lambda: mqtt.dropped, lambda: len(mqtt))
            metrics.track_queue("zmq_pub", lambda: zpub.dropped, lambda: 0)
            metrics.mqtt_connected.set_function(lambda: float(mqtt.connected))

    async def run(self) -> None:
        if self.config.zmq.enabled:
            self.zmq.start()
        try:
            if self.config.mqtt.enabled:
                await self.mqtt.run()
            else:
                await asyncio.Event().wait()
        finally:
            self.zmq.close()

    async def stop(self, timeout_s: float = 5.0) -> bool:
        """Announce ``offline`` (retained) and wait for MQTT to flush; False on timeout."""
        self.hub.publish(
            tm.StationStatus(station=self.config.station, state="offline", detail="shutdown")
        )
        if not self.config.mqtt.enabled:
            return True
        return await self.mqtt.flush(timeout_s)


def announce_key_block(
    hub: TelemetryHub,
    block: KeyBlock,
    key_ids: list[str],
    *,
    key_bytes: int,
    metrics: Metrics | None = None,
) -> tm.KeyExchange:
    """Publish a stored block's metadata (call only after ``KeyStore.store`` returned)."""
    event = tm.KeyExchange(
        station=hub.station,
        pass_id=block.pass_id,
        peer=block.peer,
        block_id=block.block_id,
        key_ids=list(key_ids),
        length_bits=block.length_bits,
        key_bytes=key_bytes,
        qber=block.qber,
        secret_fraction=block.secret_fraction,
        eps_sec=block.eps_sec,
        eps_cor=block.eps_cor,
    )
    if metrics is not None:
        metrics.key_bits_stored.inc(block.length_bits)
        metrics.key_blocks.labels(outcome="stored").inc()
        metrics.qber.set(block.qber)
        metrics.secret_fraction.set(block.secret_fraction)
    stamped = hub.publish(event)
    assert isinstance(stamped, tm.KeyExchange)
    return stamped
