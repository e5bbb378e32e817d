"""EasyComm II controllers (serial 19200 8N1)."""

from __future__ import annotations

from typing import ClassVar

from groundkey_drivers.rotator.base import CodecRotator
from groundkey_protocol.devices.easycomm import EasyComm2Client


class EasyComm2(CodecRotator):
    protocol: ClassVar[str] = "easycomm2"
    codec_class = EasyComm2Client
    default_baud: ClassVar[int] = 19200
