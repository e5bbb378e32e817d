"""Yaesu GS-232A and GS-232B controllers (serial 9600 8N1, or TCP to a serial server)."""

from __future__ import annotations

from typing import ClassVar

from groundkey_drivers.rotator.base import CodecRotator
from groundkey_protocol.devices.gs232 import GS232AClient, GS232BClient


class GS232A(CodecRotator):
    protocol: ClassVar[str] = "gs232a"
    codec_class = GS232AClient


class GS232B(CodecRotator):
    protocol: ClassVar[str] = "gs232b"
    codec_class = GS232BClient
