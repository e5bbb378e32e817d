"""Wegman–Carter transcript authentication over the real link: the daemon's Bob (worker
processes, real ZeroMQ, real SQLite key store) against ``groundkey-sim satellite``.

Pads come from earlier passes' stored key at both ends, are consumed (erased, never
delivered) and never reused; an attacker who knows the pre-shared link key can pass
every HMAC but not the transcript tag, so the block ends without a key."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from groundkey_daemon.distill_runner import (
    PAD_CONSUMER,
    BlockJob,
    BlockResult,
    DistillRunner,
    TranscriptPads,
    distill_block,
)
from groundkey_daemon.keystore import KeyBlock, KeyStore, key_ids_for
from groundkey_daemon.ldpc_cache import LdpcCodeCache
from groundkey_daemon.link import LinkError, LinkSettings, commit_block
from groundkey_daemon.spool import Spool
from groundkey_protocol.link.messages import BlockAbort, BlockReady, decode_message, encode_message
from groundkey_protocol.link.session import PAD_BYTES, BlockOpen, BlockSession, block_key_ids
from groundkey_protocol.qkd.ldpc.rate import code_length, mother_rates_for
from tests.daemon.test_link import (
    LINK_KEY,
    PARAMS,
    MitmProxy,
    spool_truth_block,
    stop,
    wait_for_file,
)
from tests.daemon.test_link import satellite as satellite


def job_for(spool: Spool, endpoint: str, pass_id: str, seed: int, **params: object) -> BlockJob:
    return BlockJob(
        pass_id=pass_id,
        chunk_paths=tuple(spool_truth_block(spool, pass_id)),
        link=LinkSettings(endpoint, LINK_KEY, timeout_s=60.0),
        params={**PARAMS, **params},
        seed=seed,
    )


async def keep(store: KeyStore, job: BlockJob, result: BlockResult, keys_dir: Path) -> bytes:
    """What the lifecycle does with a key: store durably, then commit at the satellite."""
    assert result.ok, result.reason
    material = result.material[: result.key_bits // 8]
    await store.store(
        KeyBlock(
            block_id=result.block_id,
            pass_id=result.pass_id,
            peer="satellite",
            material=material,
            qber=result.qber,
            eps_sec=result.eps_sec,
            eps_cor=result.eps_cor,
        )
    )
    await asyncio.to_thread(commit_block, job.link, result.block_id)
    assert wait_for_file(keys_dir / f"{result.block_id}.key") == material
    return material


async def test_later_blocks_are_authenticated_with_earlier_key(
    satellite: tuple[str, Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    endpoint, keys_dir, proc = satellite
    spool = Spool(tmp_path / "spool")
    ldpc_dir = tmp_path / "state" / "ldpc"
    async with KeyStore(tmp_path / "state", key_size_bytes=32) as store:
        runner = DistillRunner(
            workers=1, store=store, ldpc_dir=ldpc_dir, warm_frame_bits=(PARAMS["frame_bits"],)
        )
        try:
            await runner.start()
            # first pass: no earlier key, HMAC only (and it says so)
            job1 = job_for(spool, endpoint, "pass-1", 11)
            first = await runner.run(job1)
            # the one worker built the warm-up codes into the cache before that block
            cache = LdpcCodeCache(ldpc_dir)
            bits = PARAMS["frame_bits"]
            warmed = {cache.path_for(rate, code_length(bits)) for rate in mother_rates_for(bits)}
            assert all(path.is_file() for path in warmed), warmed
            cached = sorted(ldpc_dir.glob("*.npy"))
            assert first.auth == "hmac"
            await keep(store, job1, first, keys_dir)
            first_ids = key_ids_for(first.block_id, first.key_bits // 8 // 32)

            # later blocks: Wegman-Carter over the transcript, pads from pass 1's key;
            # LDPC (the satellite default) with its code cache in the worker
            job2 = job_for(spool, endpoint, "pass-2", 12, method="ldpc-blind")
            second = await runner.run(job2)
            assert second.auth == "wegman-carter"
            await keep(store, job2, second, keys_dir)
            job3 = job_for(spool, endpoint, "pass-3", 13)
            third = await runner.run(job3)
            assert third.auth == "wegman-carter"
            # Cascade leaves a residual error in ~0.5 % of 5·10^4-bit frames; verification
            # drops such a frame, and a 5-frame block then has no key left: a detected,
            # normal outcome. What this block shows is its authentication.
            if third.ok:
                await keep(store, job3, third, keys_dir)
            else:
                assert "dropping 1 of" in third.reason, third.reason
        finally:
            await runner.close()
        assert runner.pads_used == 2
        # oldest first, and only earlier passes' key, never that of the pass being distilled
        pads = await runner.take_pads(str(uuid.uuid4()), "pass-1")
        assert pads is not None
        assert list(pads.key_ids) == key_ids_for(second.block_id, 2)
        assert "material" not in repr(pads)
        assert set(cached) <= set(ldpc_dir.glob("*.npy"))  # workers cache what they build

        # pads consumed in order, never reused: pass 1's first four keys, acknowledged
        # for the link itself (material erased), and never handed to a consumer
        states = await store.key_states(first_ids)
        assert [states[k] for k in first_ids[:4]] == ["acknowledged"] * 4
        assert all(states[k] == "available" for k in first_ids[4:])
        assert PAD_CONSUMER not in await store.pending()
        pending = await store.pending()
        assert PAD_CONSUMER not in pending
        total = await store.available_bytes()
        reservation = await store.reserve("consumer-a", "req-1", total)
        delivered = {k.key_id for k in reservation.keys}
        assert delivered.isdisjoint(first_ids[:4])
    used = (keys_dir / "wc-used").read_text().split()
    assert used == first_ids[:4]  # the satellite consumed the very same pads
    log = stop(proc)
    assert "HMAC-only" in log
    assert LINK_KEY.hex() not in log


class KeyHoldingMitm(MitmProxy):
    """Knows the pre-shared link key: replaces the satellite's BlockReady with a
    different, validly HMAC-sealed one (the station's protocol does not care)."""

    def __init__(self, satellite: str, block_id: str) -> None:
        super().__init__(satellite, mode="forge", direction="down", nth=1)
        self.block_id = block_id

    def _meddle(self, direction: str, frames: list[bytes]) -> list[list[bytes]]:
        self.counts[direction] += 1
        if direction != "down" or self.counts[direction] != 1:
            return [frames]
        spy = BlockSession(
            LINK_KEY, block_id=self.block_id, local="ground", peer="satellite", initiator=True
        )
        original = spy.open(frames)
        assert isinstance(original, BlockReady)
        forger = BlockSession(
            LINK_KEY, block_id=self.block_id, local="satellite", peer="ground", initiator=False
        )
        self.meddled = True
        return [forger.seal(BlockReady(block_id=self.block_id, detail="forged"))]


async def test_pads_come_only_from_earlier_passes(tmp_path: Path) -> None:
    async with KeyStore(tmp_path / "state", key_size_bytes=32) as store:
        runner = DistillRunner(store=store)
        assert await runner.take_pads(str(uuid.uuid4()), "p") is None  # first pass: none
        block = str(uuid.uuid4())
        await store.store(KeyBlock(block, "p", "satellite", bytes(range(128)), 0.02, 1e-9, 1e-15))
        assert await runner.take_pads(str(uuid.uuid4()), "p") is None  # this pass's own key
        pads = await runner.take_pads(str(uuid.uuid4()), "q")
        assert pads is not None
        assert pads.material == bytes(range(PAD_BYTES))
        again = await runner.take_pads(str(uuid.uuid4()), "q")
        assert again is not None
        assert set(again.key_ids).isdisjoint(pads.key_ids)  # never reused
        assert await runner.take_pads(str(uuid.uuid4()), "q") is None  # used up
        states = await store.key_states(key_ids_for(block, 4))
        assert set(states.values()) == {"acknowledged"}
        assert await store.available_bytes() == 0


def test_transcript_tag_catches_an_attacker_who_knows_the_link_key(
    satellite: tuple[str, Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    endpoint, keys_dir, proc = satellite
    # key both ends hold from an earlier pass
    earlier = str(uuid.uuid4())
    material = np.random.default_rng(5).bytes(128)
    keys_dir.mkdir(parents=True, exist_ok=True)
    (keys_dir / f"{earlier}.key").write_bytes(material)
    pad_ids = tuple(block_key_ids(earlier, 4)[:2])
    spool = Spool(tmp_path / "spool")
    job = job_for(spool, endpoint, "pass-x", 21)
    with KeyHoldingMitm(endpoint, job.block_id) as proxy:
        attacked = BlockJob(
            pass_id=job.pass_id,
            chunk_paths=job.chunk_paths,
            link=LinkSettings(proxy.endpoint, LINK_KEY, timeout_s=30.0),
            params=job.params,
            block_id=job.block_id,
            seed=job.seed,
            pads=TranscriptPads(pad_ids, 32, material[:PAD_BYTES]),
        )
        result = distill_block(attacked)
    assert proxy.meddled
    assert result.status == "aborted"
    assert result.material == b""
    assert "authentication failed" in result.reason, result.reason
    assert result.sifted_bits > 0  # the protocol itself ran through: only the tag caught it
    with pytest.raises(LinkError, match="commit refused"):
        commit_block(LinkSettings(endpoint, LINK_KEY, timeout_s=20.0), result.block_id)
    log = stop(proc)
    assert "transcript authentication failed" in log, log
    assert not (keys_dir / f"{result.block_id}.key").exists()
    assert (keys_dir / "wc-used").read_text().split() == list(pad_ids)


def test_satellite_refuses_pads_that_were_used_or_are_unknown() -> None:
    from groundkey_sim.downlink.source import Alice
    from groundkey_sim.satellite import AliceRecord, SatellitePeer
    from groundkey_sim.satellite.peer import PadSource

    pads = PadSource()
    earlier = str(uuid.uuid4())
    pads.add(earlier, bytes(range(96)))
    peer = SatellitePeer(LINK_KEY, AliceRecord(Alice(1)), rng=np.random.default_rng(1), pads=pads)
    ids = block_key_ids(earlier, 3)

    def open_block(pad_keys: list[str]) -> object:
        block = str(uuid.uuid4())
        ground = BlockSession(
            LINK_KEY, block_id=block, local="ground", peer="satellite", initiator=True
        )
        opening = BlockOpen(
            block_id=block,
            pass_id="p",
            params='{"frame_bits": 1000}',
            pad_keys=pad_keys,
            pad_key_bytes=32,
        )
        replies = peer.handle(ground.seal(opening))
        return ground.open(replies[0])

    assert isinstance(open_block(ids[:2]), BlockReady)
    refused = open_block(ids[1:3])  # ids[1] already spent
    assert isinstance(refused, BlockAbort)
    assert refused.reason == "transcript pads unavailable"
    unknown = open_block([str(uuid.uuid4()), str(uuid.uuid4())])
    assert isinstance(unknown, BlockAbort)
    assert decode_message(encode_message(unknown)) == unknown
    assert isinstance(open_block([*ids[2:3], ids[0]]), BlockAbort)
    assert repr(pads).startswith("PadSource(")
