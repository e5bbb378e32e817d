"""Hamlib's rotctld network protocol (TCP, default port 4533), both ends.

One command per line (REFERENCES §1; checked against Debian's rotctld 4.5.4)::

    p / \\get_pos        -> "0.00\\n0.00\\n"            values only, no RPRT on success
    P 90 30             -> "RPRT 0\\n"                  RPRT -1 when out of range
    +p                  -> "get_pos:\\nAzimuth: 7.22\\nElevation: 7.22\\nRPRT 0\\n"
    +P 91 31            -> "set_pos: 91 31\\nRPRT 0\\n"
    S / K               -> "RPRT 0\\n"   (+S -> "stop:\\nRPRT 0\\n")
    \\dump_state         -> "1\\n1\\nmin_az=...\\nmax_az=...\\nmin_el=...\\nmax_el=...\\n
                            south_zero=0\\nrot_type=AzEl\\ndone\\n"
    q                   -> connection closed

A first character ``+`` (or ``;``, ``|``, ``,``) selects extended responses with
that separator. Real rotctld stays silent on unknown commands; our server answers
``RPRT -4`` (ENIMPL), or ``RPRT -11`` (ENAVAIL) for Hamlib commands it lacks.
"""

from __future__ import annotations

import re
from collections import deque
from typing import ClassVar, Literal

from groundkey_protocol.devices.rotator import (
    RIG_EINVAL,
    RIG_EPROTO,
    AzEl,
    Blank,
    ClientCodec,
    Command,
    DeviceCodec,
    DumpState,
    Extended,
    GetPosition,
    LineBuffer,
    Mount,
    Ok,
    Park,
    Position,
    Quit,
    Rejected,
    Reply,
    Request,
    RotatorLimits,
    SetPosition,
    State,
    Stop,
    Unknown,
    check_finite,
    parse_float,
)
from groundkey_protocol.errors import ProtocolError

DEFAULT_PORT = 4533
PROTOCOL_VERSION = 1
_RPRT = re.compile(r"RPRT\s+(-?\d+)")
_EXTENDED_PREFIXES = "+;|,"
_SHORT = {"p": "get_pos", "P": "set_pos", "S": "stop", "K": "park", "q": "quit", "Q": "quit"}
_LONG = {
    "get_pos": "get_pos",
    "set_pos": "set_pos",
    "stop": "stop",
    "park": "park",
    "dump_state": "dump_state",
    "quit": "quit",
}
# Hamlib rotctl commands we know but do not emulate (-> ENAVAIL)
_KNOWN = set("MRC_wW") | {
    "move",
    "reset",
    "set_conf",
    "get_info",
    "send_cmd",
    "dump_caps",
    "get_conf",
    "set_level",
    "get_level",
    "get_status",
}

Expect = Literal["pos", "rprt", "state", "ext"]


def _limits_text(limits: RotatorLimits) -> str:
    return (
        f"min_az={limits.min_az_deg:f}\nmax_az={limits.max_az_deg:f}\n"
        f"min_el={limits.min_el_deg:f}\nmax_el={limits.max_el_deg:f}\n"
    )


class RotctldClient(ClientCodec):
    """Client side; replies are interpreted by what was asked (FIFO of expectations)."""

    protocol: ClassVar[str] = "rotctld"

    def __init__(self) -> None:
        self._lines = LineBuffer(b"\n")
        self._expect: deque[Expect] = deque()
        self._partial: list[str] = []

    def encode(self, command: Command) -> Request:
        data, expect = self._encode(command)
        if expect is not None:
            self._expect.append(expect)
        return Request(data, expect is not None)

    def _encode(self, command: Command) -> tuple[bytes, Expect | None]:
        match command:
            case GetPosition():
                return b"p\n", "pos"
            case SetPosition(target=target):
                check_finite(self.protocol, target)
                return f"P {target.az_deg:f} {target.el_deg:f}\n".encode(), "rprt"
            case Stop():
                return b"S\n", "rprt"
            case Park():
                return b"K\n", "rprt"
            case DumpState():
                return b"\\dump_state\n", "state"
            case Quit():
                return b"q\n", None
            case Extended(command=inner, separator="\n"):
                data, _ = self._encode(inner)
                return b"+" + data, "ext"
        raise ProtocolError(f"cannot encode {command!r}", protocol=self.protocol)

    def feed(self, data: bytes) -> list[Reply]:
        replies: list[Reply] = []
        for text, _ in self._lines.feed(data):
            line = text.strip()
            if not self._expect:
                continue  # unsolicited: skipped
            reply = self._take(line)
            if reply is not None:
                replies.append(reply)
                self._expect.popleft()
                self._partial = []
        return replies

    def _take(self, line: str) -> Reply | None:
        expect = self._expect[0]
        rprt = _RPRT.fullmatch(line)
        if expect == "rprt":
            if rprt is None:
                return None
            code = int(rprt.group(1))
            return Ok() if code == 0 else Rejected(code, line)
        if rprt is not None:
            code = int(rprt.group(1))
            if expect == "ext" and code == 0:
                return self._extended()
            return Rejected(code, line) if code else Ok()
        self._partial.append(line)
        if expect == "pos":
            values = [parse_float(v) for v in self._partial]
            if values[-1] is None:
                self._partial.pop()  # garbage line
                return None
            if len(values) == 2 and values[0] is not None and values[1] is not None:
                return Position(AzEl(values[0], values[1]))
            return None
        if expect == "state" and line == "done":
            return self._state()
        return None

    def _extended(self) -> Reply:
        fields = dict(self._parse_kv(line, ":") for line in self._partial[1:])
        az, el = parse_float(fields.get("Azimuth", "")), parse_float(fields.get("Elevation", ""))
        if az is not None and el is not None:
            return Position(AzEl(az, el))
        return Ok()

    def _state(self) -> Reply:
        fields = dict(self._parse_kv(line, "=") for line in self._partial)
        values = {
            k: parse_float(fields.get(k, "")) for k in ("min_az", "max_az", "min_el", "max_el")
        }
        if any(v is None for v in values.values()):
            return Rejected(RIG_EPROTO, "dump_state without limits")
        limits = RotatorLimits(
            min_az_deg=values["min_az"] or 0.0,
            max_az_deg=values["max_az"] or 0.0,
            min_el_deg=values["min_el"] or 0.0,
            max_el_deg=values["max_el"] or 0.0,
        )
        return State(limits, south_zero=fields.get("south_zero", "0").strip() == "1")

    @staticmethod
    def _parse_kv(line: str, sep: str) -> tuple[str, str]:
        key, _, value = line.partition(sep)
        return key.strip(), value.strip()

    def reset(self) -> None:
        self._lines.reset()
        self._expect.clear()
        self._partial = []


class RotctldDevice(DeviceCodec):
    """Server side (what our rotctld emulation runs). ``silent_unknown`` mimics real
    rotctld, which does not answer unknown commands at all."""

    protocol: ClassVar[str] = "rotctld"

    def __init__(self, *, silent_unknown: bool = False) -> None:
        self.silent_unknown = silent_unknown
        self._lines = LineBuffer(b"\n", keep_noise=b"\t")

    def feed(self, data: bytes) -> list[Command]:
        commands: list[Command] = []
        for text, _ in self._lines.feed(data):
            line = text.strip()
            if line:
                commands.append(self._parse(line))
        return commands

    @staticmethod
    def _parse(line: str) -> Command:
        separator = ""
        if line[0] in _EXTENDED_PREFIXES:
            separator = "\n" if line[0] == "+" else line[0]
            line = line[1:].lstrip()
        if not line:
            return Blank()
        if line.startswith("\\"):
            name, _, args = line[1:].partition(" ")
            verb = _LONG.get(name)
        else:
            name, args = line[0], line[1:]
            verb = _SHORT.get(name)
        args = args.strip()
        command: Command
        if verb == "get_pos":
            command = GetPosition()
        elif verb == "set_pos":
            values = [parse_float(v) for v in args.split()]
            if len(values) != 2 or values[0] is None or values[1] is None:
                command = Unknown(f"P {args}", known=True)
                return Extended(command, separator, args) if separator else command
            command = SetPosition(AzEl(values[0], values[1]))
        elif verb == "stop":
            command = Stop()
        elif verb == "park":
            command = Park()
        elif verb == "dump_state":
            command = DumpState()
        elif verb == "quit":
            command = Quit()
        else:
            command = Unknown(line, known=name in _KNOWN)
        return Extended(command, separator, args) if separator else command

    def replies(self, command: Command, mount: Mount) -> list[Reply]:
        if isinstance(command, Extended):
            return self.replies(command.command, mount)
        if isinstance(command, Unknown):
            if command.known and command.text.startswith("P"):
                return [Rejected(RIG_EINVAL)]
            if self.silent_unknown:
                return []
        return super().replies(command, mount)

    def encode(self, reply: Reply) -> bytes:
        match reply:
            case Position(position=p):
                return f"{p.az_deg:.2f}\n{p.el_deg:.2f}\n".encode()
            case Ok():
                return b"RPRT 0\n"
            case Rejected(code=code):
                return f"RPRT {code}\n".encode()
            case State(limits=limits, south_zero=south_zero):
                return (
                    f"{PROTOCOL_VERSION}\n1\n{_limits_text(limits)}"
                    f"south_zero={int(south_zero)}\nrot_type=AzEl\ndone\n"
                ).encode()
        return b""

    def respond(self, command: Command, mount: Mount) -> bytes:
        if not isinstance(command, Extended):
            return super().respond(command, mount)
        replies = self.replies(command.command, mount)
        sep = command.separator
        name = _verb_name(command.command)
        head = f"{name}: {command.args}" if command.args else f"{name}:"
        lines = [head]
        code = 0
        for reply in replies:
            if isinstance(reply, Position):
                lines += [f"Azimuth: {reply.position.az_deg:.2f}"]
                lines += [f"Elevation: {reply.position.el_deg:.2f}"]
            elif isinstance(reply, Rejected):
                code = reply.code
            elif isinstance(reply, State):
                lines += self.encode(reply).decode().splitlines()
        lines.append(f"RPRT {code}")
        return (sep.join(lines) + "\n").encode()

    def reset(self) -> None:
        self._lines.reset()


def _verb_name(command: Command) -> str:
    match command:
        case GetPosition():
            return "get_pos"
        case SetPosition():
            return "set_pos"
        case Stop():
            return "stop"
        case Park():
            return "park"
        case DumpState():
            return "dump_state"
        case Quit():
            return "quit"
    return "unknown"


__all__ = ["DEFAULT_PORT", "RotctldClient", "RotctldDevice"]
