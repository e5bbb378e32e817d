"""Benchmarks of the service infrastructure: link authentication and the key store."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid

import numpy as np

from groundkey_daemon.bench import Benchmark, Record, median_time_s
from groundkey_daemon.keystore import KeyBlock, KeyStore
from groundkey_protocol.link.auth import HmacAuth, OtpPool, WegmanCarterAuth


def _auth() -> list[Record]:
    rng = np.random.default_rng(6)
    payload = rng.bytes(1 << 20)
    hmac_auth = HmacAuth(rng.bytes(32), local="bob", remote="alice")
    wc = WegmanCarterAuth(
        rng.bytes(16),
        local="bob",
        remote="alice",
        send_pads=OtpPool(rng.bytes(16 * 64)),
        recv_pads=OtpPool(b""),
    )
    t_hmac = median_time_s(lambda: hmac_auth.seal(payload))
    t_wc = median_time_s(lambda: wc.seal(payload))
    return [
        Record("linkauth.hmac_sha256.seal_1MiB", len(payload) / t_hmac / 1e6, "MB/s"),
        Record("linkauth.wegman_carter.seal_1MiB", len(payload) / t_wc / 1e6, "MB/s"),
    ]


async def _keystore_async(state_dir: str) -> list[Record]:
    rng = np.random.default_rng(7)
    n_blocks = 50
    async with KeyStore(state_dir, key_size_bytes=32) as store:
        t0 = time.perf_counter()
        for _ in range(n_blocks):
            await store.store(
                KeyBlock(
                    block_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                    pass_id="bench",
                    peer="micius",
                    material=rng.bytes(4096),
                    qber=0.01,
                    eps_sec=1e-9,
                    eps_cor=1e-15,
                )
            )
        t_store = (time.perf_counter() - t0) / n_blocks
        n_req = 200
        t0 = time.perf_counter()
        for i in range(n_req):
            await store.reserve("bench", f"r{i}", 32)
            await store.acknowledge("bench", f"r{i}")
        t_req = (time.perf_counter() - t0) / n_req
    return [
        Record("keystore.store_4KiB_block", 1.0 / t_store, "blocks/s"),
        Record("keystore.reserve_ack_32B", 1.0 / t_req, "requests/s"),
    ]


def _keystore() -> list[Record]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_keystore_async(tmp))


BENCHMARKS = [
    Benchmark(
        names=("linkauth.hmac_sha256.seal_1MiB", "linkauth.wegman_carter.seal_1MiB"), run=_auth
    ),
    Benchmark(names=("keystore.store_4KiB_block", "keystore.reserve_ack_32B"), run=_keystore),
]
