"""Types shared by every rotator codec (client side and device side)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AzEl:
    """A pointing direction in degrees: azimuth from north through east, elevation."""

    az_deg: float
    el_deg: float


@dataclass(frozen=True, slots=True)
class RotatorLimits:
    """Travel limits of a mount. ``max_az_deg`` above 360 means an overlap region."""

    min_az_deg: float = 0.0
    max_az_deg: float = 360.0
    min_el_deg: float = 0.0
    max_el_deg: float = 90.0

    def contains(self, target: AzEl) -> bool:
        return (
            self.min_az_deg <= target.az_deg <= self.max_az_deg
            and self.min_el_deg <= target.el_deg <= self.max_el_deg
        )
