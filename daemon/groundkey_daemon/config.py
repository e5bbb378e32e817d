"""The daemon's TOML config: one top-level :class:`Config`, one Struct per section.

Sections: ``[station]``, ``[rotator]``, ``[tracking]`` (pointing), the service
infrastructure (:mod:`.service_config`: ``[keystore]``, ``[delivery]``,
``[telemetry]``, ``[metrics]``, ``[link_auth]``) and the service core's
``[service]``, ``[link]``, ``[acquisition]`` and ``[distill]``; every field has a
default. :func:`load_config` validates strictly (unknown keys, ranges, the clock
spec; with ``check_paths`` also TLE files, the state directory and the secrets
the enabled components need) and raises :class:`ConfigError` naming the file
and the field path, e.g. ``station.toml: link.timeout_s: expected > 0``
(:func:`describe_validation_error` formats msgspec's errors that way).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

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
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.orbit import parse_tle

__all__ = [
    "AcquisitionConfig",
    "Config",
    "DistillMethod",
    "DistillSection",
    "LinkConfig",
    "RotatorConfig",
    "ServiceSection",
    "StationConfig",
    "TrackingConfig",
    "config_from_dict",
    "describe_validation_error",
    "load_config",
]

RotatorProtocol = Literal["gs232a", "gs232b", "rot2prog", "md01", "easycomm2", "rotctld"]
KeyholeStrategy = Literal["auto", "flip", "lead", "none"]
DistillMethod = Literal["cascade-yan", "cascade-biconf", "cascade-original", "ldpc", "ldpc-blind"]


def _range(low: float, high: float) -> msgspec.Meta:
    return msgspec.Meta(ge=low, le=high)


class StationConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[station]``: where we are, what we track, and where we never look."""

    name: str = "xinglong"
    lat_deg: Annotated[float, _range(-90.0, 90.0)] = 40.3959
    lon_deg: Annotated[float, _range(-180.0, 360.0)] = 117.5775
    alt_m: Annotated[float, _range(-500.0, 10_000.0)] = 893.0
    min_el_deg: Annotated[float, _range(0.0, 80.0)] = 10.0
    #: half-angle of the cone around the Sun the telescope never enters
    sun_avoid_deg: Annotated[float, _range(0.0, 90.0)] = 20.0
    #: TLE files, relative to the config file's directory
    tle_files: list[str] = msgspec.field(default_factory=list)
    #: satellite to track: a name or NORAD number in the TLE files ("" = the first)
    satellite: str = ""


class RotatorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[rotator]``: the mount, chosen by protocol name and transport URL."""

    protocol: RotatorProtocol = "gs232b"
    url: str = ""
    name: str = "mount"
    min_az_deg: Annotated[float, _range(-180.0, 360.0)] = 0.0
    max_az_deg: Annotated[float, _range(0.0, 450.0)] = 450.0
    min_el_deg: Annotated[float, _range(-10.0, 90.0)] = 0.0
    max_el_deg: Annotated[float, _range(0.0, 180.0)] = 90.0
    park_az_deg: Annotated[float, _range(-180.0, 450.0)] = 0.0
    park_el_deg: Annotated[float, _range(-10.0, 180.0)] = 90.0
    slew_rate_az_deg_s: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 6.0
    slew_rate_el_deg_s: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 6.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0.0, le=60.0)] = 2.0

    def __post_init__(self) -> None:
        if self.max_az_deg - self.min_az_deg < 360.0:
            raise ValueError(
                f"azimuth range [{self.min_az_deg:g}, {self.max_az_deg:g}] must span >= 360"
            )
        if self.max_az_deg - self.min_az_deg > 540.0:
            raise ValueError(
                f"azimuth range [{self.min_az_deg:g}, {self.max_az_deg:g}] spans more than 540"
            )
        if self.max_el_deg <= self.min_el_deg:
            raise ValueError("max_el_deg must be above min_el_deg")
        if not (
            self.min_az_deg <= self.park_az_deg <= self.max_az_deg
            and self.min_el_deg <= self.park_el_deg <= self.max_el_deg
        ):
            raise ValueError("park position outside the limits")

    def limits(self) -> RotatorLimits:
        return RotatorLimits(
            min_az_deg=self.min_az_deg,
            max_az_deg=self.max_az_deg,
            min_el_deg=self.min_el_deg,
            max_el_deg=self.max_el_deg,
        )

    def park(self) -> AzEl:
        return AzEl(self.park_az_deg, self.park_el_deg)

    def slew_rate_deg_s(self) -> tuple[float, float]:
        return (self.slew_rate_az_deg_s, self.slew_rate_el_deg_s)


class TrackingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[tracking]``: the pointing loop."""

    rate_hz: Annotated[float, _range(5.0, 10.0)] = 5.0
    #: extra lead-ahead on top of the measured command latency and half a cycle
    lead_s: Annotated[float, _range(0.0, 5.0)] = 0.0
    #: how long before AOS the mount starts moving to the AOS azimuth (at least)
    preposition_s: Annotated[float, _range(0.0, 3600.0)] = 120.0
    #: pointing error (reported vs satellite) that still counts as on target
    threshold_deg: Annotated[float, msgspec.Meta(gt=0.0, le=20.0)] = 1.0
    #: high-pass strategy: flip (el up to 180), lead (start the azimuth swing early)
    keyhole: KeyholeStrategy = "auto"
    #: passes with a higher maximum elevation get the keyhole strategy
    keyhole_el_deg: Annotated[float, _range(60.0, 90.0)] = 78.0
    #: cap on commands per wall second, for accelerated simulated clocks
    max_wall_rate_hz: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 20.0


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
    #: Wegman-Carter tags over each block's transcript, padded with earlier passes'
    #: stored key (HMAC-only while there is none); False: pre-shared key only
    transcript_auth: bool = True


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
    #: detections per key block (the pass is cut into blocks of at least this many; the
    #: tail of a pass joins the last block). The finite-key bound leaves no key below
    #: roughly 0.8 M detections at Micius-like QBER; a pass brings ~4 M.
    min_block_detections: Annotated[int, msgspec.Meta(ge=1000)] = 2_000_000
    #: only acquire while the satellite is above this elevation
    min_el_deg: Annotated[float, msgspec.Meta(ge=0, le=90)] = 10.0


class DistillSection(_Section, frozen=True):
    """``[distill]``: Bob's key distillation (both ends must agree on these)."""

    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    #: key bits per reconciliation frame; 0: chosen from the QBER estimate (LDPC: 3.6·10^5
    #: up to 2.5 %, 9·10^4 above; Cascade: 10^5), else at least 64
    frame_bits: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: reconciliation; ldpc-blind (one-way, few round trips) suits satellite passes,
    #: the Cascades need hundreds of round trips. The satellite follows (BlockOpen).
    method: DistillMethod = "ldpc-blind"
    #: privacy amplification family: toeplitz ((I | T), exact FFT) or mas (GMP)
    amplify: str = "toeplitz"
    eps_sec: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 1e-9
    eps_cor: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 1e-15
    max_qber: Annotated[float, msgspec.Meta(gt=0, lt=0.5)] = 0.11
    sample_fraction: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    #: a block that has not finished after this long is aborted
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 600.0

    def __post_init__(self) -> None:
        if 0 < self.frame_bits < 64:
            raise ValueError(f"frame_bits {self.frame_bits}: 0 (automatic) or at least 64")


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The whole config file: one field per section (every one optional)."""

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


_BOUND = re.compile(r"^Expected `\w+` (?P<op>[<>]=?) (?P<value>\S+)$")


def describe_validation_error(error: msgspec.ValidationError) -> str:
    """``Expected `float` <= 90.0 - at `$.station.lat_deg``` -> ``station.lat_deg: ...``."""
    text = str(error)
    message, _, where = text.rpartition(" - at ")
    if not message:
        message, where = text, ""
    path = where.strip("`").removeprefix("$").removeprefix(".") or "(top level)"
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        field = unknown.group(1)
        return f"{path + '.' + field if where else field}: unknown key"
    bound = _BOUND.match(message)
    if bound:
        value = float(bound.group("value"))
        message = f"expected {bound.group('op')} {value:g}"
    else:
        message = message.replace("`", "")
        message = message[:1].lower() + message[1:]
    return f"{path}: {message}"


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Validate parsed TOML (types, ranges, unknown keys); no file-system checks."""
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None
    try:
        config.clock()
    except ProtocolError as exc:
        raise ConfigError(f"{source}: service.clock: {exc}") from None
    if config.service.restart_backoff_max_s < config.service.restart_backoff_s:
        raise ConfigError(f"{source}: service.restart_backoff_max_s: below restart_backoff_s")
    return config


def _absolute(base: Path, name: str) -> str:
    return str((base / name).resolve()) if name else name


def _check_paths(config: Config, source: str) -> None:
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


def load_config(path: str | Path, *, check_paths: bool = False) -> Config:
    """Read, validate and resolve a config file; raises ConfigError naming the field.

    Relative paths become absolute (against the file's directory). With
    ``check_paths`` (``groundkey run`` and ``config check``) TLE files, the state
    directory and the secrets the enabled components need are checked too.
    """
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
    config = config_from_dict(data, source=source)
    base = file.resolve().parent
    r = msgspec.structs.replace
    config = r(
        config,
        station=r(config.station, tle_files=[_absolute(base, n) for n in config.station.tle_files]),
        keystore=r(config.keystore, state_dir=_absolute(base, config.keystore.state_dir)),
        acquisition=r(config.acquisition, spool_dir=_absolute(base, config.acquisition.spool_dir)),
        delivery=r(config.delivery, allow_dir=_absolute(base, config.delivery.allow_dir)),
    )
    if check_paths:
        _check_paths(config, source)
    return config
