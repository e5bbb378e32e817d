"""Service config sections (keystore, delivery, telemetry/mqtt, metrics, link auth)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from groundkey_daemon.errors import ConfigError
from groundkey_daemon.service_config import (
    ServiceConfig,
    load_service_config,
    read_secret,
    resolve_credential,
)

SAMPLE = """
[station]
name = "xinglong"  # not ours: ignored here

[keystore]
state_dir = "/var/lib/groundkey"
key_size_bytes = 32

[telemetry]
station = "xinglong"

[telemetry.mqtt]
host = "broker.example.org"
port = 8883
username = "groundkey"
password_file = "mqtt.password"
backlog_messages = 500

[telemetry.mqtt.tls]
ca_file = "/etc/groundkey/ca.crt"

[metrics]
port = 9464
"""


def test_defaults_are_safe() -> None:
    cfg = ServiceConfig()
    assert cfg.metrics.host == "127.0.0.1"
    assert cfg.delivery.bind.startswith("tcp://127.0.0.1:")
    assert cfg.telemetry.zmq.bind.startswith("tcp://127.0.0.1:")
    assert cfg.telemetry.mqtt.tls is None


def test_sample_loads() -> None:
    cfg = load_service_config(tomllib.loads(SAMPLE))
    assert cfg.telemetry.station == "xinglong"
    assert cfg.telemetry.mqtt.port == 8883
    assert cfg.telemetry.mqtt.tls is not None
    assert cfg.telemetry.mqtt.tls.ca_file == "/etc/groundkey/ca.crt"
    assert cfg.telemetry.mqtt.backlog_messages == 500


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"metrics": {"port": 70000}}, "port"),
        ({"telemetry": {"station": "bad/name"}}, "station"),
        ({"telemetry": {"mqtt": {"backlog_messages": 0}}}, "backlog_messages"),
        ({"keystore": {"typo_field": 1}}, "typo_field"),
    ],
)
def test_bad_values_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_service_config(doc, source="station.toml")


def test_credentials_come_from_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt.password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_credential("mqtt.password") == creds / "mqtt.password"
    assert read_secret("mqtt.password") == b"s3cret"
    with pytest.raises(ConfigError) as info:
        read_secret(str(tmp_path / "absent"))
    assert "s3cret" not in str(info.value)
