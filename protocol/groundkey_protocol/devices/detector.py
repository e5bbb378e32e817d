"""SCPI-style single-photon detector controller protocol (names as the IDQ ID120).

Lines are ASCII terminated by ``\\n`` (``\\r\\n`` accepted). Settings produce no
reply; queries (``?``) reply with one line. Errors go to a queue read with
``SYSTEM:ERROR?`` (``0,"No error"`` when empty), SCPI style.

=========================  ==========  ============================================
header                     argument    meaning
=========================  ==========  ============================================
``*IDN?``                              ``vendor,model,serial,firmware``
``BIAS:STATE``             ON|OFF      bias (arms the detector); query -> ON/OFF
``BIAS:VOLTAGE``           V           bias above breakdown, 0..60
``BIAS:ERROR_STATUS?``                 bit field: 1 latched (bright light), 2 temp
``THRESHOLD:VOLTAGE``      V           discriminator threshold, 0..2
``DEADTIME:TIME``          ns          dead time, 20..1000
``REG:TEMP_SET_POINT``     degC        cooler set point, -60..25
``REG:MEASURED_TEMP?``                 measured temperature, degC
``COUNTERS:DETECTION_FREQ?``           count rate, Hz
``SYSTEM:ERROR?``                      ``code,"message"`` from the error queue
``SIM:LIGHT``              cps         simulator only: incident photon rate
=========================  ==========  ============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from groundkey_protocol.errors import ProtocolError

PROTOCOL = "scpi"
TERMINATOR: Final = b"\n"
MAX_LINE: Final = 256

IDN: Final = "*IDN"
BIAS_STATE: Final = "BIAS:STATE"
BIAS_VOLTAGE: Final = "BIAS:VOLTAGE"
BIAS_ERROR_STATUS: Final = "BIAS:ERROR_STATUS"
THRESHOLD_VOLTAGE: Final = "THRESHOLD:VOLTAGE"
DEADTIME_TIME: Final = "DEADTIME:TIME"
TEMP_SET_POINT: Final = "REG:TEMP_SET_POINT"
MEASURED_TEMP: Final = "REG:MEASURED_TEMP"
DETECTION_FREQ: Final = "COUNTERS:DETECTION_FREQ"
SYSTEM_ERROR: Final = "SYSTEM:ERROR"
SIM_LIGHT: Final = "SIM:LIGHT"

# header -> (settable range or None for query-only / boolean)
SETTABLE: Final[dict[str, tuple[float, float] | None]] = {
    BIAS_STATE: None,
    BIAS_VOLTAGE: (0.0, 60.0),
    THRESHOLD_VOLTAGE: (0.0, 2.0),
    DEADTIME_TIME: (20.0, 1000.0),
    TEMP_SET_POINT: (-60.0, 25.0),
    SIM_LIGHT: (0.0, 1e12),
}
QUERIES: Final = frozenset(
    {
        IDN,
        BIAS_STATE,
        BIAS_VOLTAGE,
        BIAS_ERROR_STATUS,
        THRESHOLD_VOLTAGE,
        DEADTIME_TIME,
        TEMP_SET_POINT,
        MEASURED_TEMP,
        DETECTION_FREQ,
        SYSTEM_ERROR,
    }
)
ALIASES: Final = {"SYST:ERR": SYSTEM_ERROR, "SYSTEM:ERR": SYSTEM_ERROR}

ERR_NONE: Final = (0, "No error")
ERR_UNDEFINED_HEADER: Final = (-113, "Undefined header")
ERR_DATA_OUT_OF_RANGE: Final = (-222, "Data out of range")
ERR_ILLEGAL_PARAMETER: Final = (-224, "Illegal parameter value")
ERR_MISSING_PARAMETER: Final = (-109, "Missing parameter")

STATUS_LATCHED: Final = 1
STATUS_TEMP_UNSETTLED: Final = 2


@dataclass(frozen=True, slots=True)
class Command:
    header: str
    query: bool = False
    arg: str | None = None

    def encode(self) -> bytes:
        text = self.header + ("?" if self.query else "")
        if self.arg is not None:
            text += " " + self.arg
        return text.encode("ascii") + TERMINATOR


def set_command(header: str, value: float | bool) -> Command:
    """A validated setting; raises ProtocolError before anything is sent."""
    if header not in SETTABLE:
        raise ProtocolError(f"{header} is not settable", protocol=PROTOCOL)
    limits = SETTABLE[header]
    if limits is None:
        return Command(header, arg="ON" if value else "OFF")
    low, high = limits
    if not low <= float(value) <= high:
        raise ProtocolError(f"{header} {value} outside [{low:g}, {high:g}]", protocol=PROTOCOL)
    return Command(header, arg=f"{float(value):g}")


def query(header: str) -> Command:
    if header not in QUERIES:
        raise ProtocolError(f"{header} is not a query", protocol=PROTOCOL)
    return Command(header, query=True)


def parse_command(line: bytes) -> Command:
    """Device side: one line (without terminator) -> Command; ProtocolError if malformed."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ProtocolError("non-ASCII command", protocol=PROTOCOL, data=line) from None
    if not text:
        raise ProtocolError("empty command", protocol=PROTOCOL)
    head, _, arg = text.partition(" ")
    head = head.upper()
    is_query = head.endswith("?")
    head = head.rstrip("?")
    head = ALIASES.get(head, head)
    return Command(head, is_query, arg.strip() or None)


def parse_float(reply: bytes) -> float:
    try:
        return float(reply.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("reply is not a number", protocol=PROTOCOL, data=reply) from None


def parse_bool(reply: bytes) -> bool:
    text = reply.strip().upper()
    if text in (b"ON", b"1"):
        return True
    if text in (b"OFF", b"0"):
        return False
    raise ProtocolError("reply is not ON/OFF", protocol=PROTOCOL, data=reply)


def parse_error(reply: bytes) -> tuple[int, str]:
    """``-113,"Undefined header"`` -> (-113, "Undefined header")."""
    code, _sep, message = reply.decode("ascii", "replace").strip().partition(",")
    try:
        return int(code), message.strip().strip('"')
    except ValueError:
        raise ProtocolError("bad error-queue reply", protocol=PROTOCOL, data=reply) from None


def format_error(code: int, message: str) -> bytes:
    return f'{code},"{message}"'.encode("ascii") + TERMINATOR


def parse_arg(command: Command) -> float | bool:
    """Device side: the argument of a setting, checked against :data:`SETTABLE`."""
    if command.arg is None:
        raise ProtocolError("missing parameter", protocol=PROTOCOL)
    limits = SETTABLE.get(command.header)
    if limits is None:
        return parse_bool(command.arg.encode("ascii", "replace"))
    value = parse_float(command.arg.encode("ascii", "replace"))
    if not limits[0] <= value <= limits[1]:
        raise ProtocolError("out of range", protocol=PROTOCOL)
    return value


class LineSplitter:
    """Splits a byte stream into lines; drops over-long garbage lines."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines: list[bytes] = []
        while True:
            idx = self._buf.find(TERMINATOR)
            if idx < 0:
                if len(self._buf) > MAX_LINE:
                    self._buf.clear()
                return lines
            line = bytes(self._buf[:idx]).rstrip(b"\r")
            del self._buf[: idx + 1]
            if line.strip():
                lines.append(line)
