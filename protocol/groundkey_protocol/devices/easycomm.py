"""EasyComm II, as Hamlib speaks it (REFERENCES §1).

Two-letter commands separated by space/CR/LF, lines end in LF. Hamlib 4.5.4 sets
with ``AZ90.0 EL30.0\\n``, queries with ``AZ EL \\n`` and expects ``AZ%f EL%f``; stop
is ``SA SE \\n``. Hamlib >= 4.6 queries ``AZ\\n`` and ``EL\\n`` separately. Config
queries leave a stray ``;`` before the next command, which devices must ignore.
"""

from __future__ import annotations

import re
from typing import ClassVar

from groundkey_protocol.devices.rotator import (
    AzEl,
    Azimuth,
    ClientCodec,
    Command,
    DeviceCodec,
    Elevation,
    GetAzimuth,
    GetElevation,
    GetPosition,
    LineBuffer,
    Mount,
    Position,
    Reply,
    Request,
    SetPosition,
    Stop,
    Unknown,
    check_finite,
    parse_float,
)
from groundkey_protocol.errors import ProtocolError

_NUM = r"(-?\d+(?:\.\d*)?)"
_AZ = re.compile(r"AZ\s*" + _NUM)
_EL = re.compile(r"EL\s*" + _NUM)
_SEPARATORS = re.compile(r"[ ;,\t]+")
_KNOWN = {"UP", "DN", "ML", "MR", "MU", "MD", "AO", "LO", "OP", "IP", "AN", "ST", "VE"}


class EasyComm2Client(ClientCodec):
    """``separate_queries`` asks ``AZ\\n`` and ``EL\\n`` (Hamlib >= 4.6 style) for
    :class:`GetAzimuth` / :class:`GetElevation`; :class:`GetPosition` is always
    the 4.5.4 ``AZ EL \\n``."""

    protocol: ClassVar[str] = "easycomm2"

    def __init__(self) -> None:
        self._lines = LineBuffer(b"\n\r")

    def encode(self, command: Command) -> Request:
        match command:
            case GetPosition():
                return Request(b"AZ EL \n", True)
            case GetAzimuth():
                return Request(b"AZ\n", True)
            case GetElevation():
                return Request(b"EL\n", True)
            case SetPosition(target=target):
                check_finite(self.protocol, target)
                return Request(f"AZ{target.az_deg:.1f} EL{target.el_deg:.1f}\n".encode(), False)
            case Stop():
                return Request(b"SA SE \n", False)
        raise ProtocolError(f"cannot encode {command!r}", protocol=self.protocol)

    def feed(self, data: bytes) -> list[Reply]:
        replies: list[Reply] = []
        for text, _ in self._lines.feed(data):
            az_match, el_match = _AZ.search(text), _EL.search(text)
            az = parse_float(az_match.group(1)) if az_match else None
            el = parse_float(el_match.group(1)) if el_match else None
            if az is not None and el is not None:
                replies.append(Position(AzEl(az, el)))
            elif az is not None:
                replies.append(Azimuth(az))
            elif el is not None:
                replies.append(Elevation(el))
        return replies

    def reset(self) -> None:
        self._lines.reset()


class EasyComm2Device(DeviceCodec):
    protocol: ClassVar[str] = "easycomm2"

    def __init__(self) -> None:
        self._lines = LineBuffer(b"\n")

    def feed(self, data: bytes) -> list[Command]:
        commands: list[Command] = []
        for text, _ in self._lines.feed(data):
            tokens = [t for t in _SEPARATORS.split(text.upper().replace("\r", " ")) if t]
            if tokens:
                commands.append(self._parse(tokens, text))
        return commands

    @staticmethod
    def _parse(tokens: list[str], text: str) -> Command:
        ask_az = ask_el = stop = False
        set_az: float | None = None
        set_el: float | None = None
        for token in tokens:
            head, arg = token[:2], token[2:]
            if head == "AZ" and not arg:
                ask_az = True
            elif head == "EL" and not arg:
                ask_el = True
            elif head == "AZ":
                set_az = parse_float(arg)
                if set_az is None:
                    return Unknown(text.strip())
            elif head == "EL":
                set_el = parse_float(arg)
                if set_el is None:
                    return Unknown(text.strip())
            elif head in ("SA", "SE") and not arg:
                stop = True
            else:
                return Unknown(text.strip(), known=head in _KNOWN)
        if stop:
            return Stop()
        if set_az is not None and set_el is not None:
            return SetPosition(AzEl(set_az, set_el))
        if set_az is not None or set_el is not None:
            return Unknown(text.strip(), known=True)  # single-axis moves: not emulated
        if ask_az and ask_el:
            return GetPosition()
        return GetAzimuth() if ask_az else GetElevation()

    def encode(self, reply: Reply) -> bytes:
        match reply:
            case Position(position=p):
                return f"AZ{p.az_deg:.1f} EL{p.el_deg:.1f}\n".encode()
            case Azimuth(az_deg=az):
                return f"AZ{az:.1f}\n".encode()
            case Elevation(el_deg=el):
                return f"EL{el:.1f}\n".encode()
        return b""  # EasyComm answers nothing else

    def replies(self, command: Command, mount: Mount) -> list[Reply]:
        if isinstance(command, SetPosition):
            mount.set_target(command.target)
            return []
        return super().replies(command, mount)

    def reset(self) -> None:
        self._lines.reset()


__all__ = ["EasyComm2Client", "EasyComm2Device"]
