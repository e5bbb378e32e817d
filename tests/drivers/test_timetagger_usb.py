"""The real pyusb driver against the emulated tagger (in-process usbnet server)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
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
