"""End to end with the consumers: ``groundkey run`` and the simulators in separate
processes over real transports (the mount's GS-232B controller on a pty, the detector
over TCP, the USB time tagger through the pyusb backend over usbnet, the satellite over
ZeroMQ) for a short accelerated pass, with a real mosquitto broker (the shipped ACL) and
real ``mosquitto_sub``/``mosquitto_pub`` clients: identical keys at both ends, delivered
over CURVE to the authorized consumer only; a partner station receives the key-exchange
events and cannot publish commands."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

from groundkey_daemon.keystore import key_ids_for
from tests.conftest import require_binary
from tests.interop.test_mosquitto import PASSWORDS, Broker
from tests.system.harness import LINK_KEY, Consumers, Rig

STATION = "xinglong"


def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)


def _wait_file(path: Path, needle: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while needle not in (text := path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"no {needle!r} in {path}: {text}"
        time.sleep(0.05)
    return text


def _sub(broker: Broker, user: str, out: Path, *topics: str) -> subprocess.Popen[bytes]:
    exe = require_binary("mosquitto_sub", "mosquitto-clients")
    args = [exe, "-p", str(broker.port), "-u", user, "-P", PASSWORDS[user], "-v", "-q", "1"]
    for t in topics:
        args += ["-t", t]
    with out.open("wb") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.DEVNULL)


def _pub(broker: Broker, user: str, topic: str, message: str) -> int:
    exe = require_binary("mosquitto_pub", "mosquitto-clients")
    return subprocess.run(
        [exe, "-p", str(broker.port), "-u", user, "-P", PASSWORDS[user], "-q", "1",
         "-t", topic, "-m", message],
        capture_output=True,
        timeout=60,
    ).returncode  # fmt: skip


def test_pass_keys_reach_the_authorized_consumer_and_events_the_partner(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    mosquitto = subprocess.Popen(
        [broker.mosquitto, "-c", str(broker.conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs: list[subprocess.Popen[bytes]] = [mosquitto]
    rig = Rig(tmp_path, rotator_pty=True)
    consumers = Consumers(tmp_path)
    pw_file = tmp_path / "groundkey.password"
    pw_file.write_text(PASSWORDS["groundkey"] + "\n")
    events_file, commands_file = tmp_path / "partner.txt", tmp_path / "commands.txt"
    try:
        _wait_port(broker.port)
        rig.write_config(
            delivery=consumers.config(),
            mqtt=(
                f'[telemetry.mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
                f'username = "groundkey"\npassword_file = "{pw_file}"\n'
                "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
            ),
        )
        # run until told: the consumers fetch keys after the pass
        rig.config.write_text(rig.config.read_text().replace("max_passes = 1", "max_passes = 0"))
        # the station's command subscription (as the groundkey account may read commands)
        procs.append(_sub(broker, "groundkey", commands_file, f"groundkey/{STATION}/command/#"))
        procs.append(
            _sub(
                broker, "partner", events_file,
                f"groundkey/{STATION}/status", f"groundkey/{STATION}/keyexchange",
            )
        )  # fmt: skip
        mark = rig.start()
        rig.wait("READY=1", since=mark)
        _wait_file(events_file, f"groundkey/{STATION}/status ")  # partner subscribed, live
        # the partner account cannot publish commands; the operator's marker arrives alone
        assert _pub(broker, "operator", f"groundkey/{STATION}/command/x", "marker-0") == 0
        _wait_file(commands_file, "marker-0")
        _pub(broker, "partner", f"groundkey/{STATION}/command/park", "evil-park")
        _pub(broker, "partner", f"groundkey/{STATION}/keyexchange", '{"evil": 1}')
        assert _pub(broker, "operator", f"groundkey/{STATION}/command/x", "marker-1") == 0

        rig.wait(": completed", since=mark, timeout_s=100)
        events_text = _wait_file(events_file, f"groundkey/{STATION}/keyexchange ")
        stored = rig.station_keys()
        assert stored, rig.log
        n_keys = sum(n // 8 // 32 for _, n, _ in stored.values())
        # an unknown consumer gets nothing (the ZAP handshake fails: no reply at all)
        stranger = consumers.get(32, request_id="s-1", stranger=True, timeout_s=3.0)
        assert stranger.returncode != 0
        assert '"keys"' not in stranger.stdout
        # the authorized consumer gets every key, once
        got = consumers.get(32 * n_keys, request_id="c-1")
        assert got.returncode == 0, got.stderr
        doc = json.loads(got.stdout.strip().splitlines()[-1])
        delivered = {k["key_ID"]: base64.b64decode(k["key"]) for k in doc["keys"]}
        empty = consumers.get(32, request_id="c-2")
        assert empty.returncode != 0  # nothing left: insufficient key
        assert rig.daemon is not None
        rig.daemon.send_signal(signal.SIGTERM)
        assert rig.finish() == 0, rig.log
        commands_text = commands_file.read_text()
    finally:
        rig.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
            p.wait(30)

    log = rig.log
    assert "marker-1" in commands_text or _wait_file(commands_file, "marker-1")
    assert "evil" not in commands_text
    # both ends hold the same keys; the consumer received exactly the satellite's bits
    alice = rig.satellite_keys()
    assert set(alice) == set(stored), log
    ids = []
    for block_id, (qber, length_bits, _) in stored.items():
        assert 0.005 < qber < 0.03
        for i, key_id in enumerate(key_ids_for(block_id, length_bits // 8 // 32)):
            ids.append(key_id)
            assert delivered[key_id] == alice[block_id][32 * i : 32 * (i + 1)]
    assert sorted(ids) == sorted(delivered)
    # the partner saw each key-exchange event: IDs, lengths, QBER; never key bits
    exchanges = [
        json.loads(line.split(" ", 1)[1])
        for line in events_text.splitlines()
        if line.startswith(f"groundkey/{STATION}/keyexchange ")
    ]
    assert {e["block_id"] for e in exchanges} == set(stored)
    assert all("evil" not in e for e in exchanges)
    for e in exchanges:
        assert set(e["key_ids"]) <= set(ids)
        assert 0.005 < e["qber"] < 0.03
    for material in alice.values():
        assert material.hex() not in events_text
        assert base64.b64encode(material[:32]).decode() not in events_text
    assert LINK_KEY.hex() not in log
    assert "Traceback" not in log
