"""Rotator drivers by protocol name; the ``groundkey.rotators`` entry-point group can
add more (``name = "package.module:Class"``)."""

from __future__ import annotations

import importlib
import importlib.metadata

from groundkey_drivers.errors import TransportURLError
from groundkey_drivers.rotator.base import DEFAULT_LIMITS, DEFAULT_PARK, CodecRotator, Rotator
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits

ROTATOR_DRIVERS: dict[str, str] = {
    "gs232a": "groundkey_drivers.rotator.gs232:GS232A",
    "gs232b": "groundkey_drivers.rotator.gs232:GS232B",
    "rot2prog": "groundkey_drivers.rotator.spid:Rot2Prog",
    "md01": "groundkey_drivers.rotator.spid:MD01",
    "easycomm2": "groundkey_drivers.rotator.easycomm:EasyComm2",
    "rotctld": "groundkey_drivers.rotator.rotctld:Rotctld",
}
ENTRY_POINT_GROUP = "groundkey.rotators"


def available_protocols() -> dict[str, str]:
    found = dict(ROTATOR_DRIVERS)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def driver_class(protocol: str) -> type[CodecRotator]:
    """The driver class for ``protocol``; ValueError naming the known ones."""
    drivers = available_protocols()
    try:
        target = drivers[protocol]
    except KeyError:
        raise ValueError(
            f"unknown rotator protocol {protocol!r}; known: {', '.join(sorted(drivers))}"
        ) from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, CodecRotator)):
        raise TypeError(f"{target} is not a CodecRotator")
    return cls


def create_rotator(
    protocol: str,
    url: str,
    *,
    name: str | None = None,
    limits: RotatorLimits = DEFAULT_LIMITS,
    park: AzEl = DEFAULT_PARK,
    slew_rate_deg_s: tuple[float, float] = (6.0, 6.0),
    timeout_s: float = 2.0,
) -> Rotator:
    """A driver for ``protocol`` at ``url`` (not opened: ``async with`` it)."""
    cls = driver_class(protocol)
    return cls(
        url,
        name=name,
        limits=limits,
        park=park,
        slew_rate_deg_s=slew_rate_deg_s,
        timeout_s=timeout_s,
    )


__all__ = ["ROTATOR_DRIVERS", "TransportURLError", "create_rotator", "driver_class"]
