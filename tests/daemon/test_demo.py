"""``groundkey demo`` end to end: the real CLI starts the simulators (rotator over TCP,
detector over TCP, the micius-2017 time tagger over usbnet, the satellite over ZeroMQ)
and ``groundkey run`` for one accelerated pass; it ends with a pass report (text and
PNG), keys in the local store identical to the satellite's, and a fetch command that
works against a delivery server on that store."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shlex
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from groundkey_daemon.commands.demo import STEPS, DemoContext, daemon_config_text, prepare_directory
from groundkey_daemon.daemon_config import load_daemon_config
from groundkey_daemon.errors import UserError

GROUNDKEY = str(Path(sys.executable).parent / "groundkey")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_runs_one_key_exchange_pass(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.run(
        [GROUNDKEY, "demo", "--json",
         "--fetch-port", str(port), "--out", "demo-out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=115,
        check=False,
    )  # fmt: skip
    out = tmp_path / "demo-out"
    log = (out / "daemon.log").read_text() if (out / "daemon.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr + log[-3000:]
    assert "Traceback" not in proc.stderr + log
    lines = proc.stdout.splitlines()
    for number, (title, _) in enumerate(STEPS, start=1):
        assert f"[{number}/{len(STEPS)}] {title}" in lines
    # live progress from the daemon's telemetry: states, pointing, rates, the key block
    assert "      pass outcome: completed" in lines
    for needle in (": preposition", ": acquire", ": distill", "pass   aos"):
        assert any(needle in line for line in lines), needle
    assert any(" err " in line and " det " in line and "kHz" in line for line in lines)
    assert any(line.lstrip().startswith(tuple("0123456789")) and " key    block " in line
               for line in lines)  # fmt: skip
    result = json.loads(lines[-1])
    assert result["outcome"] == "completed"
    tracking = result["tracking"]
    assert tracking["prepositioned"]
    assert tracking["parked"]
    assert tracking["rotator_errors"] == 0
    assert tracking["tracked_s"] > 45.0
    assert tracking["time_on_target_s"] >= 0.9 * tracking["tracked_s"]
    assert tracking["max_error_deg"] < 2 * tracking["threshold_deg"]  # GS-232B: whole deg

    # the pass report: text and a PNG
    report = result["report"]
    assert report["blocks"] >= 1
    assert 0.005 < report["qber"] < 0.03
    assert report["sifted_bits"] > 10 * report["secret_bits"] > 0
    text = (out / "pass-report.txt").read_text()
    for needle in ("elevation: max", "detection rate", "QBER", "sifted", "secret",
                   "key rate over time", "whole pass above 45 deg", "time on target"):  # fmt: skip
        assert needle in text, needle
    png = (out / "pass-report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 20_000

    # keys in the local store, identical at the satellite; listed without material
    keys = result["keys"]
    assert keys["count"] == report["secret_bits"] // 256 > 0
    assert keys["agree"] == keys["blocks"] == report["blocks"]
    db = sqlite3.connect(out / "state" / "keys.sqlite3")
    rows = db.execute("SELECT key_id, block_id, idx, material FROM keys ORDER BY idx").fetchall()
    db.close()
    assert {r[0] for r in rows} == set(keys["ids"])
    sat = {p.stem: p.read_bytes() for p in (out / "sat-keys").glob("*.key")}
    for _, block_id, idx, material in rows:
        assert sat[block_id][32 * idx : 32 * idx + 32] == material
        assert material.hex() not in proc.stdout + log
        assert base64.b64encode(material).decode() not in proc.stdout + log

    link_key = (out / "link.key").read_text().strip()
    assert link_key not in proc.stdout + log

    # the printed fetch commands work: a server on the demo's store, the demo consumer
    serve_line = next(line.strip() for line in lines if " keys serve " in line)
    get_line = next(line.strip() for line in lines if " keys get " in line)
    assert serve_line == keys["serve"] + " &"
    assert get_line == keys["get"]
    with subprocess.Popen(
        shlex.split(keys["serve"]), cwd=tmp_path, stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == f"tcp://127.0.0.1:{port}"
            got = subprocess.run(
                shlex.split(keys["get"]), cwd=tmp_path, capture_output=True, text=True,
                timeout=60, check=False,
            )  # fmt: skip
            assert got.returncode == 0, got.stderr
        finally:
            server.terminate()
            server.wait(timeout=30)
    (delivered,) = json.loads(got.stdout)["keys"]
    block_id, idx = next((r[1], r[2]) for r in rows if r[0] == delivered["key_ID"])
    assert base64.b64decode(delivered["key"]) == sat[block_id][32 * idx : 32 * idx + 32]


def test_demo_config_validates_and_uses_mqtt_only_when_asked(tmp_path: Path) -> None:
    """The generated station config passes the daemon's full validation (paths and
    secrets included); MQTT is off unless ``--mqtt HOST:PORT`` names a broker."""

    def config_for(mqtt: str) -> Path:
        args = argparse.Namespace(out=tmp_path / "demo-out", mqtt=mqtt, min_el=45.0)
        ctx = DemoContext(args=args, stack=contextlib.AsyncExitStack(), out=print)
        prepare_directory(ctx)
        ctx.urls = {"rotator": "tcp://127.0.0.1:1", "tagger": "usbnet://127.0.0.1:2",
                    "detector": "tcp://127.0.0.1:3", "satellite": "tcp://127.0.0.1:4"}  # fmt: skip
        ctx.clock_spec = "sim:2016-12-19T16:51:03Z,speed=5"
        path = tmp_path / "demo-out" / "station.toml"
        path.write_text(
            daemon_config_text(ctx, pub="tcp://127.0.0.1:5", delivery="tcp://127.0.0.1:6")
        )
        return path

    plain = load_daemon_config(config_for(""))
    assert not plain.telemetry.mqtt.enabled
    assert plain.delivery.enabled
    assert plain.service.max_passes == 1
    assert (tmp_path / "demo-out" / "link.key").stat().st_mode & 0o777 == 0o600
    with_broker = load_daemon_config(config_for("broker.example:8883"))
    assert with_broker.telemetry.mqtt.enabled
    assert (with_broker.telemetry.mqtt.host, with_broker.telemetry.mqtt.port) == (
        "broker.example",
        8883,
    )
    with pytest.raises(UserError, match="--mqtt must be HOST:PORT"):
        config_for("no-port")


def test_demo_rejects_a_bad_speed() -> None:
    proc = subprocess.run(
        [GROUNDKEY, "demo", "--speed", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == "groundkey demo: error: --speed must be positive, got 0\n"
