"""Single-photon detector drivers with safety interlocks, chosen by URL."""

from __future__ import annotations

from groundkey_drivers.detector.base import (
    Detector,
    InterlockError,
    InterlockEvent,
    InterlockLimits,
    open_detector,
)

__all__ = ["Detector", "InterlockError", "InterlockEvent", "InterlockLimits", "open_detector"]
