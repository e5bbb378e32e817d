"""Emulated SPAD detector controller (SCPI, ID120-style) on a pty or TCP."""

from __future__ import annotations

from groundkey_sim.detector.device import SimDetector
from groundkey_sim.detector.server import PtyServer, serve_pty, serve_tcp

__all__ = ["PtyServer", "SimDetector", "serve_pty", "serve_tcp"]
