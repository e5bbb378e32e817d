"""The async Detector interface. The public methods hold the safety policy:

- bias is switched on only when the measured temperature is within
  ``settle_tolerance_c`` of the set point and the controller reports no error;
- :meth:`Detector.watch` polls the count rate every ``poll_s``; a rate above
  ``saturation_cps`` (bright light, latching) drops the bias at once and reports an
  :class:`InterlockEvent` (log, :attr:`Detector.events`, the ``on_event`` callback).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from groundkey_drivers.device import AsyncDevice
from groundkey_drivers.errors import DeviceRejected

log = logging.getLogger(__name__)


class InterlockError(DeviceRejected):
    """A request refused by a safety interlock; nothing unsafe was sent."""


@dataclass(frozen=True, slots=True)
class InterlockLimits:
    settle_tolerance_c: float = 0.5
    saturation_cps: float = 15e6
    poll_s: float = 0.2


@dataclass(frozen=True, slots=True)
class InterlockEvent:
    kind: str  # "saturation"
    detector: str
    count_rate_hz: float
    time_s: float


class Detector(AsyncDevice):
    """A SPAD/SNSPD controller. Constructors do no I/O; ``async with`` opens."""

    def __init__(
        self,
        *,
        name: str,
        limits: InterlockLimits | None = None,
        on_event: Callable[[InterlockEvent], None] | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or InterlockLimits()
        self.on_event = on_event
        self.events: list[InterlockEvent] = []

    # ----------------------------------------------------------------- policy

    async def arm(self) -> None:
        """Bias on, if the temperature has settled and the controller reports no error."""
        temp_c = await self.temperature_c()
        set_c = await self._get_set_point_c()
        if abs(temp_c - set_c) > self.limits.settle_tolerance_c:
            raise InterlockError(
                f"temperature {temp_c:.2f} C not settled at {set_c:.2f} C",
                device=self.name,
                command="arm",
            )
        status = await self._error_status()
        if status:
            raise InterlockError(f"controller error status {status}", device=self.name)
        await self._set_bias(True)
        log.info("%s: bias on at %.2f C", self.name, temp_c)

    async def disarm(self) -> None:
        await self._set_bias(False)

    async def wait_settled(self, timeout_s: float = 60.0) -> float:
        """Poll until the temperature is within tolerance; returns it."""
        deadline = time.monotonic() + timeout_s
        set_c = await self._get_set_point_c()
        while True:
            temp_c = await self.temperature_c()
            if abs(temp_c - set_c) <= self.limits.settle_tolerance_c:
                return temp_c
            if time.monotonic() > deadline:
                raise InterlockError(f"not settled after {timeout_s} s", device=self.name)
            await asyncio.sleep(self.limits.poll_s)

    async def check(self) -> float:
        """One interlock poll: read the count rate, drop bias above saturation."""
        rate = await self.count_rate_hz()
        if rate > self.limits.saturation_cps:
            await self._set_bias(False)
            event = InterlockEvent("saturation", self.name, rate, time.time())
            self.events.append(event)
            log.error(
                "%s: count rate %.3g Hz above %.3g: bias dropped",
                self.name,
                rate,
                self.limits.saturation_cps,
            )
            if self.on_event is not None:
                self.on_event(event)
        return rate

    async def watch(self) -> None:
        """Run :meth:`check` every ``poll_s`` until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self.limits.poll_s)

    # ----------------------------------------------------------------- plain settings

    async def identify(self) -> str:
        return await self._identify()

    async def temperature_c(self) -> float:
        return await self._get_temperature_c()

    async def set_temperature_c(self, set_point_c: float) -> None:
        await self._set_set_point_c(set_point_c)

    async def count_rate_hz(self) -> float:
        return await self._get_count_rate_hz()

    async def bias_on(self) -> bool:
        """Whether the controller reports bias applied."""
        return await self._get_bias()

    async def configure(self, **settings: Any) -> None:
        """bias_voltage_v, threshold_v, dead_time_ns (validated by the codec)."""
        await self._configure(settings)

    # ----------------------------------------------------------------- hooks

    @abc.abstractmethod
    async def _identify(self) -> str: ...

    @abc.abstractmethod
    async def _set_bias(self, on: bool) -> None: ...

    @abc.abstractmethod
    async def _get_bias(self) -> bool: ...

    @abc.abstractmethod
    async def _error_status(self) -> int: ...

    @abc.abstractmethod
    async def _get_temperature_c(self) -> float: ...

    @abc.abstractmethod
    async def _get_set_point_c(self) -> float: ...

    @abc.abstractmethod
    async def _set_set_point_c(self, value: float) -> None: ...

    @abc.abstractmethod
    async def _get_count_rate_hz(self) -> float: ...

    @abc.abstractmethod
    async def _configure(self, settings: dict[str, Any]) -> None: ...
