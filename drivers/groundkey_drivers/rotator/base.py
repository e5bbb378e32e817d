"""The async Rotator interface. Public methods hold the policy (limits, logging,
timeouts, error context); concrete drivers fill the protected hooks."""

from __future__ import annotations

import abc
from types import TracebackType

from groundkey_drivers.errors import LimitError
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits

DEFAULT_LIMITS = RotatorLimits()
DEFAULT_PARK = AzEl(0.0, 90.0)


class Rotator(abc.ABC):
    """An az/el mount. Constructors do no I/O: ``async with rotator:`` opens it."""

    def __init__(
        self,
        *,
        name: str,
        limits: RotatorLimits = DEFAULT_LIMITS,
        park: AzEl = DEFAULT_PARK,
        slew_rate_deg_s: tuple[float, float] = (6.0, 6.0),
    ) -> None:
        self.name = name
        self.limits = limits
        self.park_position = park
        self.slew_rate_deg_s = slew_rate_deg_s  # (azimuth, elevation), for planning

    async def __aenter__(self) -> Rotator:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect to the device (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect (idempotent)."""

    async def position(self) -> AzEl:
        """The position the device reports now."""
        return await self._get_position()

    async def point(self, target: AzEl) -> None:
        """Command the mount to ``target``; refused before any byte is sent if out of limits."""
        if not self.limits.contains(target):
            raise LimitError(
                f"target az={target.az_deg:.2f} el={target.el_deg:.2f} outside limits "
                f"az [{self.limits.min_az_deg}, {self.limits.max_az_deg}] "
                f"el [{self.limits.min_el_deg}, {self.limits.max_el_deg}]",
                device=self.name,
                command="point",
            )
        await self._set_position(target)

    async def stop(self) -> None:
        await self._stop()

    async def park(self) -> None:
        await self.point(self.park_position)

    @abc.abstractmethod
    async def _get_position(self) -> AzEl: ...

    @abc.abstractmethod
    async def _set_position(self, target: AzEl) -> None: ...

    @abc.abstractmethod
    async def _stop(self) -> None: ...
