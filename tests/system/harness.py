"""A station rig for whole-pass system tests: the simulators (rotator, detector, USB time
tagger over usbnet/pyusb, satellite over ZeroMQ) in their own processes, a station
config pointing at them, and ``groundkey run`` started (and restarted) as systemd would:
in a session of its own, with a NOTIFY_SOCKET, stderr appended to one log file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.system.test_service import TLE, Notify, free_port

EPOCH = "2016-12-19T16:47:30Z"  # 73 s before AOS of the Micius pass over Xinglong
SEED = 77
LINK_KEY = bytes(range(100, 132))


def spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    """A simulator subprocess and the endpoint it prints on its first line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "groundkey_sim.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    assert endpoint, proc.stderr.read() if proc.stderr else ""
    return proc, endpoint


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err or ""


class Rig:
    """Simulators + config + daemon for one accelerated pass (bench-fiber downlink)."""

    def __init__(
        self,
        tmp: Path,
        *,
        speed: float = 60.0,
        lead_s: float = 4.0,
        tagger_s: float = 2.5,
        rotator_args: tuple[str, ...] = (),
        rotator_port: int = 0,
        rotator_pty: bool = False,
        preset: str = "bench-fiber",
        epoch: str = EPOCH,
    ) -> None:
        self.tmp = tmp
        anchor = time.time() + lead_s
        self.clock = f"sim:{epoch},speed={speed},anchor={anchor}"
        self.key_file = tmp / "link.key"
        self.key_file.write_text(LINK_KEY.hex())
        self.key_file.chmod(0o600)
        self.sat_keys = tmp / "sat-keys"
        self.log_path = tmp / "daemon.log"
        self.procs: list[subprocess.Popen[str]] = []
        self.notify = Notify(tmp)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.rotator_args = ("--protocol", "gs232b", "--max-az", "450", "--clock", self.clock,
                             "--slew-rate-deg-s", "12,12", *rotator_args)  # fmt: skip
        self.rotator_pty = rotator_pty
        self.rotator, self.rot_url = self.start_rotator(rotator_port)
        det, self.det_url = spawn("detector", "--listen", "tcp://127.0.0.1:0", "--tau-s", "0.1")
        self.procs.append(det)
        tagger, self.tagger_url = spawn(
            "tagger", "--preset", preset, "--listen", "tcp://127.0.0.1:0",
            "--clock", self.clock, "--duration", str(tagger_s), "--seed", str(SEED),
        )  # fmt: skip
        self.procs.append(tagger)
        sat, self.sat_url = spawn(
            "satellite", "--listen", "tcp://127.0.0.1:0", "--seed", str(SEED),
            "--link-key", str(self.key_file), "--keys-dir", str(self.sat_keys),
        )  # fmt: skip
        self.procs.append(sat)
        self.pub = f"tcp://127.0.0.1:{free_port()}"
        self.config = tmp / "station.toml"

    def start_rotator(self, port: int = 0) -> tuple[subprocess.Popen[str], str]:
        """The mount's controller on a pty (a serial device) or on TCP."""
        if self.rotator_pty:
            # a stable name for the device, as the shipped udev rules give it
            link = str(self.tmp / "ttyROT")
            proc, _ = spawn("rotator", "--pty", "--pty-link", link, *self.rotator_args)
            url = f"serial://{link}?baud=9600"
        else:
            proc, url = spawn("rotator", "--listen", f"tcp://127.0.0.1:{port}", *self.rotator_args)
        self.procs.append(proc)
        return proc, url

    def write_config(
        self,
        *,
        min_block_detections: int = 2_000_000,
        delivery: str = "[delivery]\nenabled = false\n",
        mqtt: str = "[telemetry.mqtt]\nenabled = false\n",
        extra_acquisition: str = "",
        tof_model: str = "fixed",
        min_el_deg: float = 10.0,
    ) -> Path:
        shutil.copy(TLE, self.tmp / "micius.tle")
        self.config.write_text(
            f"""
[station]
tle_files = ["micius.tle"]
min_el_deg = {min_el_deg}

[rotator]
protocol = "gs232b"
url = "{self.rot_url}"
max_az_deg = 450.0
slew_rate_az_deg_s = 12.0
slew_rate_el_deg_s = 12.0

[tracking]
threshold_deg = 1.5
preposition_s = 60.0

[service]
clock = "{self.clock}"
max_passes = 1
status_interval_s = 0.5

[keystore]
state_dir = "state"
key_size_bytes = 32

{delivery}

[telemetry]
station = "xinglong"

{mqtt}

[telemetry.zmq]
bind = "{self.pub}"

[metrics]
enabled = false

[link_auth]
link_key = "{self.key_file}"

[link]
endpoint = "{self.sat_url}"
timeout_s = 60

[acquisition]
tagger_url = "{self.tagger_url}"
detector_url = "{self.det_url}"
tof_model = "{tof_model}"
fixed_tof_ps = 5000000
min_block_detections = {min_block_detections}
{extra_acquisition}

[distill]
frame_bits = 50000
"""
        )
        return self.config

    # -- the daemon ----------------------------------------------------------------------

    def start(self) -> int:
        """Start ``groundkey run``; returns the notify-message index to wait from."""
        mark = len(self.notify.messages)
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.path}
        env.pop("WATCHDOG_PID", None)
        # stderr to a file: worker processes inherit it, and a pipe would stay open;
        # a session of its own, so a crash can take all of it, as systemd does
        with self.log_path.open("a") as err:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "groundkey_daemon.cli", "-v", "run", "--config",
                 str(self.config)],
                cwd=self.tmp,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        return mark

    def wait(self, needle: str, since: int = 0, timeout_s: float = 90.0) -> str:
        return self.notify.wait_for(needle, timeout_s, since=since)

    def wait_log(self, needle: str, count: int = 1, timeout_s: float = 90.0) -> None:
        """Until ``needle`` occurs ``count`` times in the daemon's log."""
        deadline = time.monotonic() + timeout_s
        while self.log.count(needle) < count:
            assert self.daemon is not None
            assert self.daemon.poll() is None, self.log
            assert time.monotonic() < deadline, f"no {needle!r} x{count} in\n{self.log}"
            time.sleep(0.02)

    def crash(self) -> None:
        """SIGKILL the whole service (daemon and its worker processes)."""
        assert self.daemon is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait()
        with self.log_path.open("a") as f:
            f.write("=== SIGKILL ===\n")

    def finish(self, timeout_s: float = 100.0) -> int:
        """Wait for the daemon to exit by itself; the exit code (-9 on a hang)."""
        assert self.daemon is not None
        try:
            return self.daemon.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.daemon.send_signal(signal.SIGUSR1)  # stacks into the log
            time.sleep(1)
            return -9
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait()

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def close(self) -> dict[str, str]:
        if self.daemon is not None and self.daemon.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait()
        logs = {str(p.args): stop(p) for p in self.procs}
        self.notify.close()
        return logs

    # -- both ends -------------------------------------------------------------------------

    def station_keys(self) -> dict[str, tuple[float, int, bytes]]:
        """block_id -> (qber, length_bits, stored material) from the daemon's key store
        (material of keys already delivered and acknowledged is erased: shorter)."""
        db = sqlite3.connect(self.tmp / "state" / "keys.sqlite3")
        try:
            out = {}
            for block_id, length_bits, qber in db.execute(
                "SELECT block_id, length_bits, qber FROM blocks"
            ).fetchall():
                material = b"".join(
                    row[0] or b""
                    for row in db.execute(
                        "SELECT material FROM keys WHERE block_id = ? ORDER BY idx", (block_id,)
                    )
                )
                out[str(block_id)] = (float(qber), int(length_bits), material)
            return out
        finally:
            db.close()

    def satellite_keys(self) -> dict[str, bytes]:
        return {p.stem: p.read_bytes() for p in self.sat_keys.glob("*.key")}


class Consumers:
    """CURVE key pairs for the delivery server, an allowed consumer and a stranger, and
    the reference client ``groundkey keys get`` run as a subprocess."""

    def __init__(self, tmp: Path) -> None:
        from groundkey_daemon.delivery import create_key_pair

        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.server_public, self.server_secret = create_key_pair(tmp / "curve", "server")
        self.allow_dir = tmp / "consumers"
        self.allow_dir.mkdir()
        pub, self.client_secret = create_key_pair(tmp / "curve", "client")
        shutil.copy(pub, self.allow_dir / "client.key")
        _, self.stranger_secret = create_key_pair(tmp / "curve", "stranger")

    def config(self) -> str:
        return (
            f'[delivery]\nenabled = true\nbind = "{self.endpoint}"\n'
            f'server_secret_key = "{self.server_secret}"\nallow_dir = "{self.allow_dir}"\n'
        )

    def get(
        self, n_bytes: int, *, request_id: str, ack: bool = True, stranger: bool = False,
        timeout_s: float = 10.0,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        args = [
            sys.executable, "-m", "groundkey_daemon.cli", "keys", "get",
            "--endpoint", self.endpoint, "--server-key", str(self.server_public),
            "--client-key", str(self.stranger_secret if stranger else self.client_secret),
            "--bytes", str(n_bytes), "--request-id", request_id, "--timeout", str(timeout_s),
        ]  # fmt: skip
        if not ack:
            args.append("--no-ack")
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s + 60)
