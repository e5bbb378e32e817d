"""The authenticated classical link: the daemon's Bob (worker process, real ZeroMQ)
against ``groundkey-sim satellite`` (Alice) in another process; a man in the middle
that tampers with or replays frames aborts the block and never yields a key."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from groundkey_daemon.distill_runner import BlockJob, DistillRunner, distill_block
from groundkey_daemon.link import (
    BlockOpen,
    LinkAborted,
    LinkError,
    LinkSession,
    LinkSettings,
    commit_block,
)
from groundkey_daemon.spool import Spool
from groundkey_protocol.link.messages import BlockAbort
from groundkey_sim.downlink import Downlink, preset

SEED = 424242
LINK_KEY = bytes(range(32))
PARAMS = {"frame_bits": 50_000}


def spawn_satellite(key_file: Path, keys_dir: Path, seed: int = SEED) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "groundkey_sim.cli",
            "satellite",
            "--listen",
            "tcp://127.0.0.1:0",
            "--seed",
            str(seed),
            "--link-key",
            str(key_file),
            "--keys-dir",
            str(keys_dir),
            "--rng-seed",
            "9",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    """Terminate and return what the process logged."""
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


@pytest.fixture
def satellite(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    key_file = tmp_path / "link.key"
    key_file.write_text(LINK_KEY.hex() + "\n")
    keys_dir = tmp_path / "sat-keys"
    proc = spawn_satellite(key_file, keys_dir)
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    try:
        yield endpoint, keys_dir, proc
    finally:
        if proc.poll() is None:
            stop(proc)


def spool_truth_block(
    spool: Spool, pass_id: str, *, seed: int = SEED, duration_s: float = 2.0
) -> list[str]:
    """Bench-fiber detections as (true slot, channel) chunks: sync is tested elsewhere."""
    link = Downlink(preset("bench-fiber"), seed=seed, duration_s=duration_s)
    names = []
    for chunk in link.chunks(0.25):
        signal = (chunk.true_slots >= 0) & (chunk.channels <= 4)
        names.append(spool.append(pass_id, chunk.true_slots[signal], chunk.channels[signal]))
    return [str(spool.pass_dir(pass_id) / n) for n in names]


def wait_for_file(path: Path, timeout_s: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_bytes()


async def test_block_distills_to_identical_keys_over_the_real_link(
    satellite: tuple[str, Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    endpoint, keys_dir, _ = satellite
    spool = Spool(tmp_path / "spool")
    chunks = spool_truth_block(spool, "bench-1")
    job = BlockJob(
        pass_id="bench-1",
        chunk_paths=tuple(chunks),
        link=LinkSettings(endpoint, LINK_KEY, timeout_s=60.0),
        params=PARAMS,
        seed=3,
    )
    runner = DistillRunner(workers=1)
    try:
        result = await runner.run(job)
    finally:
        await runner.close()
    assert result.ok, result.reason
    assert result.key_bits > 1000
    assert 0.005 < result.qber < 0.03
    assert result.messages > 10
    assert LINK_KEY.hex() not in repr(result)
    assert "material" not in repr(result)
    # two-phase: Alice keeps her key only once the station (having stored) commits
    assert not (keys_dir / f"{result.block_id}.key").exists()
    await asyncio.to_thread(commit_block, job.link, result.block_id)
    await asyncio.to_thread(commit_block, job.link, result.block_id)  # idempotent
    alice_key = wait_for_file(keys_dir / f"{result.block_id}.key")
    assert alice_key == result.material[: result.key_bits // 8]
    assert runner.lag.samples > 0  # the loop kept running while the worker distilled


class MitmProxy:
    """ROUTER (station side) <-> DEALER (satellite side) that misbehaves once."""

    def __init__(self, satellite: str, *, mode: str, direction: str, nth: int) -> None:
        self.mode, self.direction, self.nth = mode, direction, nth
        self.ctx = zmq.Context()
        self.front = self.ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.front.bind("tcp://127.0.0.1:*")
        self.endpoint = self.front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.back = self.ctx.socket(zmq.DEALER)
        self.back.setsockopt(zmq.LINGER, 0)
        self.back.connect(satellite)
        self.done = threading.Event()
        self.counts = {"up": 0, "down": 0}
        self.meddled = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _meddle(self, direction: str, frames: list[bytes]) -> list[list[bytes]]:
        self.counts[direction] += 1
        if direction != self.direction or self.counts[direction] != self.nth:
            return [frames]
        self.meddled = True
        if self.mode == "tamper":
            auth = bytearray(frames[-1])
            auth[20] ^= 0x01  # a payload byte
            return [[*frames[:-1], bytes(auth)]]
        return [frames, frames]  # replay

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        identity = b""
        while not self.done.is_set():
            events = dict(poller.poll(50))
            if self.front in events:
                identity, *frames = self.front.recv_multipart()
                for out in self._meddle("up", frames):
                    self.back.send_multipart(out)
            if self.back in events:
                frames = self.back.recv_multipart()
                for out in self._meddle("down", frames):
                    self.front.send_multipart([identity, *out])

    def __enter__(self) -> MitmProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)
        self.front.close()
        self.back.close()
        self.ctx.term()


@pytest.mark.parametrize(
    ("mode", "direction", "nth"),
    [
        ("tamper", "up", 4),  # station -> satellite: Alice detects it
        ("tamper", "down", 5),  # satellite -> station: Bob detects it
        ("replay", "down", 3),
        ("replay", "up", 4),
    ],
)
def test_tampered_or_replayed_frame_aborts_the_block(
    satellite: tuple[str, Path, subprocess.Popen[str]],
    tmp_path: Path,
    mode: str,
    direction: str,
    nth: int,
) -> None:
    endpoint, keys_dir, proc = satellite
    spool = Spool(tmp_path / "spool")
    chunks = spool_truth_block(spool, "bench-2")
    with MitmProxy(endpoint, mode=mode, direction=direction, nth=nth) as proxy:
        job = BlockJob(
            pass_id="bench-2",
            chunk_paths=tuple(chunks),
            link=LinkSettings(proxy.endpoint, LINK_KEY, timeout_s=20.0),
            params=PARAMS,
            seed=3,
        )
        result = distill_block(job)
    assert proxy.meddled
    assert result.status == "aborted"
    assert result.material == b""
    assert result.key_bits == 0
    assert "authentication failed" in result.reason, result.reason
    with pytest.raises(LinkError, match="commit refused"):
        commit_block(LinkSettings(endpoint, LINK_KEY, timeout_s=20.0), result.block_id)
    log = stop(proc)
    assert not (keys_dir / f"{result.block_id}.key").exists()
    if direction == "up":
        assert "authentication failed" in log, log
    assert LINK_KEY.hex() not in log


def test_session_rejects_frames_of_other_blocks_and_reflections() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    ground_a = LinkSession(LINK_KEY, block_id=a, local="ground", peer="satellite")
    sat_a = LinkSession(LINK_KEY, block_id=a, local="satellite", peer="ground")
    sat_b = LinkSession(LINK_KEY, block_id=b, local="satellite", peer="ground")
    frames = ground_a.seal(BlockAbort(block_id=a, reason="x"))
    assert sat_a.open(frames) == BlockAbort(block_id=a, reason="x")
    with pytest.raises(LinkAborted, match="authentication failed"):
        sat_a.open(frames)  # replay
    with pytest.raises(LinkAborted):
        sat_b.open([b.encode(), frames[1]])  # moved to another block
    reflected = sat_a.seal(BlockOpen(block_id=a, pass_id="p", params="{}"))
    with pytest.raises(LinkAborted, match="authentication failed"):
        sat_a.open(reflected)  # our own frame sent back to us
    with pytest.raises(LinkAborted, match="authentication failed"):
        LinkSession(bytes(32), block_id=a, local="satellite", peer="ground").open(
            ground_a.seal(BlockAbort(block_id=a, reason="y"))
        )
    assert np.frombuffer(frames[1][:2], dtype=np.uint8).tobytes() == b"GA"


def test_satellite_peer_refuses_forged_and_replayed_openings() -> None:
    from groundkey_sim.downlink.source import Alice
    from groundkey_sim.satellite import AliceRecord, SatellitePeer

    peer = SatellitePeer(LINK_KEY, AliceRecord(Alice(SEED)), rng=np.random.default_rng(1))
    block = str(uuid.uuid4())
    forged = LinkSession(bytes(32), block_id=block, local="ground", peer="satellite")
    opening = BlockOpen(block_id=block, pass_id="p", params='{"frame_bits": 1000}')
    assert peer.handle(forged.seal(opening)) == []  # wrong key: no session, no answer
    assert peer.rejected == 1

    ground = LinkSession(LINK_KEY, block_id=block, local="ground", peer="satellite")
    frames = ground.seal(opening)
    (reply,) = peer.handle(frames)
    assert ground.open(reply).block_id == block  # BlockReady, authenticated
    (abort,) = peer.handle(frames)  # the same opening again: a replay aborts the block
    message = ground.open(abort)
    assert isinstance(message, BlockAbort)
    assert message.reason == "authentication failed"
    assert peer.handle(frames) == []  # and the ended block stays closed
    assert peer.aborted == 1
    assert peer.keys == 0
