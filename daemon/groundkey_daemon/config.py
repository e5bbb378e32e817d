"""The daemon's TOML config: one msgspec Struct per section, every field defaulted.

``load_config(path)`` validates strictly (unknown keys are errors, numbers are
range-checked) and raises :class:`ConfigError` naming the file and the field path,
e.g. ``station.toml: station.lat_deg: expected <= 90``. Sections other engineers
need are added as one more field of :class:`Config`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from groundkey_daemon.errors import ConfigError
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits

__all__ = [
    "Config",
    "RotatorConfig",
    "StationConfig",
    "TrackingConfig",
    "config_from_dict",
    "describe_validation_error",
    "load_config",
]

RotatorProtocol = Literal["gs232a", "gs232b", "rot2prog", "md01", "easycomm2", "rotctld"]
KeyholeStrategy = Literal["auto", "flip", "lead", "none"]


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


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The whole config file: one field per section."""

    station: StationConfig = msgspec.field(default_factory=StationConfig)
    rotator: RotatorConfig = msgspec.field(default_factory=RotatorConfig)
    tracking: TrackingConfig = msgspec.field(default_factory=TrackingConfig)


_BOUND = re.compile(r"^Expected `\w+` (?P<op>[<>]=?) (?P<value>\S+)$")


def _describe(error: msgspec.ValidationError) -> str:
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


#: Public name of the ValidationError -> "field.path: message" formatter.
describe_validation_error = _describe


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Validate already-parsed TOML data; errors name ``source`` and the field path."""
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config; relative TLE paths become absolute."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    config = config_from_dict(data, source=str(file))
    base = file.resolve().parent
    files = [str((base / name).resolve()) for name in config.station.tle_files]
    return msgspec.structs.replace(
        config, station=msgspec.structs.replace(config.station, tle_files=files)
    )
