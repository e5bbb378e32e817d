"""Emulated USB time tagger (GKTT) served over usbnet (USB forwarded over TCP)."""

from __future__ import annotations

from groundkey_sim.timetagger.device import SimTimeTagger
from groundkey_sim.timetagger.server import UsbnetServer

__all__ = ["SimTimeTagger", "UsbnetServer"]
