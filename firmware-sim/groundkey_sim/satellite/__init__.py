"""The satellite's payload computer on the classical link: Alice's side of key
distillation, answering from the downlink model's (counter-based) Alice record."""

from __future__ import annotations

from groundkey_sim.satellite.peer import AliceRecord, SatellitePeer
from groundkey_sim.satellite.server import SatelliteServer

__all__ = ["AliceRecord", "SatellitePeer", "SatelliteServer"]
