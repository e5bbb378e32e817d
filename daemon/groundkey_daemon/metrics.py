"""Prometheus metrics (one ``groundkey_`` prefix, base units, ``_total`` counters, no
pass or key IDs as labels), served over HTTP on 127.0.0.1 by default, and the
event-loop lag monitor the supervisor uses as a health signal.

The HTTP endpoint is a tiny asyncio server (``GET /metrics``), so no thread is
involved and shutdown is just closing the server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from groundkey_protocol import telemetry as tm

__all__ = ["CONTENT_TYPE", "LoopLagMonitor", "Metrics", "MetricsServer"]

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _QueueCollector(Collector):
    """Reads drop counters and depths of registered queues at scrape time."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[Callable[[], int], Callable[[], int]]] = {}

    def collect(self) -> Iterable[Metric]:
        dropped = CounterMetricFamily(
            "groundkey_queue_dropped_messages",
            "Messages dropped by bounded queues",
            labels=["queue"],
        )
        depth = GaugeMetricFamily(
            "groundkey_queue_depth_messages", "Messages waiting in bounded queues", labels=["queue"]
        )
        for name, (drops, size) in sorted(self.sources.items()):
            dropped.add_metric([name], float(drops()))
            depth.add_metric([name], float(size()))
        yield dropped
        yield depth


class Metrics:
    """All service metrics in one private registry (tests create as many as they like)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.passes = Counter(
            "groundkey_passes", "Satellite passes by outcome", ["outcome"], registry=r
        )
        self.key_bits_stored = Counter(
            "groundkey_key_bits_stored", "Secret key bits stored durably", registry=r
        )
        self.key_bits_delivered = Counter(
            "groundkey_key_bits_delivered", "Secret key bits delivered to consumers", registry=r
        )
        self.key_blocks = Counter(
            "groundkey_key_blocks", "Key blocks by outcome", ["outcome"], registry=r
        )
        self.key_available_bits = Gauge(
            "groundkey_key_available_bits", "Key bits available for delivery", registry=r
        )
        self.qber = Gauge("groundkey_qber_ratio", "QBER of the latest key block", registry=r)
        self.secret_fraction = Gauge(
            "groundkey_secret_fraction_ratio", "Secret fraction of the latest block", registry=r
        )
        self.count_rate = Gauge(
            "groundkey_detector_count_rate_hertz", "Detector count rate", ["channel"], registry=r
        )
        self.detector_temperature = Gauge(
            "groundkey_detector_temperature_celsius",
            "Detector temperature",
            ["channel"],
            registry=r,
        )
        self.pointing_error = Gauge(
            "groundkey_pointing_error_degrees", "Latest pointing error", registry=r
        )
        self.mqtt_connected = Gauge(
            "groundkey_mqtt_connected", "1 while connected to the MQTT broker", registry=r
        )
        self.delivery_requests = Counter(
            "groundkey_delivery_requests", "Key delivery requests by result", ["result"], registry=r
        )
        self.loop_lag = Histogram(
            "groundkey_event_loop_lag_seconds",
            "Event-loop scheduling lag",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.loop_lag_p99 = Gauge(
            "groundkey_event_loop_lag_p99_seconds", "p99 event-loop lag over the window", registry=r
        )
        self._queues = _QueueCollector()
        r.register(self._queues)

    def observe_telemetry(self, message: tm.TelemetryMessage) -> None:
        """Update gauges/counters from a telemetry message as it is published."""
        if isinstance(message, tm.Pointing) and message.error_deg is not None:
            self.pointing_error.set(message.error_deg)
        elif isinstance(message, tm.CountRates):
            for channel, rate_hz in message.rates_hz.items():
                self.count_rate.labels(channel=channel).set(rate_hz)
        elif isinstance(message, tm.DetectorTemps):
            for d in message.detectors:
                self.detector_temperature.labels(channel=str(d.channel)).set(d.temperature_c)
        elif isinstance(message, tm.PassEvent) and message.event in ("completed", "aborted"):
            self.passes.labels(outcome=message.event).inc()

    def track_queue(self, name: str, dropped: Callable[[], int], depth: Callable[[], int]) -> None:
        """Expose a bounded queue's drop counter and depth (read at scrape time)."""
        self._queues.sources[name] = (dropped, depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` over a minimal asyncio HTTP/1.0 server."""

    def __init__(self, metrics: Metrics, *, host: str = "127.0.0.1", port: int = 9464) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE, self.metrics.render()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics\n"
            head = f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


class LoopLagMonitor:
    """Measures event-loop lag: how late ``asyncio.sleep(interval)`` wakes up.

    ``p99_s``/``max_s`` are over the last ``window`` samples; :meth:`healthy` is
    what a supervisor checks. Run :meth:`run` as a task.
    """

    def __init__(
        self,
        *,
        interval_s: float = 0.25,
        window: int = 240,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.metrics = metrics
        self._clock = clock
        self._samples: collections.deque[float] = collections.deque(maxlen=window)

    def record(self, lag_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self._samples.append(lag_s)
        if self.metrics is not None:
            self.metrics.loop_lag.observe(lag_s)
            self.metrics.loop_lag_p99.set(self.p99_s)

    @property
    def samples(self) -> int:
        return len(self._samples)

    @property
    def p99_s(self) -> float:
        if not self._samples:
            return 0.0
        return float(np.percentile(np.fromiter(self._samples, float), 99))

    @property
    def max_s(self) -> float:
        return max(self._samples, default=0.0)

    def healthy(self, max_p99_s: float = 0.5) -> bool:
        return self.p99_s <= max_p99_s

    async def run(self, samples: int | None = None) -> None:
        """Sample forever (or ``samples`` times)."""
        n = 0
        while samples is None or n < samples:
            n += 1
            start = self._clock()
            await asyncio.sleep(self.interval_s)
            self.record(self._clock() - start - self.interval_s)
