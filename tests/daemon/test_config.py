"""The station TOML config: defaults, the bundled examples, and errors that name the
file and the field path (also through the CLI: one line, exit 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from groundkey_daemon.cli import main
from groundkey_daemon.config import Config, config_from_dict, load_config
from groundkey_daemon.errors import ConfigError
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits

ROOT = Path(__file__).parents[2]
GROUNDKEY = str(Path(sys.executable).parent / "groundkey")


def test_defaults_are_xinglong_and_a_gs232b_with_overlap() -> None:
    config = Config()
    assert config.station.lat_deg == pytest.approx(40.3959)
    assert config.station.sun_avoid_deg == 20.0
    assert config.rotator.limits() == RotatorLimits(0.0, 450.0, 0.0, 90.0)
    assert config.rotator.park() == AzEl(0.0, 90.0)
    assert 5.0 <= config.tracking.rate_hz <= 10.0


@pytest.mark.parametrize("name", ["station.toml", "sim-demo.toml"])
def test_bundled_examples_load(name: str) -> None:
    config = load_config(ROOT / "config" / name)
    assert config.rotator.protocol == "gs232b"
    assert config.station.tle_files
    for path in config.station.tle_files:
        assert Path(path).is_absolute()
        assert Path(path).is_file()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[station]\nlat_deg = 91\n", "station.lat_deg: expected <= 90"),
        ("[station]\nlat_deg = 'north'\n", "station.lat_deg: expected float, got str"),
        ("[station]\nlatitude = 40\n", "station.latitude: unknown key"),
        ("[stations]\nlat_deg = 40\n", "stations: unknown key"),
        ("[tracking]\nrate_hz = 20\n", "tracking.rate_hz: expected <= 10"),
        ("[tracking]\nrate_hz = 1\n", "tracking.rate_hz: expected >= 5"),
        ("[tracking]\nkeyhole = 'spin'\n", "tracking.keyhole: invalid enum value 'spin'"),
        ("[rotator]\nmax_az_deg = 500\n", "rotator.max_az_deg: expected <= 450"),
        ("[rotator]\nprotocol = 'gs999'\n", "rotator.protocol: invalid enum value 'gs999'"),
        ("[rotator]\nmax_az_deg = 300\n", "rotator: azimuth range [0, 300] must span >= 360"),
        ("[rotator]\npark_el_deg = 120\n", "rotator: park position outside the limits"),
        ("[station]\nlat_deg = 40\nlat_deg = 41\n", "not valid TOML"),
        ("station = 3\n", "station: expected object, got int"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_track_cli_reports_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "[station]\nlat_deg = 123\n")
    assert main(["track", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"groundkey track: error: {path}: station.lat_deg: expected <= 90\n"


def test_track_cli_needs_a_rotator_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tle = ROOT / "config" / "tle" / "micius.tle"
    path = _write(tmp_path, f"[station]\ntle_files = ['{tle}']\n")
    assert main(["track", "--config", str(path), "--clock", "sim:2016-12-19T16:00Z"]) == 2
    assert "rotator.url: required" in capsys.readouterr().err


def test_real_cli_process_unknown_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[tracking]\nrate_hz = 5\nturbo = true\n")
    proc = subprocess.run(
        [GROUNDKEY, "track", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"groundkey track: error: {path}: tracking.turbo: unknown key\n"


def test_frame_bits_is_automatic_by_default_and_rejects_tiny_frames() -> None:
    from groundkey_daemon.distill_runner import ldpc_warm_frame_bits

    assert config_from_dict({}).distill.frame_bits == 0
    assert ldpc_warm_frame_bits(0) == (90_000, 360_000, 1_440_000)
    assert ldpc_warm_frame_bits(50_000) == (50_000,)
    with pytest.raises(ConfigError, match=r"frame_bits 10: 0 \(automatic\) or at least 64"):
        config_from_dict({"distill": {"frame_bits": 10}})
