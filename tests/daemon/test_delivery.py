from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from groundkey_daemon.delivery import (
    DeliveryClient,
    DeliveryError,
    DeliveryServer,
    DeliveryTimeoutError,
    create_key_pair,
    load_public_key,
)
from groundkey_daemon.keystore import KeyBlock, KeyStore, key_ids_for
from groundkey_daemon.metrics import Metrics

T0_S = 1482105600.0


@dataclass
class Keys:
    server_public: Path
    server_secret: Path
    alice_secret: Path
    mallory_secret: Path
    allow_dir: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    certs = tmp_path / "certs"
    allow = tmp_path / "allowed"
    allow.mkdir()
    server_public, server_secret = create_key_pair(certs, "server")
    alice_public, alice_secret = create_key_pair(certs, "alice")
    _, mallory_secret = create_key_pair(certs, "mallory")
    (allow / "alice.key").write_bytes(alice_public.read_bytes())
    return Keys(server_public, server_secret, alice_secret, mallory_secret, allow)


def make_block(seed: int, n_bytes: int) -> KeyBlock:
    rng = np.random.default_rng(seed)
    return KeyBlock(
        block_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
        pass_id="p1",
        peer="micius",
        material=rng.bytes(n_bytes),
        qber=0.01,
        eps_sec=1e-9,
        eps_cor=1e-15,
        created_s=T0_S,
    )


@pytest.fixture
async def served(tmp_path: Path, keys: Keys) -> AsyncIterator[tuple[DeliveryServer, KeyBlock]]:
    block = make_block(1, 32 * 8)
    async with KeyStore(tmp_path / "state", key_size_bytes=32) as store:
        await store.store(block)
        server = DeliveryServer(
            store,
            bind="tcp://127.0.0.1:0",
            server_secret_key_file=keys.server_secret,
            allow_dir=keys.allow_dir,
            metrics=Metrics(),
        )
        await server.start()
        task = asyncio.create_task(server.serve())
        try:
            yield server, block
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await server.close()


def client(
    server: DeliveryServer, keys: Keys, secret: Path, timeout_s: float = 30.0
) -> DeliveryClient:
    return DeliveryClient(
        server.endpoint,
        server_public_key=load_public_key(keys.server_public),
        client_secret_key_file=secret,
        timeout_s=timeout_s,
    )


def test_keygen_secret_file_is_private(keys: Keys) -> None:
    assert stat.S_IMODE(os.stat(keys.alice_secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys.server_secret).st_mode) == 0o600


async def test_allowed_consumer_gets_keys_and_ack_erases(
    served: tuple[DeliveryServer, KeyBlock], keys: Keys
) -> None:
    server, block = served
    async with client(server, keys, keys.alice_secret) as c:
        got = await c.get(48, "r1")
        assert [k.material for k in got] == [block.material[:32], block.material[32:64]]
        assert base64.b64encode(block.material[:30]).decode() not in repr(got)
        again = await c.get(48, "r1")  # a lost reply is retried with the same request ID
        assert [k.key_ID for k in again] == [k.key_ID for k in got]
        assert await c.ack("r1") == 2
    counts = await server.store.counts()
    assert counts["acknowledged"] == 2
    assert counts["available"] == 6
    assert server.metrics is not None
    text = server.metrics.render().decode()
    assert 'groundkey_delivery_requests_total{result="ok"} 3.0' in text
    assert "groundkey_key_bits_delivered_total 1024.0" in text  # 2 keys, sent twice


async def test_unknown_consumer_gets_nothing(
    served: tuple[DeliveryServer, KeyBlock], keys: Keys
) -> None:
    server, _ = served
    async with client(server, keys, keys.mallory_secret, timeout_s=2.0) as c:
        with pytest.raises(DeliveryTimeoutError):
            await c.get(32, "steal")
    assert await server.store.available_bytes() == 8 * 32
    assert await server.store.pending() == {}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "bad_request"),
        (b'{"op": "get", "request_id": "x", "bytes": -5}', "bad_request"),
        (b'{"op": "get", "request_id": "x", "bytes": "many"}', "bad_request"),
        (b'{"op": "delete_all", "request_id": "x"}', "bad_request"),
        (b'{"op": "get", "request_id": "", "bytes": 32}', "bad_request"),
        (b'{"op": "get", "request_id": "x", "bytes": 32, "extra": 1}', "bad_request"),
        (b'{"op": "get", "request_id": "x", "bytes": 100000}', "insufficient_key"),
        (b'{"op": "get_ids", "request_id": "x", "key_ids": ["nope"]}', "unavailable"),
        (b'{"op": "ack", "request_id": "never-issued"}', "unavailable"),
    ],
)
async def test_bad_requests_get_clear_errors_and_lose_nothing(
    served: tuple[DeliveryServer, KeyBlock], keys: Keys, body: bytes, code: str
) -> None:
    server, _ = served
    async with client(server, keys, keys.alice_secret) as c:
        with pytest.raises(DeliveryError) as info:
            await c.request(body)
        assert info.value.code == code
        assert len(await c.get(32)) == 1  # the server still works afterwards
    counts = await server.store.counts()
    assert counts["available"] == 7
    assert counts["reserved"] == 1


async def test_peer_lookup_over_the_wire(
    served: tuple[DeliveryServer, KeyBlock], keys: Keys
) -> None:
    server, block = served
    async with client(server, keys, keys.alice_secret) as c:
        wanted = key_ids_for(block.block_id, 8)[5:7]
        got = await c.get_ids(wanted, "dec-1")
        assert [k.key_ID for k in got] == wanted
        assert got[0].material == block.material[5 * 32 : 6 * 32]


def _start_server(tmp_path: Path, keys: Keys) -> tuple[subprocess.Popen[str], str]:
    """``groundkey keys serve`` in a subprocess, under a fake systemd notify socket."""
    notify_name = f"gk-test-{uuid.uuid4().hex}"
    notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_sock.bind("\0" + notify_name)
    notify_sock.settimeout(60)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "groundkey_daemon.cli", "keys", "serve",
            "--state-dir", str(tmp_path / "state"), "--bind", "tcp://127.0.0.1:0",
            "--server-key", str(keys.server_secret), "--allow-dir", str(keys.allow_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "NOTIFY_SOCKET": "@" + notify_name},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
        ready = notify_sock.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=serving keys on tcp://"), ready
    except BaseException:
        _kill(proc)
        raise
    finally:
        notify_sock.close()
    return proc, endpoint


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


def _cli_get(endpoint: str, keys: Keys, n: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "groundkey_daemon.cli", "keys", "get",
            "--endpoint", endpoint, "--server-key", str(keys.server_public),
            "--client-key", str(keys.alice_secret), "--bytes", str(n), "--timeout", "30", *extra,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip


async def test_at_most_once_across_server_sigkill(tmp_path: Path, keys: Keys) -> None:
    """Kill the server holding the store between reserve and ack, then recover."""
    block = make_block(2, 32 * 4)
    async with KeyStore(tmp_path / "state", key_size_bytes=32) as store:
        await store.store(block)

    proc, endpoint = await asyncio.to_thread(_start_server, tmp_path, keys)
    try:
        first = await asyncio.to_thread(
            _cli_get, endpoint, keys, 64, "--request-id", "crash-1", "--no-ack"
        )
        assert first.returncode == 0, first.stderr
    finally:
        await asyncio.to_thread(_kill, proc)
    held = json.loads(first.stdout)["keys"]
    assert [base64.b64decode(k["key"]) for k in held] == [
        block.material[:32],
        block.material[32:64],
    ]

    proc, endpoint = await asyncio.to_thread(_start_server, tmp_path, keys)
    try:
        # everything else goes to the next request; the held keys never do
        rest = await asyncio.to_thread(_cli_get, endpoint, keys, 64)
        assert rest.returncode == 0, rest.stderr
        rest_ids = {k["key_ID"] for k in json.loads(rest.stdout)["keys"]}
        assert rest_ids.isdisjoint(k["key_ID"] for k in held)
        empty = await asyncio.to_thread(_cli_get, endpoint, keys, 1)
        assert empty.returncode == 1
        assert "insufficient_key" in empty.stderr
        # the crashed delivery is recovered by repeating its request ID, then acked
        retry = await asyncio.to_thread(_cli_get, endpoint, keys, 64, "--request-id", "crash-1")
        assert retry.returncode == 0, retry.stderr
        assert json.loads(retry.stdout)["keys"] == held
    finally:
        await asyncio.to_thread(_kill, proc)
    async with KeyStore(tmp_path / "state", key_size_bytes=32) as store:
        assert await store.counts() == {
            "available": 0, "reserved": 0, "acknowledged": 4, "expired": 0,
        }  # fmt: skip


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from groundkey_daemon.cli import main

    assert main(["keys", "keygen", "--dir", str(tmp_path / "k"), "kms"]) == 0
    public, secret = capsys.readouterr().out.split()
    assert public.endswith("kms.key")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert len(load_public_key(public)) == 40  # Z85 of a 32-byte Curve25519 key
