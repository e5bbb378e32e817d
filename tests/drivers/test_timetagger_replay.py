"""File-replay tagger: PTU and native recordings through the TimeTagger interface."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import numpy as np

from groundkey_drivers.timetagger import open_tagger
from groundkey_drivers.timetagger.recorder import Recorder
from groundkey_protocol.devices import ptu


async def collect(url: str) -> tuple[np.ndarray, np.ndarray]:
    ts, ch = [], []
    async with open_tagger(url, read_bytes=4096) as tagger:
        await tagger.start()
        async for batch in tagger.batches():
            ts.append(batch.timestamps_ps)
            ch.append(batch.channels)
    return np.concatenate(ts), np.concatenate(ch)


async def test_ptu_replay_with_overflows_sync_and_markers(tmp_path: Path) -> None:
    wrap = ptu.HH_WRAP_V2
    ticks = np.arange(0, 6000) * (wrap // 700)  # ~8 overflows, chunked reads across them
    records = []
    ovf = 0
    for i, t in enumerate(ticks.tolist()):
        if t // wrap > ovf:
            records.append((1 << 31) | (63 << 25) | (t // wrap - ovf))
            ovf = t // wrap
        kind = i % 10
        if kind == 0:
            records.append((1 << 31) | (0 << 25) | (t - ovf * wrap))  # sync
        elif kind == 1:
            records.append((1 << 31) | (3 << 25) | (t - ovf * wrap))  # marker 3
        else:
            records.append((2 << 25) | (t - ovf * wrap))  # detector channel 2
    path = tmp_path / "pass.ptu"
    body = struct.pack(f"<{len(records)}I", *records)
    path.write_bytes(ptu.encode_header(ptu.RT_HYDRAHARP_V2_T2, len(records), 1e-12) + body)
    ts, ch = await collect(f"file://{path}")
    np.testing.assert_array_equal(ts, ticks)
    want = np.where(np.arange(6000) % 10 == 0, 0, np.where(np.arange(6000) % 10 == 1, 67, 3))
    np.testing.assert_array_equal(ch, want)


async def test_native_recording_written_by_recorder_replays(tmp_path: Path) -> None:
    path = tmp_path / "spool.gkrec"
    rec = Recorder(str(path), {"source": "test"})
    await rec.open()
    rng = np.random.default_rng(1)
    ts = np.sort(rng.integers(0, 10**12, 3000))
    ch = rng.integers(1, 5, 3000, dtype=np.uint8)
    for i in range(0, 3000, 700):
        await rec.append(ts[i : i + 700], ch[i : i + 700])
    await rec.close()
    got_ts, got_ch = await collect(f"file://{path}?pace=fast")
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_ch, ch)
    assert path.stat().st_mode & 0o777 == 0o640


async def test_realtime_pacing_follows_the_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "paced.gkrec"
    rec = Recorder(str(path), {"source": "test"}, durable=False)
    await rec.open()
    for i in range(10):  # 10 chunks spread over 0.3 s of tag time
        ts = np.arange(5, dtype=np.int64) * 1000 + i * 30_000_000_000
        await rec.append(ts, np.ones(5, np.uint8))
    await rec.close()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ts, _ = await collect(f"file://{path}?pace=realtime")
    assert len(ts) == 50
    assert loop.time() - t0 >= 0.25  # never faster than the recording
