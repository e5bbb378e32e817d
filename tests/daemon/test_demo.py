"""``groundkey demo`` end to end: the real CLI, the emulator as a subprocess over TCP,
the GS-232B driver, an accelerated shared SimClock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from groundkey_daemon.commands.demo import STEPS

GROUNDKEY = str(Path(sys.executable).parent / "groundkey")


def test_demo_tracks_the_night_pass() -> None:
    proc = subprocess.run(
        [GROUNDKEY, "demo", "--speed", "40", "--json"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    for number, (title, _) in enumerate(STEPS, start=1):
        assert f"[{number}/{len(STEPS)}] {title}" in lines
    assert any("skipped the 2016-12-19 03:46Z pass: daylight" in line for line in lines)
    assert any(" track " in line and " err " in line for line in lines)  # progress lines
    result = json.loads(lines[-1])
    assert result["pass"]["aos"] == "2016-12-19T16:48:43.743Z"
    tracking = result["tracking"]
    assert tracking["prepositioned"]
    assert tracking["parked"]
    assert tracking["rotator_errors"] == 0
    # GS-232B speaks whole degrees, hence the 1.5 deg demo threshold.
    assert tracking["max_error_deg"] < tracking["threshold_deg"] == 1.5
    assert tracking["late_cycles"] < 0.1 * tracking["samples"]
    assert tracking["time_on_target_s"] >= 0.9 * tracking["tracked_s"]
    assert tracking["tracked_s"] > 400.0
    assert sum(result["wall_s"].values()) < 60.0


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
