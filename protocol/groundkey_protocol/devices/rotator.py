"""Types shared by every rotator codec (client side and device side).

A rotator protocol module defines two sans-I/O codecs over the same messages:

* a *client* codec (the station's driver): ``encode(command) -> Request`` gives the
  bytes to write and whether the device answers; ``feed(bytes) -> [Reply]`` parses
  what came back;
* a *device* codec (the simulator): ``feed(bytes) -> [Command]`` parses what a
  client wrote; ``respond(command, mount) -> bytes`` acts on a :class:`Mount` and
  gives the whole answer, to be sent in one write.

Parsers keep a buffer, skip garbage (resync) and raise only
:class:`~groundkey_protocol.errors.ProtocolError`.
"""

from __future__ import annotations

import abc
import math
import re
from dataclasses import dataclass
from typing import ClassVar, Protocol

from groundkey_protocol.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class AzEl:
    """A pointing direction in degrees: azimuth from north through east, elevation."""

    az_deg: float
    el_deg: float


@dataclass(frozen=True, slots=True)
class RotatorLimits:
    """Travel limits of a mount. ``max_az_deg`` above 360 means an overlap region."""

    min_az_deg: float = 0.0
    max_az_deg: float = 360.0
    min_el_deg: float = 0.0
    max_el_deg: float = 90.0

    def contains(self, target: AzEl) -> bool:
        return (
            self.min_az_deg <= target.az_deg <= self.max_az_deg
            and self.min_el_deg <= target.el_deg <= self.max_el_deg
        )


# --- commands (client -> device) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetPosition:
    """Ask for azimuth and elevation."""


@dataclass(frozen=True, slots=True)
class GetAzimuth:
    """Ask for azimuth only (GS-232 ``C``, EasyComm >= Hamlib 4.6 ``AZ``)."""


@dataclass(frozen=True, slots=True)
class GetElevation:
    """Ask for elevation only (GS-232 ``B``, EasyComm >= Hamlib 4.6 ``EL``)."""


@dataclass(frozen=True, slots=True)
class SetPosition:
    """Move to ``target``."""

    target: AzEl


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop both axes."""


@dataclass(frozen=True, slots=True)
class Park:
    """Move to the park position."""


@dataclass(frozen=True, slots=True)
class SetSpeed:
    """GS-232 ``X1``..``X4``: a speed preset; no reply."""

    level: int


@dataclass(frozen=True, slots=True)
class DumpState:
    """rotctld ``\\dump_state``."""


@dataclass(frozen=True, slots=True)
class Quit:
    """rotctld ``q``: the server closes the connection."""


@dataclass(frozen=True, slots=True)
class Blank:
    """An empty line (GS-232B: Hamlib's extra lone CR)."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A command the device does not implement; ``known`` if it is a real command
    of the protocol that this device lacks (rotctld answers ENAVAIL then)."""

    text: str
    known: bool = False


@dataclass(frozen=True, slots=True)
class Extended:
    """rotctld extended response mode (``+p``, ``;p``...): ``separator`` joins the
    answer's lines, ``args`` is the argument text echoed back."""

    command: Command
    separator: str = "\n"
    args: str = ""


Command = (
    GetPosition
    | GetAzimuth
    | GetElevation
    | SetPosition
    | Stop
    | Park
    | SetSpeed
    | DumpState
    | Quit
    | Blank
    | Unknown
    | Extended
)


# --- replies (device -> client) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """A position report; Rot2Prog frames also carry the resolution (PH, PV)."""

    position: AzEl
    resolution: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Azimuth:
    az_deg: float


@dataclass(frozen=True, slots=True)
class Elevation:
    el_deg: float


@dataclass(frozen=True, slots=True)
class Ok:
    """Success without data (rotctld ``RPRT 0``)."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """GS-232B ``?>`` after an empty line: harmless, clients ignore it."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An error answer: a Hamlib RPRT code (negative) and the raw text."""

    code: int = -1
    text: str = ""


@dataclass(frozen=True, slots=True)
class State:
    """rotctld ``\\dump_state``: the travel limits of the backend."""

    limits: RotatorLimits
    south_zero: bool = False


Reply = Position | Azimuth | Elevation | Ok | Prompt | Rejected | State

# Hamlib error codes (rig.h)
RIG_OK = 0
RIG_EINVAL = -1
RIG_ENIMPL = -4
RIG_ETIMEOUT = -5
RIG_EIO = -6
RIG_EPROTO = -8
RIG_ERJCTED = -9
RIG_ENAVAIL = -11


@dataclass(frozen=True, slots=True)
class Request:
    """Bytes to write for one command and whether the device answers them."""

    data: bytes
    expects_reply: bool


class Mount(Protocol):
    """What a device codec needs from an emulated mount."""

    @property
    def position(self) -> AzEl: ...

    @property
    def limits(self) -> RotatorLimits: ...

    def set_target(self, target: AzEl) -> bool:
        """Start moving; False (and no motion) if ``target`` is out of limits."""
        ...

    def stop(self) -> None: ...

    def park(self) -> None: ...


class ClientCodec(abc.ABC):
    """Station side of a rotator protocol."""

    protocol: ClassVar[str]

    @abc.abstractmethod
    def encode(self, command: Command) -> Request:
        """Bytes for ``command``; ProtocolError if this protocol cannot express it."""

    @abc.abstractmethod
    def feed(self, data: bytes) -> list[Reply]:
        """Parse device bytes; incomplete input stays buffered, garbage is skipped."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget buffered input and pending expectations (after a timeout/reconnect)."""


class DeviceCodec(abc.ABC):
    """Device side of a rotator protocol (what the emulated controller runs)."""

    protocol: ClassVar[str]

    @abc.abstractmethod
    def feed(self, data: bytes) -> list[Command]:
        """Parse client bytes into commands; garbage is skipped."""

    @abc.abstractmethod
    def encode(self, reply: Reply) -> bytes:
        """Wire bytes of one reply."""

    def replies(self, command: Command, mount: Mount) -> list[Reply]:
        """Act on ``mount`` and return the replies; protocols override the details."""
        match command:
            case GetPosition():
                return [Position(mount.position)]
            case GetAzimuth():
                return [Azimuth(mount.position.az_deg)]
            case GetElevation():
                return [Elevation(mount.position.el_deg)]
            case SetPosition(target=target):
                return [Ok()] if mount.set_target(target) else [Rejected(RIG_EINVAL)]
            case Stop():
                mount.stop()
                return [Ok()]
            case Park():
                mount.park()
                return [Ok()]
            case DumpState():
                return [State(mount.limits)]
            case Unknown(known=known):
                return [Rejected(RIG_ENAVAIL if known else RIG_ENIMPL)]
            case _:
                return []

    def respond(self, command: Command, mount: Mount) -> bytes:
        """The whole answer to ``command`` (possibly empty), for a single write."""
        return b"".join(self.encode(r) for r in self.replies(command, mount))


# --- helpers shared by the line-based codecs -------------------------------------

_NOISE = bytes(range(0x80, 0x100)) + bytes(c for c in range(0x20) if c not in (10, 13))
MAX_LINE_BYTES = 256


class LineBuffer:
    """Splits a byte stream into lines at any of ``terminators``.

    Bytes that never occur in these ASCII protocols (controls, bytes >= 0x80) are
    dropped as line noise; an over-long line without terminator is discarded.
    """

    def __init__(self, terminators: bytes, *, keep_noise: bytes = b"") -> None:
        self._pattern = re.compile(b"[" + re.escape(terminators) + b"]")
        self._noise = bytes(b for b in _NOISE if b not in keep_noise)
        self._buf = bytearray()
        self.discarded_bytes = 0

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """Complete lines as (text, terminator)."""
        self._buf += data
        lines: list[tuple[str, bytes]] = []
        start = 0
        for match in self._pattern.finditer(self._buf):
            raw = bytes(self._buf[start : match.start()])
            clean = raw.translate(None, self._noise)
            self.discarded_bytes += len(raw) - len(clean)
            lines.append((clean.decode("ascii"), match.group()))
            start = match.end()
        del self._buf[:start]
        if len(self._buf) > MAX_LINE_BYTES:
            self.discarded_bytes += len(self._buf)
            self._buf.clear()
        return lines

    def reset(self) -> None:
        self._buf.clear()


def check_finite(protocol: str, target: AzEl) -> None:
    if not (math.isfinite(target.az_deg) and math.isfinite(target.el_deg)):
        raise ProtocolError(f"cannot encode non-finite position {target}", protocol=protocol)


def parse_float(text: str) -> float | None:
    """A finite float, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
