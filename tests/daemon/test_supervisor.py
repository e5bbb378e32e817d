"""The supervisor in-process: restart with backoff and give up, ordered idempotent
shutdown after the drain, reload hooks, bounded queues that count drops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from groundkey_daemon.sdnotify import Watchdog
from groundkey_daemon.supervisor import (
    DropQueue,
    RestartPolicy,
    Supervisor,
    quiet_transport_errors,
)

FAST = RestartPolicy(max_restarts=2, backoff_s=0.01, backoff_max_s=0.02)


def make() -> tuple[Supervisor, list[str]]:
    sent: list[str] = []
    return Supervisor(default_policy=FAST, notify_fn=sent.append, heartbeat_s=0.01), sent


async def test_failing_component_is_restarted_then_given_up() -> None:
    sup, sent = make()
    runs = []

    async def flaky() -> None:
        runs.append(1)
        raise RuntimeError("device on fire")

    async def forever() -> None:
        await asyncio.Event().wait()

    sup.add("steady", forever)
    flaky_c = sup.add("flaky", flaky)
    code = await asyncio.wait_for(sup.run(), 30)
    assert code == 1
    assert len(runs) == 3  # first run + max_restarts
    assert flaky_c.restarts == 2
    assert flaky_c.state == "given-up"
    assert sup.stop_reason == "flaky failed"
    assert sent[0].startswith("READY=1")
    assert any(m.startswith("STOPPING=1") for m in sent)


async def test_non_critical_failure_keeps_the_service_running() -> None:
    sup, _ = make()

    async def broken() -> None:
        raise OSError("broker gone")

    sup.add("mqtt", broken, critical=False)

    async def stop_later() -> None:
        await asyncio.sleep(0.3)
        sup.request_stop("test done")

    sup.add("stopper", stop_later)
    assert await asyncio.wait_for(sup.run(), 30) == 0
    assert sup.components[0].state == "given-up"


async def test_shutdown_drains_first_then_stops_in_reverse_order_once() -> None:
    sup, _ = make()
    order: list[str] = []

    async def forever() -> None:
        await asyncio.Event().wait()

    def stopper(name: str):  # type: ignore[no-untyped-def]
        async def stop() -> None:
            order.append(name)

        return stop

    async def drain() -> None:
        await asyncio.sleep(0.05)
        order.append("drain")

    for name in ("keystore", "telemetry", "lifecycle"):
        sup.add(name, forever, stop=stopper(name))
    sup.on_drain(drain)

    async def request() -> None:
        await asyncio.sleep(0.1)
        sup.request_stop("SIGTERM")
        sup.request_stop("again", exit_code=0)

    task = asyncio.create_task(request())
    assert await asyncio.wait_for(sup.run(), 30) == 0
    await task
    await sup.shutdown()  # idempotent
    assert order == ["drain", "lifecycle", "telemetry", "keystore"]
    assert sup.stop_reason == "SIGTERM"
    assert all(c.state == "stopped" and c.stopped for c in sup.components)


async def test_reload_hooks_and_notifications() -> None:
    sup, sent = make()
    seen = []

    async def good() -> None:
        seen.append("good")

    async def bad() -> None:
        raise ValueError("station.min_el_deg: expected <= 80")

    sup.on_reload(good)
    await sup.reload()
    assert sent[-2:] == ["RELOADING=1", "READY=1\nSTATUS=reloaded"]
    sup.on_reload(bad)
    await sup.reload()
    assert sent[-1] == "READY=1\nSTATUS=reload failed"
    assert seen == ["good", "good"]


async def test_watchdog_progress_only_while_probes_agree() -> None:
    watchdog = Watchdog(env={})
    sup = Supervisor(watchdog=watchdog, notify_fn=lambda _: None, heartbeat_s=0.01)
    healthy = [False]
    sup.add_progress_probe(lambda: healthy[0])

    def progressed() -> bool:
        return watchdog._progressed

    async def stop_later() -> None:
        watchdog._progressed = False
        await asyncio.sleep(0.1)
        assert not progressed()
        healthy[0] = True
        await asyncio.sleep(0.1)
        assert progressed()
        sup.request_stop("done")

    sup.add("probe-check", stop_later)
    assert await asyncio.wait_for(sup.run(), 30) == 0


async def test_drop_queue_counts_what_it_drops() -> None:
    q: DropQueue[int] = DropQueue(2, name="chunks")
    assert q.put_nowait(1)
    assert q.put_nowait(2)
    assert not q.put_nowait(3)
    assert q.dropped == 1
    assert q.depth == 2
    assert await q.get() == 1
    assert q.put_nowait(4)
    assert [await q.get(), await q.get()] == [2, 4]
    assert "dropped=1" in repr(q)
    with pytest.raises(ValueError, match="maxsize"):
        DropQueue(0)


def test_backoff_grows_and_is_capped() -> None:
    policy = RestartPolicy(backoff_s=0.5, backoff_max_s=3.0)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_a_transports_os_error_is_one_warning_line_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # what pyserial-asyncio-fast reports when a serial adapter is unplugged mid-write
    loop = asyncio.get_running_loop()
    gone = OSError(5, "Input/output error")
    with caplog.at_level(logging.WARNING):
        quiet_transport_errors(
            loop, {"message": "Fatal write error", "exception": gone, "transport": object()}
        )
        quiet_transport_errors(loop, {"message": "bug", "exception": ValueError("boom")})
    first, second = caplog.records
    assert first.levelno == logging.WARNING
    assert first.exc_info is None
    assert "Fatal write error: OSError: [Errno 5] Input/output error" in first.getMessage()
    assert second.levelno == logging.ERROR  # anything else: asyncio's default, traceback
    assert second.exc_info is not None
