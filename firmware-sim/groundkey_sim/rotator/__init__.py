"""Emulated rotator controllers: a mount model plus the protocols' device codecs."""

from __future__ import annotations

from groundkey_sim.rotator.mount import SimRotator
from groundkey_sim.rotator.server import (
    PROTOCOLS,
    Fault,
    PtyRotatorServer,
    RotatorServer,
    TcpRotatorServer,
    device_codec_factory,
    serve_pty,
    serve_tcp,
)

__all__ = [
    "PROTOCOLS",
    "Fault",
    "PtyRotatorServer",
    "RotatorServer",
    "SimRotator",
    "TcpRotatorServer",
    "device_codec_factory",
    "serve_pty",
    "serve_tcp",
]
