"""The satellite downlink: decoy-state BB84 source (Alice), channel physics and the
station's detectors, generating the time tags a station would see, chunk by chunk."""

from __future__ import annotations

from groundkey_sim.downlink.model import Downlink, TagChunk
from groundkey_sim.downlink.presets import PRESETS, LinkPreset, preset
from groundkey_sim.downlink.source import Alice

__all__ = ["PRESETS", "Alice", "Downlink", "LinkPreset", "TagChunk", "preset"]
