"""Detector controller state: a first-order cooler, bias, counts, and latching."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from groundkey_protocol.devices import detector as scpi
from groundkey_protocol.errors import ProtocolError


class SimDetector:
    """Answers SCPI lines. Temperature relaxes to the set point with ``tau_s``; light
    above ``latch_cps`` while biased latches the detector (counts stop being photons)."""

    def __init__(
        self,
        *,
        serial: str = "ID120-SIM-01",
        ambient_c: float = 20.0,
        tau_s: float = 1.0,
        dark_cps: float = 25.0,
        latch_cps: float = 5e7,
        dead_time_ns: float = 45.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.serial = serial
        self.tau_s = tau_s
        self.dark_cps = dark_cps
        self.latch_cps = latch_cps
        self._now = now
        self.set_point_c = ambient_c
        self._temp_from_c = ambient_c
        self._temp_since = now()
        self.bias = False
        self.bias_voltage = 20.0
        self.threshold_v = 0.5
        self.dead_time_ns = dead_time_ns
        self.light_cps = 0.0
        self.latched = False
        self.errors: deque[tuple[int, str]] = deque(maxlen=16)

    def temperature_c(self) -> float:
        dt_s = self._now() - self._temp_since
        return self.set_point_c + (self._temp_from_c - self.set_point_c) * math.exp(
            -dt_s / self.tau_s
        )

    def count_rate_hz(self) -> float:
        if not self.bias:
            return 0.0
        if self.light_cps > self.latch_cps:
            self.latched = True
        if self.latched:
            return 1e9 / self.dead_time_ns  # saturated: counts at the dead-time limit
        rate = self.dark_cps + self.light_cps
        return rate / (1.0 + rate * self.dead_time_ns * 1e-9)  # non-paralysable

    def status(self) -> int:
        bits = scpi.STATUS_LATCHED if self.latched else 0
        if abs(self.temperature_c() - self.set_point_c) > 0.5:
            bits |= scpi.STATUS_TEMP_UNSETTLED
        return bits

    def handle(self, line: bytes) -> bytes:
        """One command line in, reply bytes out (b"" for settings)."""
        try:
            cmd = scpi.parse_command(line)
        except ProtocolError:
            self.errors.append(scpi.ERR_UNDEFINED_HEADER)
            return b""
        if cmd.query:
            reply = self._query(cmd.header)
            if reply is None:
                self.errors.append(scpi.ERR_UNDEFINED_HEADER)
                return b""
            return reply.encode("ascii") + scpi.TERMINATOR
        if cmd.header not in scpi.SETTABLE:
            self.errors.append(scpi.ERR_UNDEFINED_HEADER)
            return b""
        try:
            value = scpi.parse_arg(cmd)
        except ProtocolError:
            self.errors.append(
                scpi.ERR_MISSING_PARAMETER if cmd.arg is None else scpi.ERR_DATA_OUT_OF_RANGE
            )
            return b""
        self._set(cmd.header, value)
        return b""

    def _set(self, header: str, value: float | bool) -> None:
        if header == scpi.BIAS_STATE:
            self.bias = bool(value)
            if not self.bias:
                self.latched = False  # removing bias unlatches
        elif header == scpi.BIAS_VOLTAGE:
            self.bias_voltage = float(value)
        elif header == scpi.THRESHOLD_VOLTAGE:
            self.threshold_v = float(value)
        elif header == scpi.DEADTIME_TIME:
            self.dead_time_ns = float(value)
        elif header == scpi.TEMP_SET_POINT:
            self._temp_from_c = self.temperature_c()
            self._temp_since = self._now()
            self.set_point_c = float(value)
        elif header == scpi.SIM_LIGHT:
            self.light_cps = float(value)

    def _query(self, header: str) -> str | None:
        if header == scpi.SYSTEM_ERROR:
            code, message = self.errors.popleft() if self.errors else scpi.ERR_NONE
            return f'{code},"{message}"'
        values: dict[str, Callable[[], str]] = {
            scpi.IDN: lambda: f"IDQ,ID120-SIM,{self.serial},1.0",
            scpi.BIAS_STATE: lambda: "ON" if self.bias else "OFF",
            scpi.BIAS_VOLTAGE: lambda: f"{self.bias_voltage:g}",
            scpi.BIAS_ERROR_STATUS: lambda: str(self.status()),
            scpi.THRESHOLD_VOLTAGE: lambda: f"{self.threshold_v:g}",
            scpi.DEADTIME_TIME: lambda: f"{self.dead_time_ns:g}",
            scpi.TEMP_SET_POINT: lambda: f"{self.set_point_c:g}",
            scpi.MEASURED_TEMP: lambda: f"{self.temperature_c():.3f}",
            scpi.DETECTION_FREQ: lambda: f"{self.count_rate_hz():.1f}",
        }
        fn = values.get(header)
        return fn() if fn is not None else None
