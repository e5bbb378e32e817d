from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from groundkey_daemon.metrics import LoopLagMonitor, Metrics, MetricsServer


async def http_get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body


async def test_endpoint_serves_prometheus_text_on_localhost() -> None:
    metrics = Metrics()
    metrics.passes.labels(outcome="completed").inc()
    metrics.key_bits_stored.inc(4096)
    metrics.qber.set(0.012)
    metrics.count_rate.labels(channel="1").set(12000.0)
    backlog = [1, 2, 3]
    metrics.track_queue("mqtt", lambda: 7, lambda: len(backlog))
    server = MetricsServer(metrics, port=0)
    port = await server.start()
    try:
        assert server.host == "127.0.0.1"
        status, body = await http_get(port, "/metrics")
        assert status == "HTTP/1.0 200 OK"
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body)
            for s in fam.samples
        }
        assert samples[("groundkey_passes_total", (("outcome", "completed"),))] == 1
        assert samples[("groundkey_key_bits_stored_total", ())] == 4096
        assert samples[("groundkey_qber_ratio", ())] == 0.012
        assert samples[("groundkey_queue_dropped_messages_total", (("queue", "mqtt"),))] == 7
        assert samples[("groundkey_queue_depth_messages", (("queue", "mqtt"),))] == 3
        assert all(name.startswith("groundkey_") for name, _ in samples)
        assert (await http_get(port, "/"))[0] == "HTTP/1.0 404 Not Found"
    finally:
        await server.close()


def test_lag_p99_over_window() -> None:
    mon = LoopLagMonitor(window=100, metrics=Metrics())
    for _ in range(98):
        mon.record(0.001)
    mon.record(0.4)
    mon.record(0.5)
    assert 0.001 < mon.p99_s <= 0.5
    assert mon.max_s == 0.5
    for _ in range(100):  # the window slides: old spikes are forgotten
        mon.record(0.002)
    assert mon.max_s == 0.002
    assert mon.healthy(max_p99_s=0.01)


async def test_lag_monitor_sees_a_blocked_loop() -> None:
    metrics = Metrics()
    mon = LoopLagMonitor(interval_s=0.01, metrics=metrics)

    async def blocker() -> None:
        await asyncio.sleep(0)
        time.sleep(0.3)  # deliberately block the loop  # noqa: ASYNC251

    await asyncio.gather(mon.run(samples=3), blocker())
    assert mon.samples == 3
    assert mon.max_s >= 0.2
    assert not mon.healthy(max_p99_s=0.1)
    assert metrics.loop_lag_p99._value.get() >= 0.2
