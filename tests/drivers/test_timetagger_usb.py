"""The real pyusb driver against the emulated tagger (in-process usbnet server)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from groundkey_drivers.errors import DeviceError
from groundkey_drivers.timetagger import open_tagger
from groundkey_drivers.timetagger.usb import UsbTimeTagger
from groundkey_protocol.clock import SimClock
from groundkey_protocol.devices import timetagger as tt
from groundkey_sim.downlink import Downlink, preset
from groundkey_sim.timetagger import SimTimeTagger, UsbnetServer

START = 1_482_166_198.0


def make_link(duration_s: float) -> Downlink:
    return Downlink(preset("bench-fiber"), seed=11, start_unix_s=START, duration_s=duration_s)


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[str, SimTimeTagger]]:
    device = SimTimeTagger(lambda _now: make_link(1.5), serial="GKTT0042")
    server = UsbnetServer(device)
    port = await server.start()
    try:
        yield f"usbnet://127.0.0.1:{port}", device
    finally:
        await server.close()


async def test_full_stream_without_loss_at_top_rate(
    emulator: tuple[str, SimTimeTagger],
) -> None:
    url, device = emulator
    parts = []
    async with open_tagger(url, channels=(1, 2, 3, 4, 5)) as tagger:
        await tagger.start()
        async for batch in tagger.batches():
            parts.append(batch)
        assert isinstance(tagger, UsbTimeTagger)
        status = await tagger.status()
    ts = np.concatenate([b.timestamps_ps for b in parts])
    want = np.concatenate([c.timestamps_ps for c in make_link(1.5).chunks(device.chunk_s)])
    np.testing.assert_array_equal(ts, want)
    assert len(ts) > 500_000
    assert tagger.stats.lost_frames == 0
    assert tagger.stats.dropped_transfers == 0
    assert status.tags_sent == len(ts)
    assert not status.running


async def test_channel_mask_and_delays_reach_the_device(
    emulator: tuple[str, SimTimeTagger],
) -> None:
    url, device = emulator
    async with open_tagger(url, channels=(1, 2), delays_ps={2: 777}, thresholds_mv={1: -120}):
        pass
    assert device.channel_mask == 0b110
    assert device.delays_ps == {2: 777}
    assert device.thresholds_mv == {1: -120}


async def test_forced_frame_drop_is_detected_and_reported(
    emulator: tuple[str, SimTimeTagger], caplog: pytest.LogCaptureFixture
) -> None:
    url, device = emulator
    caplog.set_level(logging.WARNING)
    async with open_tagger(url, transfer_bytes=64 << 10) as tagger:
        assert isinstance(tagger, UsbTimeTagger)
        await tagger.start()
        first = True
        async for _batch in tagger.batches():
            if first:
                await tagger.control(tt.REQ_OUT, tt.REQ_DEBUG_DROP, 3)
                first = False
    assert device.frames_dropped == 3
    assert tagger.stats.lost_frames == 3
    assert "3 frame(s) lost" in caplog.text


async def test_device_reset_leads_to_reconnect(emulator: tuple[str, SimTimeTagger]) -> None:
    url, _device = emulator
    # small transfers so that the reset surely lands in the middle of the run
    async with open_tagger(url, transfer_bytes=64 << 10) as tagger:
        assert isinstance(tagger, UsbTimeTagger)
        await tagger.start()
        n_batches = 0
        async for _batch in tagger.batches():
            n_batches += 1
            if n_batches == 2:
                with pytest.raises(DeviceError):
                    await tagger.control(tt.REQ_OUT, tt.REQ_RESET)
        assert tagger.stats.reconnects == 1
        status = await tagger.status()
    # the run restarted after the reset and completed
    assert not status.running
    assert status.tags_sent == sum(len(c) for c in make_link(1.5).chunks(0.05))


async def test_clock_paced_emulator_streams_the_same_tags() -> None:
    clock = SimClock(epoch=dt.datetime(2016, 12, 19, 16, 50, tzinfo=dt.UTC), speed=2.0)
    device = SimTimeTagger(lambda _now: make_link(0.5), clock=clock)
    server = UsbnetServer(device)
    port = await server.start()
    loop = asyncio.get_running_loop()
    try:
        parts = []
        t0 = loop.time()
        async with open_tagger(f"usbnet://127.0.0.1:{port}") as tagger:
            await tagger.start()
            async for batch in tagger.batches():
                parts.append(batch.timestamps_ps)
        elapsed_s = loop.time() - t0
    finally:
        await server.close()
    want = np.concatenate([c.timestamps_ps for c in make_link(0.5).chunks(device.chunk_s)])
    np.testing.assert_array_equal(np.concatenate(parts), want)
    # released as the clock passes each chunk: 0.5 s of data at speed 2
    assert elapsed_s >= 0.2


async def test_slow_consumer_drops_are_counted_not_blocking(
    emulator: tuple[str, SimTimeTagger],
) -> None:
    url, _device = emulator
    tagger = UsbTimeTagger(url, queue_transfers=2, backpressure_s=0.01, transfer_bytes=64 << 10)
    async with tagger:
        await tagger.start()
        got = 0
        async for batch in tagger.batches():
            got += len(batch)
            await asyncio.sleep(0.02)  # a consumer slower than the device
        status = await tagger.status()
    assert tagger.stats.dropped_transfers > 0
    # what was dropped on the host shows up as sequence gaps in what was kept
    assert tagger.stats.lost_frames > 0
    assert got < status.tags_sent


async def test_device_reports_when_its_time_base_started() -> None:
    """Building a run takes the device a while after START; it reports the clock instant
    tagger time 0 stands for, which the host must use instead of its own (later) clock."""
    clock = SimClock(epoch=dt.datetime(2016, 12, 19, 16, 50, tzinfo=dt.UTC), speed=20.0)
    seen: list[float | None] = []

    def slow_model(now_s: float | None) -> Downlink:
        seen.append(now_s)
        time.sleep(0.3)  # the model takes wall time to build (6 simulated s)
        return Downlink(preset("bench-fiber"), seed=11, start_unix_s=now_s, duration_s=0.2)

    device = SimTimeTagger(slow_model, clock=clock)
    server = UsbnetServer(device)
    port = await server.start()
    try:
        async with open_tagger(f"usbnet://127.0.0.1:{port}") as tagger:
            assert device.status().start_unix_us == 0  # never started
            await tagger.start()
            after_s = clock.now_s()
            assert seen[0] is not None
            started_s = tagger.start_unix_s
            assert started_s is not None
            assert started_s == pytest.approx(seen[0], abs=1e-6)
            assert after_s - started_s >= 0.3 * 20.0 * 0.9
            async for _ in tagger.batches():
                pass
    finally:
        await server.close()


async def test_device_without_a_clock_reports_no_start_time(
    emulator: tuple[str, SimTimeTagger],
) -> None:
    url, _device = emulator
    async with open_tagger(url) as tagger:
        await tagger.start()
        assert tagger.start_unix_s is None
        assert isinstance(tagger, UsbTimeTagger)
        assert (await tagger.status()).start_unix_us == 0
        await tagger.stop()


async def test_time_base_restart_after_a_reset_keeps_tag_times() -> None:
    """After a device reset the driver restarts the run; the device's time base starts
    at 0 again, later: tags are shifted onto the first run's time base."""
    clock = SimClock(epoch=dt.datetime(2016, 12, 19, 16, 50, tzinfo=dt.UTC), speed=1.0)

    def model(now_s: float | None) -> Downlink:
        return Downlink(preset("bench-fiber"), seed=11, start_unix_s=now_s, duration_s=0.6)

    device = SimTimeTagger(model, clock=clock)
    server = UsbnetServer(device)
    port = await server.start()
    try:
        async with open_tagger(f"usbnet://127.0.0.1:{port}", transfer_bytes=64 << 10) as tagger:
            assert isinstance(tagger, UsbTimeTagger)
            await tagger.start()
            first_s = tagger.start_unix_s
            assert first_s is not None
            parts: list[np.ndarray] = []
            reset_at_s = 0.0
            async for batch in tagger.batches():
                parts.append(batch.timestamps_ps)
                if not reset_at_s and clock.now_s() - first_s >= 0.3:
                    reset_at_s = clock.now_s()
                    with pytest.raises(DeviceError):
                        await tagger.control(tt.REQ_OUT, tt.REQ_RESET)
            assert tagger.stats.reconnects == 1
    finally:
        await server.close()
    ts = np.concatenate(parts)
    assert reset_at_s > first_s
    # the restarted 0.6 s run ends 0.6 s after the reset on the first run's time base
    # (not 0.6 s after 0, as the device counts)
    assert int(ts[-1]) > round((reset_at_s - first_s + 0.5) * 1e12)
