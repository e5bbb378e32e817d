"""The real ``groundkey run`` in a subprocess: sd_notify READY/STATUS/WATCHDOG over a
real AF_UNIX socket, SIGHUP reload during a pass, SIGTERM clean exit, bad configs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TLE = ROOT / "config" / "tle" / "micius.tle"
# Micius over Xinglong above 10 deg: AOS 2016-12-19T16:48:43Z (see the pass id below).
PASS_ID = "41731-20161219T164843Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, *, clock: str, extra: str = "", metrics_port: int = 0) -> Path:
    shutil.copy(TLE, directory / "micius.tle")
    path = directory / "station.toml"
    path.write_text(
        f"""
[station]
tle_files = ["micius.tle"]

[service]
clock = "{clock}"
status_interval_s = 0.5
shutdown_timeout_s = 20
{extra}

[keystore]
state_dir = "state"

[delivery]
enabled = false

[telemetry.mqtt]
enabled = false

[telemetry.zmq]
bind = "tcp://127.0.0.1:0"

[metrics]
port = {metrics_port}
"""
    )
    return path


class Notify:
    """A systemd-like NOTIFY_SOCKET receiver that keeps reading, as systemd does
    (sd_notify blocks when nobody drains the socket)."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._changed = threading.Condition()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    def wait_for(self, needle: str, timeout_s: float = 60.0, *, since: int = 0) -> str:
        """The first message from index ``since`` on that contains ``needle``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for message in self.messages[since:]:
                    if needle in message:
                        return message
                left = deadline - time.monotonic()
                assert left > 0, f"no {needle!r} from the daemon; got {self.messages}"
                self._changed.wait(left)

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notify]:
    n = Notify(tmp_path)
    try:
        yield n
    finally:
        n.close()


def start_daemon(config: Path, notify: Notify, **env: str) -> subprocess.Popen[str]:
    environ = {**os.environ, "NOTIFY_SOCKET": notify.path, **env}
    environ.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "groundkey_daemon.cli", "-v", "run", "--config", str(config)],
        cwd=config.parent,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"daemon did not exit:\n{err}")
    return proc.returncode, err


def test_ready_metrics_watchdog_and_clean_sigterm(tmp_path: Path, notify: Notify) -> None:
    port = free_port()
    config = write_config(tmp_path, clock="sim:2016-12-19T12:00:00Z,speed=1", metrics_port=port)
    proc = start_daemon(config, notify, WATCHDOG_USEC="400000")
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            body = reply.read().decode()
        assert "groundkey_event_loop_lag_seconds" in body
        assert "groundkey_queue" in body or "tag_chunks" in body
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        code, log = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, log
    assert "stopped (SIGTERM), exit code 0" in log
    db = next((tmp_path / "state").glob("*.sqlite*"))
    assert db.stat().st_mode & 0o777 == 0o600
    assert "Traceback" not in log


def test_sighup_reloads_without_dropping_the_pass_in_progress(
    tmp_path: Path, notify: Notify
) -> None:
    # The clock starts just before AOS at 60x: the pass (no devices: followed on the
    # clock) runs ~8 wall seconds; reloads land in the middle of it.
    config = write_config(
        tmp_path, clock="sim:2016-12-19T16:48:20Z,speed=60", extra="max_passes = 1"
    )
    proc = start_daemon(config, notify)
    try:
        notify.wait_for("READY=1")
        notify.wait_for(f"pass {PASS_ID}: track")
        text = config.read_text().replace(
            'tle_files = ["micius.tle"]', 'tle_files = ["micius.tle"]\nmin_el_deg = 20.0'
        )
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("STATUS=reloaded")
        # a broken config on reload is refused; the daemon keeps the previous one
        config.write_text(text.replace("min_el_deg = 20.0", "min_el_deg = 200.0"))
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("STATUS=reload failed")
        code, log = finish(proc, timeout_s=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, log
    assert f"pass {PASS_ID}: completed" in log
    assert "reloaded 1 TLE(s)" in log
    assert "the pass in progress keeps its plan" in log
    assert "station.min_el_deg: expected <= 80" in log
    assert "1 pass(es) done" in log


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("[link]\ntimeout_s = -1\n", "link.timeout_s: expected > 0"),
        ("[distill]\nframe_bitz = 10\n", "distill.frame_bitz: unknown key"),
        ('[service]\nclock = "sometime"\n', "service.clock"),
        ('[station]\ntle_files = ["missing.tle"]\n', "station.tle_files[0]"),
        ("[rotator]\nmax_el_deg = 300\n", "rotator.max_el_deg: expected <= 180"),
    ],
)
def test_invalid_config_names_the_field_and_exits_2(
    tmp_path: Path, snippet: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(snippet + '\n[keystore]\nstate_dir = "state"\n')
    for command in (["config", "check"], ["run", "--config"]):
        proc = subprocess.run(
            [sys.executable, "-m", "groundkey_daemon.cli", *command, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr, proc.stderr
        assert str(path) in proc.stderr
        assert "Traceback" not in proc.stderr


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, clock="wall")
    proc = subprocess.run(
        [sys.executable, "-m", "groundkey_daemon.cli", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{config}: OK" in proc.stdout
