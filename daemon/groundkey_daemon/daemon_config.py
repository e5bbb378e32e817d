"""The whole daemon config: the tracking sections (:mod:`.config`), the service
sections (:mod:`.service_config`) and the service core's own ``[service]``,
``[link]``, ``[acquisition]`` and ``[distill]`` sections, in one strict Struct.

:func:`load_daemon_config` validates up front: unknown keys, ranges, the clock
spec, TLE files (they must exist and parse), the state directory, and the secret
files the enabled components need. Every error is a :class:`ConfigError` naming
the file and the field, e.g. ``station.toml: link.timeout_s: expected > 0``.
Relative paths are resolved against the config file's directory (secrets: against
``$CREDENTIALS_DIRECTORY`` first, see :func:`service_config.resolve_credential`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from groundkey_daemon.config import (
    RotatorConfig,
    StationConfig,
    TrackingConfig,
    _describe,
)
from groundkey_daemon.errors import ConfigError
from groundkey_daemon.service_config import (
    DeliveryConfig,
    KeystoreConfig,
    LinkAuthConfig,
    MetricsConfig,
    TelemetryConfig,
    resolve_credential,
)
from groundkey_protocol.clock import Clock
from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.orbit import parse_tle

__all__ = [
    "AcquisitionConfig",
    "DaemonConfig",
    "DistillSection",
    "LinkConfig",
    "ServiceSection",
    "daemon_config_from_dict",
    "load_daemon_config",
]

Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    pass


class ServiceSection(_Section, frozen=True):
    """``[service]``: the supervisor."""

    #: "wall" in service; "sim:EPOCH,speed=N" for demos and bench tests
    clock: str = "wall"
    #: restarts of a failing component before the daemon gives up on it
    max_restarts: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 5
    restart_backoff_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    restart_backoff_max_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    #: how long SIGTERM waits for the current block before checkpointing it
    shutdown_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 60.0
    status_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    #: hours of passes to plan ahead
    plan_hours: Annotated[float, msgspec.Meta(gt=0, le=240)] = 24.0
    #: run passes (False: schedule and publish only)
    passes: bool = True
    #: stop after this many passes (0 = never); demos and tests use 1
    max_passes: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: skip passes whose LOS is already past this many seconds ago at start
    skip_started: bool = False


class LinkConfig(_Section, frozen=True):
    """``[link]``: the classical channel to the satellite (ZeroMQ DEALER -> ROUTER)."""

    endpoint: str = ""
    transport: Literal["zmq"] = "zmq"
    local: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+$")] = "ground"
    peer: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+$")] = "satellite"
    #: a reply slower than this aborts the block
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    replay_window: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64


class AcquisitionConfig(_Section, frozen=True):
    """``[acquisition]``: detectors, time tagger and the durable raw-chunk spool."""

    tagger_url: str = ""
    detector_url: str = ""
    #: "" = ``<state_dir>/spool``
    spool_dir: str = ""
    queue_chunks: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    sync_channel: Annotated[int, msgspec.Meta(ge=1, le=255)] = 5
    slot_period_ps: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    sync_divider: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    #: the station's time-of-flight prediction: "tle" (the pass geometry) or a fixed
    #: fiber delay for bench links
    tof_model: Literal["tle", "fixed"] = "tle"
    fixed_tof_ps: Annotated[int, msgspec.Meta(ge=0)] = 5_000_000
    #: detections per key block (the pass is cut into blocks of at least this many)
    min_block_detections: Annotated[int, msgspec.Meta(ge=1000)] = 200_000
    #: only acquire while the satellite is above this elevation
    min_el_deg: Annotated[float, msgspec.Meta(ge=0, le=90)] = 10.0


class DistillSection(_Section, frozen=True):
    """``[distill]``: Bob's key distillation (both ends must agree on these)."""

    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    frame_bits: Annotated[int, msgspec.Meta(ge=64)] = 100_000
    reconcile: str = "cascade-yan"
    amplify: str = "toeplitz"
    eps_sec: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 1e-9
    eps_cor: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 1e-15
    max_qber: Annotated[float, msgspec.Meta(gt=0, lt=0.5)] = 0.11
    sample_fraction: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    #: a block that has not finished after this long is aborted
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 600.0


class DaemonConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Every section of ``groundkey run``'s config file."""

    station: StationConfig = msgspec.field(default_factory=StationConfig)
    rotator: RotatorConfig = msgspec.field(default_factory=RotatorConfig)
    tracking: TrackingConfig = msgspec.field(default_factory=TrackingConfig)
    keystore: KeystoreConfig = msgspec.field(default_factory=KeystoreConfig)
    delivery: DeliveryConfig = msgspec.field(default_factory=DeliveryConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    link_auth: LinkAuthConfig = msgspec.field(default_factory=LinkAuthConfig)
    service: ServiceSection = msgspec.field(default_factory=ServiceSection)
    link: LinkConfig = msgspec.field(default_factory=LinkConfig)
    acquisition: AcquisitionConfig = msgspec.field(default_factory=AcquisitionConfig)
    distill: DistillSection = msgspec.field(default_factory=DistillSection)

    @property
    def spool_dir(self) -> Path:
        return Path(self.acquisition.spool_dir or Path(self.keystore.state_dir) / "spool")

    def clock(self) -> Clock:
        return Clock.from_spec(self.service.clock)


def daemon_config_from_dict(data: dict[str, Any], *, source: str = "config") -> DaemonConfig:
    """Validate parsed TOML (types, ranges, unknown keys); no file-system checks."""
    try:
        config = msgspec.convert(data, DaemonConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    try:
        config.clock()
    except ProtocolError as exc:
        raise ConfigError(f"{source}: service.clock: {exc}") from None
    if config.service.restart_backoff_max_s < config.service.restart_backoff_s:
        raise ConfigError(f"{source}: service.restart_backoff_max_s: below restart_backoff_s")
    return config


def _absolute(base: Path, name: str) -> str:
    return str((base / name).resolve()) if name else name


def _check_paths(config: DaemonConfig, source: str) -> None:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {field}: {problem}")

    for i, name in enumerate(config.station.tle_files):
        try:
            text = Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"station.tle_files[{i}]", f"cannot read {name}: {exc.strerror}") from None
        try:
            parse_tle(text)
        except ProtocolError as exc:
            raise fail(f"station.tle_files[{i}]", f"{name}: {exc}") from None
    state = Path(config.keystore.state_dir)
    if state.exists() and not state.is_dir():
        raise fail("keystore.state_dir", f"{state} is not a directory")
    if not state.exists() and not state.parent.is_dir():
        raise fail("keystore.state_dir", f"parent of {state} does not exist")
    if state.is_dir() and not os.access(state, os.W_OK | os.X_OK):
        raise fail("keystore.state_dir", f"{state} is not writable")
    if config.link.endpoint:
        key = resolve_credential(config.link_auth.link_key)
        if not key.is_file():
            raise fail("link_auth.link_key", f"{key} does not exist")
        if config.link_auth.scheme != "hmac-sha256":
            raise fail("link_auth.scheme", f"unknown scheme {config.link_auth.scheme!r}")
    if config.delivery.enabled:
        secret = resolve_credential(config.delivery.server_secret_key)
        if not secret.is_file():
            raise fail("delivery.server_secret_key", f"{secret} does not exist")
        if not Path(config.delivery.allow_dir).is_dir():
            raise fail("delivery.allow_dir", f"{config.delivery.allow_dir} is not a directory")
    if config.service.passes and config.station.tle_files == []:
        raise fail("station.tle_files", "no TLE files (needed to schedule passes)")


def load_daemon_config(path: str | Path) -> DaemonConfig:
    """Read, validate and resolve a config file; raises ConfigError naming the field."""
    file = Path(path)
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    config = daemon_config_from_dict(data, source=source)
    base = file.resolve().parent
    r = msgspec.structs.replace
    config = r(
        config,
        station=r(config.station, tle_files=[_absolute(base, n) for n in config.station.tle_files]),
        keystore=r(config.keystore, state_dir=_absolute(base, config.keystore.state_dir)),
        acquisition=r(config.acquisition, spool_dir=_absolute(base, config.acquisition.spool_dir)),
        delivery=r(config.delivery, allow_dir=_absolute(base, config.delivery.allow_dir)),
    )
    _check_paths(config, source)
    return config
