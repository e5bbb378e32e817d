"""Embedded defaults: the Xinglong station and a real Micius TLE, so that
``make demo`` and the tests need no files and no network."""

from __future__ import annotations

import datetime as dt

from groundkey_protocol.orbit import Station

__all__ = ["MICIUS_TLE", "TLE_EPOCH", "XINGLONG", "XINGLONG_NAME"]

#: Micius (QUESS, NORAD 41731), epoch 2016-12-18 21:38:11 UTC (Space-Track/CelesTrak).
MICIUS_TLE = """\
MICIUS (QUESS)
1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993
2 41731  97.3699 267.4500 0013200 178.5836 246.0824 15.23915303 19063
"""

#: Demos and tests start near the element set's epoch, never at "now".
TLE_EPOCH = dt.datetime(2016, 12, 18, 21, 38, 11, tzinfo=dt.UTC)

#: Xinglong Observatory 1.0 m telescope (Liao et al., Nature 549, 43 (2017)).
XINGLONG_NAME = "xinglong"
XINGLONG = Station(lat_deg=40.3959, lon_deg=117.5775, alt_m=893.0)
