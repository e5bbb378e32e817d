"""Yaesu GS-232A / GS-232B, as Hamlib 4.5.4 speaks them (REFERENCES §1).

Commands end in ``\\r``: ``W%03u %03u`` set (no reply, negative azimuth + 360),
``C2`` query, ``C`` azimuth, ``B`` elevation, ``S`` stop, ``X1``..``X4`` speed.
GS-232A answers ``+0aaa+0eee``; GS-232B ``AZ=aaa EL=eee`` in several hardware
flavours (two spaces, no space, azimuth only, ``\\r\\n`` split across reads).
Hamlib sends GS-232B an extra lone ``\\r`` after commands without a reply; real
units answer that empty line with ``?>\\r``. Any other ``?`` answer is an error.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from groundkey_protocol.devices.rotator import (
    AzEl,
    Azimuth,
    Blank,
    ClientCodec,
    Command,
    DeviceCodec,
    Elevation,
    GetAzimuth,
    GetElevation,
    GetPosition,
    LineBuffer,
    Mount,
    Park,
    Position,
    Prompt,
    Rejected,
    Reply,
    Request,
    SetPosition,
    SetSpeed,
    Stop,
    Unknown,
    check_finite,
)
from groundkey_protocol.errors import ProtocolError

_A_POS = re.compile(r"\+0?(\d{3,4})\+0?(\d{3,4})")
_A_ONE = re.compile(r"\+0?(\d{3,4})")
_B_POS = re.compile(r"AZ=\s*(\d{1,3})(?:\s*EL=\s*(\d{1,3}))?")
_B_EL = re.compile(r"EL=\s*(\d{1,3})")
_SET = re.compile(r"W\s*(\d{1,3})\s+(\d{1,3})")

ReplyStyle = Literal["crlf", "hardware", "nospace", "azonly"]


def _deg(value: float) -> int:
    """Whole degrees as the controllers report them (no sign: negative az + 360)."""
    degrees = round(value)
    return min(max(degrees + 360 if degrees < 0 else degrees, 0), 999)


class _GS232Client(ClientCodec):
    protocol: ClassVar[str] = "gs232"

    def __init__(self) -> None:
        self._lines = LineBuffer(b"\r\n")

    def encode(self, command: Command) -> Request:
        match command:
            case GetPosition():
                return Request(b"C2\r", True)
            case GetAzimuth():
                return Request(b"C\r", True)
            case GetElevation():
                return Request(b"B\r", True)
            case SetPosition(target=target):
                check_finite(self.protocol, target)
                az = _deg(target.az_deg + 360.0 if target.az_deg < 0 else target.az_deg)
                el = _deg(target.el_deg)
                if not (0 <= az <= 999 and 0 <= el <= 999):
                    raise ProtocolError(f"position {target} not encodable", protocol=self.protocol)
                return Request(f"W{az:03d} {el:03d}\r".encode(), False)
            case Stop():
                return Request(b"S\r", False)
            case SetSpeed(level=level) if 1 <= level <= 4:
                return Request(f"X{level}\r".encode(), False)
            case Blank():
                return Request(b"\r", True)
        raise ProtocolError(f"cannot encode {command!r}", protocol=self.protocol)

    def feed(self, data: bytes) -> list[Reply]:
        replies: list[Reply] = []
        for text, _ in self._lines.feed(data):
            reply = self._parse(text.strip())
            if reply is not None:
                replies.append(reply)
        return replies

    def _parse(self, line: str) -> Reply | None:
        if not line:
            return None
        if line.startswith("?>"):
            return Prompt()
        if line.startswith("?"):
            return Rejected(-9, line)
        if m := _B_POS.search(line):
            if m.group(2) is None:
                return Azimuth(float(m.group(1)))
            return Position(AzEl(float(m.group(1)), float(m.group(2))))
        if m := _A_POS.search(line):
            return Position(AzEl(float(m.group(1)), float(m.group(2))))
        if m := _B_EL.search(line):
            return Elevation(float(m.group(1)))
        if m := _A_ONE.search(line):
            return Azimuth(float(m.group(1)))
        return None  # garbage line: skipped

    def reset(self) -> None:
        self._lines.reset()


class GS232AClient(_GS232Client):
    protocol: ClassVar[str] = "gs232a"


class GS232BClient(_GS232Client):
    protocol: ClassVar[str] = "gs232b"


class _GS232Device(DeviceCodec):
    protocol: ClassVar[str] = "gs232"

    def __init__(self) -> None:
        self._lines = LineBuffer(b"\r")

    def feed(self, data: bytes) -> list[Command]:
        commands: list[Command] = []
        for text, _ in self._lines.feed(data):
            commands.append(self._parse(text.strip().upper()))
        return commands

    @staticmethod
    def _parse(line: str) -> Command:
        if not line:
            return Blank()
        if line == "C2":
            return GetPosition()
        if line == "C":
            return GetAzimuth()
        if line == "B":
            return GetElevation()
        if line in ("S", "A", "E"):
            return Stop()
        if line in ("X1", "X2", "X3", "X4"):
            return SetSpeed(int(line[1]))
        if m := _SET.fullmatch(line):
            return SetPosition(AzEl(float(m.group(1)), float(m.group(2))))
        return Unknown(line, known=line[:1] in "MULRDIHOFPYZN")

    def replies(self, command: Command, mount: Mount) -> list[Reply]:
        match command:
            case SetPosition(target=target):
                return [] if mount.set_target(target) else [Rejected(-1, "?>")]
            case Stop():
                mount.stop()
                return []
            case Park():
                mount.park()
                return []
            case SetSpeed():
                return []
            case Blank():
                return [Prompt()]
            case Unknown():
                return [Rejected(-4, "?>")]
        return super().replies(command, mount)

    def reset(self) -> None:
        self._lines.reset()


class GS232ADevice(_GS232Device):
    protocol: ClassVar[str] = "gs232a"

    def encode(self, reply: Reply) -> bytes:
        match reply:
            case Position(position=p):
                return f"+0{_deg(p.az_deg):03d}+0{_deg(p.el_deg):03d}\r\n".encode()
            case Azimuth(az_deg=az):
                return f"+0{_deg(az):03d}\r\n".encode()
            case Elevation(el_deg=el):
                return f"+0{_deg(el):03d}\r\n".encode()
            case Prompt() | Rejected():
                return b"?>\r\n"
        return b""


class GS232BDevice(_GS232Device):
    """``style`` picks a real-hardware answer flavour: ``crlf`` ``AZ=181 EL=008\\r\\n``,
    ``hardware`` ``AZ=181  EL=008\\r``, ``nospace`` ``AZ=070EL=000\\r\\n``, ``azonly``
    ``AZ=229\\r\\n``."""

    protocol: ClassVar[str] = "gs232b"

    def __init__(self, style: ReplyStyle = "crlf") -> None:
        super().__init__()
        self.style = style

    def encode(self, reply: Reply) -> bytes:
        match reply:
            case Position(position=p):
                az, el = _deg(p.az_deg), _deg(p.el_deg)
                if self.style == "hardware":
                    return f"AZ={az:03d}  EL={el:03d}\r".encode()
                if self.style == "nospace":
                    return f"AZ={az:03d}EL={el:03d}\r\n".encode()
                if self.style == "azonly":
                    return f"AZ={az:03d}\r\n".encode()
                return f"AZ={az:03d} EL={el:03d}\r\n".encode()
            case Azimuth(az_deg=az):
                return f"AZ={_deg(az):03d}\r\n".encode()
            case Elevation(el_deg=el):
                return f"EL={_deg(el):03d}\r\n".encode()
            case Prompt() | Rejected():
                return b"?>\r"
        return b""


__all__ = [
    "GS232AClient",
    "GS232ADevice",
    "GS232BClient",
    "GS232BDevice",
    "ReplyStyle",
]
