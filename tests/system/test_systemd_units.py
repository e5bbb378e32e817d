"""The shipped systemd units pass systemd's own offline checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
BIN_DIR = Path(sys.executable).parent
UNITS = {"groundkey.service": "groundkey", "groundkey-sim.service": "groundkey-sim"}
MAX_EXPOSURE = {"groundkey.service": 2.0, "groundkey-sim.service": 2.0}


def installed_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's script (verify checks it exists)."""
    exe = shutil.which(UNITS[unit], path=str(BIN_DIR))
    if exe is None:
        pytest.skip(f"{UNITS[unit]} script not installed in {BIN_DIR}")
    text = (SYSTEMD_DIR / unit).read_text()
    assert f"ExecStart=/usr/bin/{UNITS[unit]} " in text
    out = tmp_path / unit
    out.write_text(text.replace(f"/usr/bin/{UNITS[unit]} ", f"{exe} "))
    return out


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_verifies(unit: str, tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    path = installed_copy(unit, tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "groundkey" not in result.stderr, result.stderr  # no warnings about our unit


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_exposure_is_low(unit: str, tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    path = installed_copy(unit, tmp_path)
    threshold = int(MAX_EXPOSURE[unit] * 10)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", f"--threshold={threshold}", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE[unit]
    assert result.returncode == 0, result.stdout[-2000:]


def test_service_contract() -> None:
    """What the daemon relies on: notify + watchdog, its devices, its credentials."""
    text = (SYSTEMD_DIR / "groundkey.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "User=groundkey",
        "SupplementaryGroups=dialout plugdev",
        "StateDirectory=groundkey",
        "ConfigurationDirectory=groundkey",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
        "DeviceAllow=char-usb_device rw",
        "LoadCredential=link.key:",
        "LoadCredential=curve-server.key_secret:",
    ):
        assert re.search(rf"^{re.escape(line)}", text, re.MULTILINE), line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.MULTILINE)
    assert not re.search(r"^PrivateDevices=yes", text, re.MULTILINE)  # would hide ttyUSB


def test_sysusers_snippet_is_valid() -> None:
    sysusers = require_binary("systemd-sysusers", "systemd")
    result = subprocess.run(
        [sysusers, "--dry-run", str(SYSTEMD_DIR / "groundkey.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_udev_rules_name_every_device() -> None:
    rules = [
        line
        for line in (SYSTEMD_DIR / "70-groundkey.rules").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pair = re.compile(r'^[A-Z]+(\{[\w.]+\})?(==|!=|\+=|=)"[^"]*"$')
    links = []
    for line in rules:
        for item in (p.strip() for p in line.split(", ")):
            assert pair.match(item), item
        links += re.findall(r'SYMLINK\+="([^"]+)"', line)
    assert "groundkey/rotator" in links
    assert "groundkey/tagger" in links
    assert any(link.startswith("groundkey/detector") for link in links)
