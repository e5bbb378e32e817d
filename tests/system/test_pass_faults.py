"""Faults during an accelerated pass, with ``groundkey run`` and the simulators in separate
processes: the mount's controller unplugged and replugged (its pty vanishes and comes back
under the same stable name), the MQTT broker restarted, time-tag chunks dropped (a one-chunk
queue) -> the pass goes on, or degrades with the reason reported, and both ends still agree
on every key. SIGTERM in the middle of a pass: the mount is parked, the detectors disarmed,
and the daemon exits 0."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from groundkey_protocol.devices import timetagger as tt
from tests.conftest import require_binary
from tests.interop.test_mosquitto import PASSWORDS, Broker
from tests.system.harness import Rig
from tests.system.test_e2e_delivery import _wait_file, _wait_port

STATION = "xinglong"


def _events(path: Path, topic: str) -> list[dict[str, object]]:
    prefix = f"groundkey/{STATION}/{topic} "
    return [
        json.loads(line[len(prefix) :])
        for line in path.read_text().splitlines()
        if line.startswith(prefix)
    ]


def _mqtt(broker: Broker, pw_file: Path) -> str:
    return (
        f'[telemetry.mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'username = "groundkey"\npassword_file = "{pw_file}"\n'
        "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
    )


def _drop_tagger_frames(url: str, n: int) -> None:
    """Ask the simulated tagger to discard its next ``n`` frames (vendor request 0x7F)."""
    host, port = url.removeprefix("usbnet://").split(":")
    setup = tt.CTRL_STRUCT.pack(tt.REQ_OUT, tt.REQ_DEBUG_DROP, n, 0, 0, 1000)
    with socket.create_connection((host, int(port)), 10) as s:
        s.sendall(tt.UsbnetMessage(tt.OP_CTRL, payload=setup).encode())
        reader = tt.UsbnetReader()
        replies: list[tt.UsbnetMessage] = []
        while not replies:
            data = s.recv(4096)
            assert data, "usbnet connection closed"
            replies = reader.feed(data)
    assert replies[0].status == tt.USB_OK


def test_unplugged_rotator_restarted_broker_and_dropped_chunks(tmp_path: Path) -> None:
    broker = Broker(tmp_path)

    def start_broker() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [broker.mosquitto, "-c", str(broker.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(broker.port)
        return proc

    mosquitto = start_broker()
    rig = Rig(tmp_path, speed=40.0, rotator_pty=True)
    pw_file = tmp_path / "groundkey.password"
    pw_file.write_text(PASSWORDS["groundkey"] + "\n")
    events_file = tmp_path / "partner.txt"
    try:
        rig.write_config(mqtt=_mqtt(broker, pw_file))
        # a partner with a persistent QoS 1 session: it gets what was queued for it while
        # the broker was away
        exe = require_binary("mosquitto_sub", "mosquitto-clients")
        args = [exe, "-p", str(broker.port), "-u", "operator", "-P", PASSWORDS["operator"],
                "-v", "-q", "1", "-c", "-i", "partner-session",
                "-t", f"groundkey/{STATION}/#"]  # fmt: skip
        with events_file.open("wb") as f:
            sub = subprocess.Popen(args, stdout=f, stderr=subprocess.DEVNULL)
        mark = rig.start()
        rig.wait("READY=1", since=mark)
        _wait_file(events_file, f"groundkey/{STATION}/status ")
        rig.wait(": acquire", since=mark)
        # the tagger loses frames on the way (the simulator's debug request, sent over
        # a second usbnet connection, as another program on the bus could)
        _drop_tagger_frames(rig.tagger_url, 3)
        rig.wait_log("3 frame(s) lost")
        # unplug the mount's controller mid-pass ...
        rig.rotator.kill()
        rig.rotator.wait()
        rig.wait_log("failed (retrying next cycle)")
        # ... and the broker goes away too
        mosquitto.terminate()
        mosquitto.wait(30)
        rig.wait_log("MQTT connection lost")
        rig.rotator, _ = rig.start_rotator()  # replugged: the same stable device name
        rig.wait_log(": reconnected")
        mosquitto = start_broker()
        rig.wait_log("MQTT connected", 2)
        status = rig.wait(": completed", since=mark, timeout_s=100)
        assert rig.finish() == 0, rig.log
        _wait_file(events_file, '"completed"')
    finally:
        rig.close()
        for p in (sub, mosquitto):
            if p.poll() is None:
                p.terminate()
                p.wait(30)

    log = rig.log
    assert "tracking done" in log
    assert ": park" in log
    assert ": reconnected" in log  # the tracker reopened the replugged device
    # the lost frames are counted and reported as the pass's degradation reason
    assert "time tagger lost 3 frame(s)" in status, status
    stored = rig.station_keys()
    alice = rig.satellite_keys()
    assert set(alice) == set(stored), log
    for block_id, (_, _, material) in stored.items():
        assert alice[block_id][: len(material)] == material
    # the partner got the pass's events across the broker restart, gaps detectable by seq
    passes = _events(events_file, "pass")
    assert "completed" in [e["event"] for e in passes]
    seqs = [int(str(e["seq"])) for e in passes]
    assert seqs == sorted(seqs)
    exchanges = _events(events_file, "keyexchange")
    assert {e["block_id"] for e in exchanges} == set(stored)
    assert "Traceback" not in log


def _rotator_position(rig: Rig) -> tuple[float, float]:
    """Ask the (TCP) GS-232B controller where it is: ``C2`` -> ``AZ=aaa EL=eee``."""
    host, port = rig.rot_url.removeprefix("tcp://").split(":")
    with socket.create_connection((host, int(port)), 10) as s:
        s.sendall(b"C2\r")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(64)
            assert chunk
            reply += chunk
    found = re.search(r"AZ=\s*(\d+)\s*EL=\s*(\d+)", reply.decode())
    assert found, reply
    return float(found[1]), float(found[2])


def test_sigterm_mid_pass_parks_the_mount_and_disarms(tmp_path: Path) -> None:
    rig = Rig(tmp_path, speed=20.0)
    try:
        rig.write_config()
        mark = rig.start()
        rig.wait("READY=1", since=mark)
        rig.wait(": acquire", since=mark)
        rig.wait_log("committed at the satellite")
        assert rig.daemon is not None
        rig.daemon.send_signal(signal.SIGTERM)  # long before LOS
        started = time.monotonic()
        assert rig.finish() == 0, rig.log
        assert time.monotonic() - started < 60
        az, el = _rotator_position(rig)
    finally:
        rig.close()
    log = rig.log
    assert "stopping: SIGTERM" in log
    assert ": park (stopping)" in log
    assert "parked at az" in log
    assert ": disarm" in log
    assert log.index(": park (stopping)") < log.index("stopped (SIGTERM)")
    assert min(abs(az), abs(az - 360.0)) <= 1.0, az  # the park position: az 0, el 90
    assert abs(el - 90.0) <= 1.0, el
    stored = rig.station_keys()
    assert stored
    assert set(rig.satellite_keys()) == set(stored)
