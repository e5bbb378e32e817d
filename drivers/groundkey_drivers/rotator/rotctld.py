"""A Hamlib ``rotctld`` over TCP (default port 4533), which fronts any Hamlib rotator."""

from __future__ import annotations

from typing import ClassVar

from groundkey_drivers.rotator.base import CodecRotator
from groundkey_protocol.devices.rotator import DumpState, Park, RotatorLimits, State
from groundkey_protocol.devices.rotctld import DEFAULT_PORT, RotctldClient


class Rotctld(CodecRotator):
    """After a timeout the connection is dropped and re-opened, so that a late reply
    can never be taken for the answer to the next command."""

    protocol: ClassVar[str] = "rotctld"
    codec_class = RotctldClient
    default_port: ClassVar[int | None] = DEFAULT_PORT
    reconnect_on_timeout: ClassVar[bool] = True

    async def backend_limits(self) -> RotatorLimits:
        """The limits the rotctld backend reports (``\\dump_state``)."""
        reply = await self._transact(DumpState(), "dump_state")
        assert isinstance(reply, State), reply
        return reply.limits

    async def park(self) -> None:
        """Hamlib's own park (``K``): the backend knows its park position."""
        await self._transact(Park(), "park")
