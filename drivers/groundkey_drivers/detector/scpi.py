"""ID120-style SCPI detector controller over a serial port, pty or TCP."""

from __future__ import annotations

import asyncio
from typing import Any

from groundkey_drivers.detector.base import Detector, InterlockEvent, InterlockLimits
from groundkey_drivers.errors import DeviceRejected, DeviceTimeout
from groundkey_drivers.transport import Transport, transport_for_url
from groundkey_protocol.devices import detector as scpi
from groundkey_protocol.errors import ProtocolError

_SETTINGS = {
    "bias_voltage_v": scpi.BIAS_VOLTAGE,
    "threshold_v": scpi.THRESHOLD_VOLTAGE,
    "dead_time_ns": scpi.DEADTIME_TIME,
}


class ScpiDetector(Detector):
    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        limits: InterlockLimits | None = None,
        on_event: Any = None,
        timeout_s: float = 2.0,
        baud: int = 115200,
    ) -> None:
        super().__init__(name=name or url, limits=limits, on_event=on_event)
        self.url = url
        self.timeout_s = timeout_s
        self._transport: Transport = transport_for_url(url, baud=baud)
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await self._transport.open()

    async def close(self) -> None:
        await self._transport.close()

    async def _query(self, header: str) -> bytes:
        cmd = scpi.query(header)
        async with self._lock:
            self._transport.discard_input()
            await self._transport.write(cmd.encode())
            try:
                async with asyncio.timeout(self.timeout_s):
                    line = await self._transport.read_until(scpi.TERMINATOR)
            except TimeoutError:
                raise DeviceTimeout("no reply", device=self.name, command=header) from None
        return line.rstrip(b"\r\n")

    async def _set(self, header: str, value: float | bool) -> None:
        try:
            cmd = scpi.set_command(header, value)
        except ProtocolError as exc:
            raise DeviceRejected(str(exc), device=self.name, command=header) from None
        async with self._lock:
            await self._transport.write(cmd.encode())
        code, message = scpi.parse_error(await self._query(scpi.SYSTEM_ERROR))
        if code != 0:
            raise DeviceRejected(f"{code} {message}", device=self.name, command=header)

    async def _identify(self) -> str:
        return (await self._query(scpi.IDN)).decode("ascii", "replace")

    async def _set_bias(self, on: bool) -> None:
        await self._set(scpi.BIAS_STATE, on)

    async def _get_bias(self) -> bool:
        return scpi.parse_bool(await self._query(scpi.BIAS_STATE))

    async def _error_status(self) -> int:
        return int(scpi.parse_float(await self._query(scpi.BIAS_ERROR_STATUS))) & ~(
            scpi.STATUS_TEMP_UNSETTLED
        )

    async def _get_temperature_c(self) -> float:
        return scpi.parse_float(await self._query(scpi.MEASURED_TEMP))

    async def _get_set_point_c(self) -> float:
        return scpi.parse_float(await self._query(scpi.TEMP_SET_POINT))

    async def _set_set_point_c(self, value: float) -> None:
        await self._set(scpi.TEMP_SET_POINT, value)

    async def _get_count_rate_hz(self) -> float:
        return scpi.parse_float(await self._query(scpi.DETECTION_FREQ))

    async def _configure(self, settings: dict[str, Any]) -> None:
        for key, value in settings.items():
            header = _SETTINGS.get(key)
            if header is None:
                raise DeviceRejected(f"unknown setting {key!r}", device=self.name)
            await self._set(header, float(value))


__all__ = ["InterlockEvent", "ScpiDetector"]
