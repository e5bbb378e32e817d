"""Pass lifecycle pieces in-process against real components: raw tagger chunks left in
the spool by a crash are synced and distilled at start-up with the satellite (another
process, ZeroMQ), stored durably before they are announced; a block the store
already holds is not distilled twice; scheduling follows the TLE and the clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from groundkey_daemon.daemon_config import DaemonConfig, daemon_config_from_dict
from groundkey_daemon.distill_runner import DistillRunner
from groundkey_daemon.keystore import KeyBlock, KeyStore, key_ids_for
from groundkey_daemon.lifecycle import Lifecycle, PassReport, pass_id_for
from groundkey_daemon.spool import Spool, read_chunks
from groundkey_daemon.telemetry_pub import TelemetryHub
from groundkey_protocol.clock import Clock
from groundkey_sim.downlink import Downlink, preset
from tests.daemon.test_link import LINK_KEY, spawn_satellite, stop, wait_for_file

SEED = 5150
ROOT = Path(__file__).resolve().parents[2]


class ListSink:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        self.published.append((topic, payload))


@pytest.fixture
def sat(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    key_file = tmp_path / "link.key"
    key_file.write_text(LINK_KEY.hex())
    proc = spawn_satellite(key_file, tmp_path / "sat-keys", seed=SEED)
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    try:
        yield endpoint, tmp_path / "sat-keys"
    finally:
        stop(proc)


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> DaemonConfig:
    data: dict[str, Any] = {
        "keystore": {"state_dir": str(tmp_path / "state")},
        "acquisition": {"tof_model": "fixed", "fixed_tof_ps": 5_000_000},
        "distill": {"frame_bits": 50_000},
        "telemetry": {"station": "xinglong"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return daemon_config_from_dict(data)


async def test_blocks_left_by_a_crash_are_distilled_and_stored_at_startup(
    sat: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, sat_keys = sat
    config = make_config(tmp_path, link={"endpoint": endpoint})
    spool = Spool(config.spool_dir)
    # what the acquisition had spooled before the crash: raw tagger chunks (with the
    # sync beacon), sealed into one block that never reached distillation ...
    link = Downlink(preset("bench-fiber"), seed=SEED, duration_s=2.0)
    names = [spool.append("p-crash", c.timestamps_ps, c.channels) for c in link.chunks(0.25)]
    meta = {"start_unix_s": 0.0, "duration_s": 2.0, "tof_model": "fixed", "fixed_tof_ps": 5e6}
    pending = spool.seal_block("p-crash", names, meta)
    # ... and a block whose key was stored just before the crash
    stored_id = str(uuid.uuid4())
    stored = spool.mark(
        spool.seal_block("p-crash", names[:1], meta), "distilling", block_id=stored_id
    )

    sink = ListSink()
    runner = DistillRunner(workers=1)
    async with KeyStore(config.keystore.state_dir) as store:
        await store.store(KeyBlock(stored_id, "p-crash", "satellite", bytes(64), 0.01, 1e-9, 1e-15))
        hub = TelemetryHub("xinglong", clock=Clock.from_spec("wall"), sinks=[sink])
        life = Lifecycle(
            config, clock=Clock.from_spec("wall"), store=store, runner=runner, hub=hub,
            link_key=LINK_KEY,
        )  # fmt: skip
        try:
            await life.recover()
        finally:
            await runner.close()
        blocks = spool.blocks("p-crash")
        # the distilled block is stored and committed at the satellite; the one stored
        # before the crash is not distilled again, and stays "stored" because this
        # satellite never had its key (the commit is refused, retried next start)
        assert [b.state for b in blocks] == ["done", "stored"]
        assert blocks[0].meta["status"] == "key", blocks[0].meta
        assert blocks[1].meta == {**stored.meta, "status": "key"}
        new_id = blocks[0].meta["block_id"]
        assert new_id != stored_id
        counts = await store.counts()
        reservation = await store.reserve_ids("consumer", "req-1", key_ids_for(new_id, 3))
    assert counts["available"] >= 3
    alice = wait_for_file(sat_keys / f"{new_id}.key")
    assert b"".join(k.material for k in reservation.keys) == alice[:96]  # identical keys
    topics = [t for t, _ in sink.published]
    assert any(t.endswith("/keyexchange") for t in topics), topics
    assert pending.index == 1


def test_next_plan_follows_the_tle_and_the_clock(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        station={"tle_files": [str(ROOT / "config" / "tle" / "micius.tle")]},
    )
    clock = Clock.from_spec("sim:2016-12-19T12:00:00Z,speed=1")
    life = Lifecycle(config, clock=clock, store=KeyStore(tmp_path / "s"), runner=DistillRunner())
    plan = life.next_plan()
    assert plan is not None
    assert plan.pass_id == pass_id_for(plan.tle, plan.pass_)
    assert plan.pass_.aos.timestamp() > clock.now_s()
    assert plan.pass_.max_el_deg >= config.station.min_el_deg
    assert plan.tle.norad_id == 41731
    assert life.healthy()


def test_config_rejects_bad_sections(tmp_path: Path) -> None:
    from groundkey_daemon.errors import ConfigError

    with pytest.raises(ConfigError, match=r"acquisition\.queue_chunks: expected >= 1"):
        make_config(tmp_path, acquisition={"queue_chunks": 0})
    with pytest.raises(ConfigError, match=r"link\.transport"):
        make_config(tmp_path, link={"transport": "carrier-pigeon"})


async def test_block_is_kept_for_a_retry_while_the_satellite_is_unreachable(
    tmp_path: Path,
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here
    config = make_config(tmp_path, link={"endpoint": f"tcp://127.0.0.1:{port}", "timeout_s": 0.5})
    spool = Spool(config.spool_dir)
    link = Downlink(preset("bench-fiber"), seed=SEED, duration_s=0.3)
    names = [spool.append("p-down", c.timestamps_ps, c.channels) for c in link.chunks(0.1)]
    meta = {"start_unix_s": 0.0, "duration_s": 0.3, "tof_model": "fixed", "fixed_tof_ps": 5e6}
    spool.seal_block("p-down", names, meta)
    runner = DistillRunner(workers=1)
    async with KeyStore(config.keystore.state_dir) as store:
        life = Lifecycle(
            config, clock=Clock.from_spec("wall"), store=store, runner=runner, link_key=LINK_KEY
        )
        try:
            await life.recover()
        finally:
            await runner.close()
        assert sum((await store.counts()).values()) == 0  # no key without the satellite
    (block,) = spool.blocks("p-down")
    assert block.state == "pending"
    assert block.meta["block_id"] == ""
    assert spool.chunk_paths(block)  # the raw data is still there


async def test_spool_writer_batches_a_backlog_into_few_durable_writes(tmp_path: Path) -> None:
    # a tagger faster than the disk: 300 chunks are waiting when the writer starts
    config = make_config(
        tmp_path,
        station={"tle_files": [str(ROOT / "config" / "tle" / "micius.tle")]},
        acquisition={"queue_chunks": 400},
    )
    clock = Clock.from_spec("sim:2016-12-19T12:00:00Z,speed=1")
    life = Lifecycle(config, clock=clock, store=KeyStore(tmp_path / "s"), runner=DistillRunner())
    plan = life.next_plan()
    assert plan is not None
    link = Downlink(preset("bench-fiber"), seed=SEED, duration_s=3.0)
    chunks = list(link.chunks(0.01))
    assert len(chunks) == 300
    for c in chunks:
        assert life.queue.put_nowait((c.timestamps_ps, c.channels))
    assert life.queue.put_nowait(None)
    report = PassReport(plan.pass_id)
    meta = {"start_unix_s": 0.0, "duration_s": 3.0, "tof_model": "fixed", "fixed_tof_ps": 5e6}
    await life._spool_writer(plan, report, meta)
    # every tag is on disk, in order, in 64-chunk writes; the end marker was seen
    refs = life.spool.blocks(plan.pass_id)
    assert not life.spool.unsealed_chunks(plan.pass_id)  # sealed into blocks at the end
    paths = [path for ref in refs for path in life.spool.chunk_paths(ref)]
    assert len(paths) == 5  # ceil(300 / 64)
    ts, ch = read_chunks(paths)
    np.testing.assert_array_equal(ts, np.concatenate([c.timestamps_ps for c in chunks]))
    np.testing.assert_array_equal(ch, np.concatenate([c.channels for c in chunks]))
    assert report.chunks == 300
    assert report.tags == ts.size
    assert report.dropped_chunks == 0
    assert life.queue.depth == 0


async def test_the_tail_of_a_pass_joins_the_last_block_instead_of_a_keyless_stub(
    tmp_path: Path,
) -> None:
    link = Downlink(preset("bench-fiber"), seed=SEED, duration_s=3.0)
    chunks = list(link.chunks(0.1))
    sync = 5
    per_chunk = [int((c.channels != sync).sum()) for c in chunks]
    block = sum(per_chunk[:12])  # ~1.2 s of detections
    config = make_config(
        tmp_path,
        station={"tle_files": [str(ROOT / "config" / "tle" / "micius.tle")]},
        acquisition={"queue_chunks": 64, "min_block_detections": block, "sync_channel": sync},
    )
    clock = Clock.from_spec("sim:2016-12-19T12:00:00Z,speed=1")
    life = Lifecycle(config, clock=clock, store=KeyStore(tmp_path / "s"), runner=DistillRunner())
    plan = life.next_plan()
    assert plan is not None
    # the tagger's time 0 is 3 s before LOS: the acquisition runs to LOS
    start_s = plan.pass_.los.timestamp() - 3.0
    meta = {"start_unix_s": start_s, "duration_s": 3.0, "tof_model": "fixed", "fixed_tof_ps": 5e6}
    report = PassReport(plan.pass_id)
    writer = asyncio.create_task(life._spool_writer(plan, report, meta))
    for c in chunks:  # one at a time, as a tagger delivers them
        await life.queue.put((c.timestamps_ps, c.channels))
        await asyncio.sleep(0)
        while life.queue.depth:  # noqa: ASYNC110 - the writer has no "idle" event
            await asyncio.sleep(0.001)
    await life.queue.put(None)
    await writer
    sizes = []
    for ref in life.spool.blocks(plan.pass_id):
        _, ch = read_chunks(life.spool.chunk_paths(ref))
        sizes.append(int((ch != sync).sum()))
    # cut at 1.2 s (1.8 s left: room for another block), not at 2.4 s (0.6 s left)
    assert len(sizes) == 2, sizes
    assert min(sizes) >= block
    assert sum(sizes) == sum(per_chunk)
