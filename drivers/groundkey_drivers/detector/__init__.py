"""Single-photon detector drivers with safety interlocks, chosen by URL."""

from __future__ import annotations

from typing import Any

from groundkey_drivers.detector.base import (
    Detector,
    InterlockError,
    InterlockEvent,
    InterlockLimits,
)
from groundkey_drivers.detector.scpi import ScpiDetector

__all__ = [
    "Detector",
    "InterlockError",
    "InterlockEvent",
    "InterlockLimits",
    "ScpiDetector",
    "open_detector",
]


def open_detector(url: str, **options: Any) -> Detector:
    """An ID120-style SCPI detector on ``serial://...``, a bare ``/dev/...`` or ``tcp://``."""
    return ScpiDetector(url, **options)
