"""End to end: ``groundkey run`` and the simulators in separate processes over real
transports (GS-232B mount over TCP, SCPI detector over TCP, the USB time tagger over
usbnet/pyusb, the satellite over ZeroMQ) for one accelerated pass: the daemon tracks,
arms, acquires and spools, syncs, distills with the satellite, stores and publishes;
the key in the daemon's store is identical to the satellite's."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from groundkey_daemon.spool import Spool
from tests.system.harness import EPOCH, LINK_KEY, SEED, spawn, stop
from tests.system.test_service import TLE, Notify, free_port

SPEED = 60.0


class Subscriber(threading.Thread):
    """Collects the daemon's telemetry from its ZeroMQ PUB socket."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.messages: list[dict[str, object]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if self.sock.poll(100):
                _, payload = self.sock.recv_multipart()
                self.messages.append(json.loads(payload))

    def close(self) -> None:
        self.done.set()
        self.join(5)
        self.sock.close()
        self.ctx.term()


def _exit_or_idle(daemon: subprocess.Popen[bytes], log: Path, log_since: int) -> bool:
    """After a restart: wait until the service exits by itself (False), or is idle
    (True): the satellite acknowledged the recovered block and the next pass, not
    the interrupted one, is scheduled (that one ended while the service was down)."""
    scheduled = re.compile(r": pass (\S+): scheduled")
    before = log.read_text()[:log_since]
    interrupted = scheduled.findall(before)[0]
    deadline = time.monotonic() + 100.0
    while daemon.poll() is None:
        with log.open("rb") as f:
            f.seek(log_since)
            text = f.read().decode(errors="replace")
        later = set(scheduled.findall(text)) - {interrupted}
        if later and "committed at the satellite" in text:
            return True
        assert time.monotonic() < deadline, "the restarted service neither exited nor idled"
        time.sleep(0.2)
    return False


@pytest.mark.parametrize(
    "fault",
    [None, ("SIGTERM", "distill"), ("SIGKILL", "distill"), ("SIGKILL", "store")],
    ids=["whole-pass", "sigterm-distilling", "sigkill-distilling", "sigkill-storing"],
)
def test_one_accelerated_pass_end_to_end(tmp_path: Path, fault: tuple[str, str] | None) -> None:
    """The whole pass. SIGTERM while a block is distilling: the daemon finishes that
    block (stored, identical at both ends), stops acquiring and exits 0. SIGKILL of the
    whole service while distilling or storing, then a restart: the spooled block is
    recovered, the pass goes on (or, if it ended while the service was down, the
    service finishes the recovered block and waits for the next pass, where the test
    stops it), and both ends hold exactly the same keys."""
    anchor = time.time() + 4.0
    clock = f"sim:{EPOCH},speed={SPEED},anchor={anchor}"
    key_file = tmp_path / "link.key"
    key_file.write_text(LINK_KEY.hex())
    key_file.chmod(0o600)
    sat_keys = tmp_path / "sat-keys"
    daemon_log = tmp_path / "daemon.log"
    procs: list[subprocess.Popen[str]] = []
    notify = Notify(tmp_path)
    sub: Subscriber | None = None
    try:
        rot, rot_url = spawn(
            "rotator", "--protocol", "gs232b", "--listen", "tcp://127.0.0.1:0",
            "--max-az", "450", "--clock", clock, "--slew-rate-deg-s", "12,12",
        )  # fmt: skip
        procs.append(rot)
        det, det_url = spawn("detector", "--listen", "tcp://127.0.0.1:0", "--tau-s", "0.1")
        procs.append(det)
        tagger, tagger_url = spawn(
            "tagger", "--preset", "bench-fiber", "--listen", "tcp://127.0.0.1:0",
            "--clock", clock, "--duration", "2.5", "--seed", str(SEED),
        )  # fmt: skip
        procs.append(tagger)
        sat, sat_url = spawn(
            "satellite", "--listen", "tcp://127.0.0.1:0", "--seed", str(SEED),
            "--link-key", str(key_file), "--keys-dir", str(sat_keys),
        )  # fmt: skip
        procs.append(sat)

        shutil.copy(TLE, tmp_path / "micius.tle")
        pub = f"tcp://127.0.0.1:{free_port()}"
        config = tmp_path / "station.toml"
        config.write_text(
            f"""
[station]
tle_files = ["micius.tle"]

[rotator]
protocol = "gs232b"
url = "{rot_url}"
max_az_deg = 450.0
slew_rate_az_deg_s = 12.0
slew_rate_el_deg_s = 12.0

[tracking]
threshold_deg = 1.5
preposition_s = 60.0

[service]
clock = "{clock}"
max_passes = 1
status_interval_s = 0.5

[keystore]
state_dir = "state"
key_size_bytes = 32

[delivery]
enabled = false

[telemetry]
station = "xinglong"

[telemetry.mqtt]
enabled = false

[telemetry.zmq]
bind = "{pub}"

[metrics]
enabled = false

[link_auth]
link_key = "{key_file}"

[link]
endpoint = "{sat_url}"
timeout_s = 60

[acquisition]
tagger_url = "{tagger_url}"
detector_url = "{det_url}"
tof_model = "fixed"
fixed_tof_ps = 5000000
min_block_detections = 2000000

[distill]
frame_bits = 50000
"""
        )
        sub = Subscriber(pub)
        sub.start()
        env = {**os.environ, "NOTIFY_SOCKET": notify.path}

        def start() -> subprocess.Popen[bytes]:
            # stderr to a file: worker processes inherit it, and a pipe would stay
            # open; a session of its own, so a crash can take all of it, as systemd does
            with daemon_log.open("a") as err:
                return subprocess.Popen(
                    [sys.executable, "-m", "groundkey_daemon.cli", "-v", "run", "--config",
                     str(config)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )  # fmt: skip

        daemon = start()
        idle = False
        try:
            notify.wait_for("READY=1")
            if fault is not None:
                sig, state = fault
                notify.wait_for(f": {state}")
                if sig == "SIGTERM":
                    daemon.send_signal(signal.SIGTERM)
                else:
                    os.killpg(daemon.pid, signal.SIGKILL)
                    daemon.wait()
                    mark = len(notify.messages)
                    log_mark = daemon_log.stat().st_size
                    daemon = start()
                    notify.wait_for("READY=1", since=mark)
                    idle = _exit_or_idle(daemon, daemon_log, log_mark)
                    if idle:
                        daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=100)
        except (subprocess.TimeoutExpired, AssertionError):
            daemon.send_signal(signal.SIGUSR1)
            time.sleep(1)
            code = -9
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        log = daemon_log.read_text()
        assert code == 0, log
    finally:
        logs = {str(p.args): stop(p) for p in procs}
        if sub is not None:
            sub.close()
        notify.close()

    states = ["preposition", "track", "arm", "acquire", "sync", "distill", "store", "publish",
              "disarm"]  # fmt: skip
    if fault is not None and fault[0] == "SIGKILL" and idle:
        # the pass ended while the service was down: the recovered block was finished
        # (or found stored) and acknowledged by the satellite, then a SIGTERM stopped it
        assert "stopping: SIGTERM" in log
    elif fault is not None and fault[0] == "SIGTERM":
        assert "stopping: SIGTERM" in log
        assert "exit code 0" in log
        spooled = Spool(tmp_path / "state" / "spool").blocks()
        assert spooled, "the pass's raw data stays spooled until the pass completes"
        assert {b.state for b in spooled} == {"done"}  # the block in flight was finished
    elif fault is None:
        states += ["park", "completed"]
    else:
        # rejoined after a SIGKILL: the pass completes, or its last block, acquired in
        # what was left of the pass after the restart, is too short for any key
        states += ["park"]
        assert re.search(r": (completed|aborted \(block \d+: no key possible)", log), log
    if fault is not None and fault[0] == "SIGKILL":
        assert log.count("supervisor: ready") == 2
        assert "distilling after a restart" in log or "was stored before the restart" in log
    for state in states:
        assert f": {state}" in log, (state, log)
    db = sqlite3.connect(tmp_path / "state" / "keys.sqlite3")
    blocks = db.execute("SELECT block_id, length_bits, qber FROM blocks").fetchall()
    assert blocks, log
    stored: dict[str, bytes] = {}
    for block_id, length_bits, qber in blocks:
        assert 0.005 < qber < 0.03
        stored[block_id] = b"".join(
            row[0]
            for row in db.execute(
                "SELECT material FROM keys WHERE block_id = ? ORDER BY idx", (block_id,)
            )
        )
        assert len(stored[block_id]) == (length_bits // 8) // 32 * 32  # whole 32-byte keys
        assert len(stored[block_id]) > 1000
    db.close()
    # both ends agree on every stored key: the same blocks, the same bits
    alice = {p.stem: p.read_bytes() for p in sat_keys.glob("*.key")}
    assert set(alice) == set(stored), (alice.keys(), stored.keys(), log)
    for block_id, material in stored.items():
        assert alice[block_id][: len(material)] == material
    kinds = [m["type"] for m in sub.messages] if sub else []
    assert {"keyexchange", "counts", "pass", "status", "pointing"} <= set(kinds), kinds
    exchange = next(m for m in sub.messages if m["type"] == "keyexchange") if sub else {}
    assert exchange["block_id"] in stored
    assert LINK_KEY.hex() not in log
    assert "Traceback" not in log, logs
