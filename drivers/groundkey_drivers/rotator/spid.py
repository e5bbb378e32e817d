"""SPID Rot2Prog and MD-01/02 (Rot2 mode) controllers."""

from __future__ import annotations

from typing import ClassVar

from groundkey_drivers.rotator.base import CodecRotator
from groundkey_protocol.devices.rot2prog import MD01Client, Rot2ProgClient
from groundkey_protocol.devices.rotator import AzEl


class Rot2Prog(CodecRotator):
    """Original Rot2Prog (600 baud); a set is not answered. The set encoding needs
    the controller's resolution (PH/PV), learnt from a status reply first."""

    protocol: ClassVar[str] = "rot2prog"
    codec_class = Rot2ProgClient
    default_baud: ClassVar[int] = 600

    async def _set_position(self, target: AzEl) -> None:
        codec = self._codec
        assert isinstance(codec, Rot2ProgClient)
        if codec.resolution is None:
            await self._get_position()
        await super()._set_position(target)


class MD01(Rot2Prog):
    """SPID MD-01/02 in Rot2 mode (460800 baud by default); answers a set with a
    position frame."""

    protocol: ClassVar[str] = "md01"
    codec_class = MD01Client
    default_baud: ClassVar[int] = 460800
