"""Config sections of the service infrastructure (key store, delivery, telemetry, metrics).

These msgspec Structs are meant to be merged into the top-level ``Config`` as
``[keystore]``, ``[delivery]``, ``[telemetry]`` (with ``[telemetry.zmq]``,
``[telemetry.mqtt]``, ``[telemetry.mqtt.tls]``), ``[metrics]`` and ``[link_auth]``.
Secrets are never inline: they name a file, and a relative name is looked up in
systemd's ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``) first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec

from groundkey_daemon.errors import ConfigError

__all__ = [
    "DeliveryConfig",
    "KeystoreConfig",
    "LinkAuthConfig",
    "MetricsConfig",
    "MqttConfig",
    "ServiceConfig",
    "TelemetryConfig",
    "TlsConfig",
    "ZmqPubConfig",
    "load_service_config",
    "read_secret",
    "resolve_credential",
]

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class KeystoreConfig(_Section):
    state_dir: str = "/var/lib/groundkey"
    key_size_bytes: Count = 32
    reservation_ttl_s: Positive = 86400.0


class DeliveryConfig(_Section):
    enabled: bool = True
    bind: str = "tcp://127.0.0.1:5560"
    server_secret_key: str = "curve-server.key_secret"
    allow_dir: str = "/etc/groundkey/consumers"
    max_request_bytes: Count = 1 << 20


class TlsConfig(_Section):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class MqttConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password_file: str | None = None
    client_id: str | None = None
    keepalive_s: Count = 30
    publish_timeout_s: Positive = 10.0
    backlog_messages: Count = 10000
    reconnect_min_s: Positive = 0.5
    reconnect_max_s: Positive = 30.0
    tls: TlsConfig | None = None


class ZmqPubConfig(_Section):
    enabled: bool = True
    bind: str = "tcp://127.0.0.1:5561"
    sndhwm: Count = 10000


class TelemetryConfig(_Section):
    station: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")] = "station"
    zmq: ZmqPubConfig = msgspec.field(default_factory=ZmqPubConfig)
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9464
    loop_lag_interval_s: Positive = 0.25
    loop_lag_window: Count = 240


class LinkAuthConfig(_Section):
    link_key: str = "link.key"
    scheme: str = "hmac-sha256"


class ServiceConfig(_Section):
    keystore: KeystoreConfig = msgspec.field(default_factory=KeystoreConfig)
    delivery: DeliveryConfig = msgspec.field(default_factory=DeliveryConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    link_auth: LinkAuthConfig = msgspec.field(default_factory=LinkAuthConfig)


def load_service_config(data: dict[str, Any], *, source: str = "config") -> ServiceConfig:
    """Validate the service sections of a parsed TOML document (other keys ignored)."""
    mine = {k: v for k, v in data.items() if k in ServiceConfig.__struct_fields__}
    try:
        return msgspec.convert(mine, ServiceConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def resolve_credential(name: str) -> Path:
    """Path of a secret: absolute as given, else under ``$CREDENTIALS_DIRECTORY`` or cwd."""
    path = Path(name)
    if path.is_absolute():
        return path
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / name).exists():
        return Path(creds) / name
    return path


def read_secret(name: str) -> bytes:
    """Read a secret file (trailing newline stripped); the error names the file only."""
    path = resolve_credential(name)
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read secret {path}: {exc.strerror}") from None
