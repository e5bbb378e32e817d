from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from groundkey_daemon.keystore import (
    DB_NAME,
    InsufficientKeyError,
    KeyBlock,
    KeyStore,
    KeyUnavailableError,
    RequestConflictError,
    key_ids_for,
)

T0_S = 1482105600.0  # 2016-12-19T00:00:00Z


def block(seed: int, n_bytes: int = 128, created_s: float = T0_S) -> KeyBlock:
    rng = np.random.default_rng(seed)
    return KeyBlock(
        block_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
        pass_id="p-41731-20161219",
        peer="micius",
        material=rng.bytes(n_bytes),
        qber=0.012,
        eps_sec=1e-9,
        eps_cor=1e-15,
        secret_fraction=0.1,
        created_s=created_s,
    )


async def test_store_is_durable_and_private(tmp_path: Path) -> None:
    b = block(1)
    async with KeyStore(tmp_path / "state", key_size_bytes=32) as store:
        ids = await store.store(b)
        assert ids == key_ids_for(b.block_id, 4)
        # a second, independent connection sees the committed block right away
        other = sqlite3.connect(tmp_path / "state" / DB_NAME)
        assert other.execute("SELECT count(*) FROM keys").fetchone() == (4,)
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        other.close()
        for name in os.listdir(tmp_path / "state"):
            mode = stat.S_IMODE(os.stat(tmp_path / "state" / name).st_mode)
            assert mode == 0o600, (name, oct(mode))
        assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert b.material.hex() not in repr(b)
    assert "material" not in repr(b)


async def test_reserve_ack_erases_material_keeps_metadata(tmp_path: Path) -> None:
    b = block(2)
    async with KeyStore(tmp_path, key_size_bytes=32) as store:
        await store.store(b)
        r = await store.reserve("kms-a", "req-1", 40)  # whole keys: 2 x 32 bytes
        assert [k.material for k in r.keys] == [b.material[:32], b.material[32:64]]
        assert r.n_bytes == 64
        assert await store.available_bytes() == 64
        assert await store.acknowledge("kms-a", "req-1") == 2
        assert await store.acknowledge("kms-a", "req-1") == 0  # idempotent
        assert (await store.counts())["acknowledged"] == 2
    conn = sqlite3.connect(tmp_path / DB_NAME)
    rows = conn.execute("SELECT state, material IS NULL FROM keys ORDER BY idx").fetchall()
    assert rows == [("acknowledged", 1)] * 2 + [("available", 0)] * 2
    conn.close()
    # erased bytes are gone from the file and its WAL (secure_delete + checkpoint)
    raw = _all_bytes(tmp_path)
    assert b.material[:32] not in raw
    assert b.material[64:96] in raw


def _all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.is_file())


async def test_reservation_is_idempotent_and_exclusive(tmp_path: Path) -> None:
    async with KeyStore(tmp_path, key_size_bytes=16) as store:
        await store.store(block(3, 64))
        first = await store.reserve("kms-a", "req-1", 32)
        again = await store.reserve("kms-a", "req-1", 32)
        assert again == first
        with pytest.raises(RequestConflictError):
            await store.reserve("kms-b", "req-1", 32)
        other = await store.reserve("kms-b", "req-2", 32)
        assert {k.key_id for k in other.keys}.isdisjoint(k.key_id for k in first.keys)
        with pytest.raises(InsufficientKeyError) as info:
            await store.reserve("kms-b", "req-3", 1)
        assert info.value.available_bytes == 0
        with pytest.raises(RequestConflictError):
            await store.acknowledge("kms-b", "req-1")
        await store.acknowledge("kms-a", "req-1")
        with pytest.raises(RequestConflictError):
            await store.reserve("kms-a", "req-1", 32)  # acknowledged: never again


async def test_insufficient_key_reserves_nothing(tmp_path: Path) -> None:
    async with KeyStore(tmp_path, key_size_bytes=32) as store:
        await store.store(block(4, 64))
        with pytest.raises(InsufficientKeyError):
            await store.reserve("kms-a", "big", 65)
        assert await store.available_bytes() == 64
        assert await store.pending() == {}


async def test_peer_lookup_by_id(tmp_path: Path) -> None:
    """Both stations store the same block; the peer's consumer names key IDs."""
    b = block(5)
    async with KeyStore(tmp_path / "a") as alice, KeyStore(tmp_path / "b") as bob:
        await alice.store(b)
        await bob.store(b)
        enc = await alice.reserve("encryptor", "e1", 32)
        dec = await bob.reserve_ids("decryptor", "d1", [k.key_id for k in enc.keys])
        assert dec.keys == enc.keys
        with pytest.raises(KeyUnavailableError):
            await bob.reserve_ids("other", "d2", [enc.keys[0].key_id])
        with pytest.raises(KeyUnavailableError):
            await bob.reserve_ids("other", "d3", ["00000000-0000-0000-0000-000000000000"])


async def test_expire_erases_abandoned_reservations(tmp_path: Path) -> None:
    async with KeyStore(tmp_path) as store:
        await store.store(block(6))
        await store.reserve("kms-a", "r", 1)
        assert await store.expire_reservations(older_than_s=3600) == 0
        assert await store.expire_reservations(older_than_s=-1) == 1
        assert (await store.counts())["expired"] == 1
        assert await store.pending() == {}


async def test_loop_not_blocked_by_sqlite(tmp_path: Path) -> None:
    """Store calls run in the store's thread: the loop keeps ticking meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with KeyStore(tmp_path, key_size_bytes=32) as store:
        task = asyncio.create_task(ticker())
        for i in range(20):
            await store.store(block(100 + i, 4096))
        task.cancel()
        assert ticks > 20


_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from groundkey_daemon.keystore import KeyStore

    async def main():
        store = KeyStore(sys.argv[1], key_size_bytes=32)
        await store.open()
        r = await store.reserve("kms-a", "req-crash", 64)
        print(",".join(k.key_id for k in r.keys), flush=True)
        await asyncio.sleep(3600)  # "sending"... killed before any ack

    asyncio.run(main())
    """
)


def _spawn_holder(state_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(state_dir)], stdout=subprocess.PIPE, text=True
    )


async def test_sigkill_between_reserve_and_ack_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    b = block(7, 32 * 6)
    async with KeyStore(tmp_path, key_size_bytes=32) as store:
        await store.store(b)
    proc = await asyncio.to_thread(_spawn_holder, tmp_path)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        held = line.strip().split(",")
        assert len(held) == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    async with KeyStore(tmp_path, key_size_bytes=32) as store:
        assert await store.pending() == {"req-crash": held}
        # another consumer drains the pool: it never gets the held keys
        rest = await store.reserve("kms-b", "drain", 4 * 32)
        assert {k.key_id for k in rest.keys}.isdisjoint(held)
        with pytest.raises(InsufficientKeyError):
            await store.reserve("kms-b", "more", 1)
        # the crashed delivery is recovered by its own consumer, then erased
        retry = await store.reserve("kms-a", "req-crash", 64)
        assert [k.key_id for k in retry.keys] == held
        assert [k.material for k in retry.keys] == [b.material[:32], b.material[32:64]]
        assert await store.acknowledge("kms-a", "req-crash") == 2
        counts = await store.counts()
        assert counts == {"available": 0, "reserved": 4, "acknowledged": 2, "expired": 0}


_CHURN = textwrap.dedent(
    """
    import asyncio, sys
    from groundkey_daemon.keystore import KeyStore

    async def main():
        async with KeyStore(sys.argv[1], key_size_bytes=32) as store:
            i = int(sys.argv[2])
            while True:
                await store.reserve(f"c{i % 3}", f"r{i}", 32 * (1 + i % 3))
                if i % 2:
                    await store.acknowledge(f"c{i % 3}", f"r{i}")
                print(i, flush=True)
                i += 1

    asyncio.run(main())
    """
)


def _churn_and_kill(state_dir: Path, first: int, n_lines: int) -> int:
    """Run the churn script; SIGKILL it after ``n_lines`` completed operations."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHURN, str(state_dir), str(first)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    last = first - 1
    for _ in range(n_lines):
        line = proc.stdout.readline()
        if not line:
            break
        last = int(line)
    proc.send_signal(signal.SIGKILL)  # mid-way through the next reserve or ack
    proc.wait(timeout=30)
    proc.stdout.close()
    return last


def _check_invariants(path: Path, n_keys: int, last_request: int) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM keys").fetchone() == (n_keys,)  # none lost
        rows = conn.execute(
            "SELECT request_id, count(*), count(DISTINCT consumer), min(consumer) FROM keys"
            " WHERE state != 'available' GROUP BY request_id"
        ).fetchall()
        for request_id, n, consumers, consumer in rows:
            i = int(request_id[1:])
            assert i <= last_request + 1  # at most the one in flight when killed
            assert n == 1 + i % 3  # a request is reserved entirely or not at all
            assert (consumers, consumer) == (1, f"c{i % 3}")  # one consumer per key
    finally:
        conn.close()


async def test_sigkill_at_random_points_keeps_every_key_accounted_for(tmp_path: Path) -> None:
    n_keys = 64 * 6
    async with KeyStore(tmp_path, key_size_bytes=32) as store:
        for i in range(6):
            await store.store(block(200 + i, 64 * 32))
    rng = np.random.default_rng(2016)
    first = 0
    for _ in range(3):
        last = await asyncio.to_thread(_churn_and_kill, tmp_path, first, int(rng.integers(3, 30)))
        _check_invariants(tmp_path / DB_NAME, n_keys, last)
        first = last + 2  # the request in flight may or may not have committed
    async with KeyStore(tmp_path, key_size_bytes=32) as store:
        counts = await store.counts()
        assert sum(counts.values()) == n_keys
        for request_id in await store.pending():
            i = int(request_id[1:])
            await store.acknowledge(f"c{i % 3}", request_id)  # recovered and finished
        assert (await store.counts())["reserved"] == 0
