"""The one top-level Config: service sections, [distill] method, the shipped station.toml
(every section documented, passes `groundkey config check` when installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from groundkey_daemon.config import (
    Config,
    config_from_dict,
    describe_validation_error,
    load_config,
)
from groundkey_daemon.distill_runner import distill_config, wire_params
from groundkey_daemon.errors import ConfigError
from groundkey_protocol.qkd.ldpc import DEFAULT_PASS_METHOD

ROOT = Path(__file__).parents[2]
STATION = ROOT / "config" / "station.toml"
GROUNDKEY = str(Path(sys.executable).parent / "groundkey")


def test_station_toml_documents_every_section_and_field() -> None:
    data = tomllib.loads(STATION.read_text())
    assert set(data) == set(Config.__struct_fields__)
    for section in Config.__struct_fields__:
        struct = type(getattr(Config(), section))
        for name in struct.__struct_fields__:
            value = getattr(Config(), section)
            if isinstance(getattr(value, name), msgspec.Struct) or name in {
                "username",
                "password_file",
                "client_id",
                "tls",
            }:
                continue  # sub-tables and optional secrets are shown commented out
            assert name in data[section], f"{section}.{name} not in station.toml"


def test_installed_station_toml_passes_config_check(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "tle").mkdir(parents=True)
    (etc / "consumers").mkdir()
    shutil.copy(STATION, etc / "station.toml")
    shutil.copy(ROOT / "config" / "tle" / "micius.tle", etc / "tle")
    creds = tmp_path / "credentials"  # what systemd's LoadCredential= provides
    creds.mkdir()
    (creds / "link.key").write_text("00" * 32 + "\n")
    (creds / "curve-server.key_secret").write_text("secret\n")
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(creds)}
    ok = subprocess.run(
        [GROUNDKEY, "config", "check", str(etc / "station.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert "distill ldpc-blind" in ok.stdout
    assert "Wegman-Carter" in ok.stdout
    (creds / "link.key").unlink()
    bad = subprocess.run(
        [GROUNDKEY, "config", "check", str(etc / "station.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert bad.returncode == 2
    assert "link_auth.link_key" in bad.stderr


def test_distill_method_default_is_the_satellite_pass_default() -> None:
    config = Config()
    assert config.distill.method == DEFAULT_PASS_METHOD == "ldpc-blind"
    assert config.link.transcript_auth
    params = msgspec.structs.asdict(
        config_from_dict({"distill": {"method": "cascade-yan"}}).distill
    )
    assert wire_params(params)["reconcile"] == "cascade-yan"
    assert "workers" not in wire_params(params)  # only what the satellite needs
    assert distill_config(params).reconcile == "cascade-yan"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"distill": {"method": "turbo"}}, "distill.method: invalid enum value 'turbo'"),
        ({"distill": {"reconcile": "ldpc"}}, "distill.reconcile: unknown key"),
        ({"link": {"transcript_auth": "yes"}}, "link.transcript_auth: expected bool"),
        ({"link": {"timeout_s": 0}}, "link.timeout_s: expected > 0"),
        ({"service": {"clock": "sim:nonsense"}}, "service.clock:"),
        ({"keystore": {"key_size_bytes": 0}}, "keystore.key_size_bytes: expected >= 1"),
    ],
)
def test_service_section_errors_name_the_field(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="station.toml")
    assert str(info.value).startswith("station.toml: ")
    assert expected in str(info.value)


def test_describe_validation_error_is_public() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({"station": {"lat_deg": 91}}, Config)
    assert describe_validation_error(info.value) == "station.lat_deg: expected <= 90"


def test_compatibility_names_are_the_config() -> None:
    from groundkey_daemon import daemon_config

    assert daemon_config.DaemonConfig is Config
    assert daemon_config.daemon_config_from_dict is config_from_dict


def test_load_config_checks_paths_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text("[station]\ntle_files = ['missing.tle']\n")
    assert load_config(path).station.tle_files == [str(tmp_path / "missing.tle")]
    with pytest.raises(ConfigError, match=r"station.tle_files\[0\]: cannot read"):
        load_config(path, check_paths=True)
