"""SPID Rot2Prog and MD-01/02 (Rot2 mode), as Hamlib 4.5.4 speaks them (REFERENCES §1).

Commands are 13 bytes ``57 H1 H2 H3 H4 PH V1 V2 V3 V4 PV K 20`` with K = 0x0F stop,
0x1F status, 0x2F set. A set encodes H = PH*(360+az), V = PV*(360+el) as four ASCII
digits; status and stop frames carry zeros. Replies are 12 bytes
``57 H1 H2 H3 H4 PH V1 V2 V3 V4 PV 20`` with raw digit values 0-9:
az = H1*100 + H2*10 + H3 + H4/10 - 360, and PH/PV the controller's resolution,
which Hamlib reads from a status reply before every set. The original Rot2Prog
does not answer a set; the MD-01/02 answers it with a position frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

from groundkey_protocol.devices.rotator import (
    AzEl,
    ClientCodec,
    Command,
    DeviceCodec,
    GetPosition,
    Mount,
    Position,
    Reply,
    Request,
    SetPosition,
    Stop,
    check_finite,
)
from groundkey_protocol.errors import ProtocolError

START = 0x57
END = 0x20
K_STOP = 0x0F
K_STATUS = 0x1F
K_SET = 0x2F
COMMAND_BYTES = 13
REPLY_BYTES = 12
_DIGITS = bytes(range(0x30, 0x3A))
_MAX_BUFFER = 4096


def status_frame() -> bytes:
    return bytes([START, *([0] * 10), K_STATUS, END])


def stop_frame() -> bytes:
    return bytes([START, *([0] * 10), K_STOP, END])


def set_frame(target: AzEl, resolution: tuple[int, int]) -> bytes:
    """``57 H1..H4 PH V1..V4 PV 2F 20``; Hamlib truncates PH*(360+az) to an integer."""
    ph, pv = resolution
    h = math.floor(ph * (360.0 + target.az_deg) + 1e-9)
    v = math.floor(pv * (360.0 + target.el_deg) + 1e-9)
    if not (0 <= h <= 9999 and 0 <= v <= 9999):
        raise ProtocolError(f"position {target} not encodable", protocol="rot2prog")
    return bytes([START, *f"{h:04d}".encode(), ph, *f"{v:04d}".encode(), pv, K_SET, END])


def position_frame(position: AzEl, resolution: tuple[int, int]) -> bytes:
    """12-byte reply: raw digits of tenths of (360 + angle)."""
    h = round((360.0 + position.az_deg) * 10)
    v = round((360.0 + position.el_deg) * 10)
    h = min(max(h, 0), 9999)
    v = min(max(v, 0), 9999)
    hd = [h // 1000, h // 100 % 10, h // 10 % 10, h % 10]
    vd = [v // 1000, v // 100 % 10, v // 10 % 10, v % 10]
    return bytes([START, *hd, resolution[0], *vd, resolution[1], END])


def _raw_angle(digits: bytes) -> float:
    return digits[0] * 100 + digits[1] * 10 + digits[2] + digits[3] / 10 - 360.0


class _FrameBuffer:
    """Finds valid fixed-size frames starting with 0x57; skips anything else."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf = bytearray()
        self.discarded_bytes = 0

    def frames(self, data: bytes, valid: Callable[[bytes], bool]) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            start = self._buf.find(START)
            if start < 0:
                self.discarded_bytes += len(self._buf)
                self._buf.clear()
                break
            if start:
                self.discarded_bytes += start
                del self._buf[:start]
            if len(self._buf) < self.size:
                break
            frame = bytes(self._buf[: self.size])
            if valid(frame):
                out.append(frame)
                del self._buf[: self.size]
            else:
                self.discarded_bytes += 1
                del self._buf[:1]
        if len(self._buf) > _MAX_BUFFER:
            self._buf.clear()
        return out

    def reset(self) -> None:
        self._buf.clear()


def _valid_reply(frame: bytes) -> bool:
    return (
        frame[11] == END
        and all(b <= 9 for b in frame[1:5])
        and all(b <= 9 for b in frame[6:10])
        and 1 <= frame[5] <= 10
        and 1 <= frame[10] <= 10
    )


def _valid_command(frame: bytes) -> bool:
    if frame[12] != END or frame[11] not in (K_STOP, K_STATUS, K_SET):
        return False
    if frame[11] != K_SET:
        return True
    return (
        all(b in _DIGITS for b in frame[1:5])
        and all(b in _DIGITS for b in frame[6:10])
        and 1 <= frame[5] <= 10
        and 1 <= frame[10] <= 10
    )


class Rot2ProgClient(ClientCodec):
    """Station side. ``resolution`` (PH, PV) is learnt from every position reply and
    must be known before a set can be encoded (query status first, as Hamlib does)."""

    protocol: ClassVar[str] = "rot2prog"
    answers_set: ClassVar[bool] = False

    def __init__(self, resolution: tuple[int, int] | None = None) -> None:
        self.resolution = resolution
        self._frames = _FrameBuffer(REPLY_BYTES)

    def encode(self, command: Command) -> Request:
        match command:
            case GetPosition():
                return Request(status_frame(), True)
            case Stop():
                return Request(stop_frame(), True)
            case SetPosition(target=target):
                check_finite(self.protocol, target)
                if self.resolution is None:
                    raise ProtocolError(
                        "resolution unknown: query the status first", protocol=self.protocol
                    )
                return Request(set_frame(target, self.resolution), self.answers_set)
        raise ProtocolError(f"cannot encode {command!r}", protocol=self.protocol)

    def feed(self, data: bytes) -> list[Reply]:
        replies: list[Reply] = []
        for frame in self._frames.frames(data, _valid_reply):
            resolution = (frame[5], frame[10])
            self.resolution = resolution
            position = AzEl(_raw_angle(frame[1:5]), _raw_angle(frame[6:10]))
            replies.append(Position(position, resolution))
        return replies

    def reset(self) -> None:
        self._frames.reset()


class MD01Client(Rot2ProgClient):
    protocol: ClassVar[str] = "md01"
    answers_set: ClassVar[bool] = True


class Rot2ProgDevice(DeviceCodec):
    """Device side; ``resolution`` is what status replies report (must be non-zero)."""

    protocol: ClassVar[str] = "rot2prog"
    answers_set: ClassVar[bool] = False

    def __init__(self, resolution: tuple[int, int] = (2, 2)) -> None:
        if not all(1 <= r <= 10 for r in resolution):
            raise ProtocolError(f"resolution {resolution} must be 1..10", protocol=self.protocol)
        self.resolution = resolution
        self._frames = _FrameBuffer(COMMAND_BYTES)

    def feed(self, data: bytes) -> list[Command]:
        commands: list[Command] = []
        for frame in self._frames.frames(data, _valid_command):
            if frame[11] == K_STATUS:
                commands.append(GetPosition())
            elif frame[11] == K_STOP:
                commands.append(Stop())
            else:
                az = int(frame[1:5]) / frame[5] - 360.0
                el = int(frame[6:10]) / frame[10] - 360.0
                commands.append(SetPosition(AzEl(az, el)))
        return commands

    def encode(self, reply: Reply) -> bytes:
        if isinstance(reply, Position):
            return position_frame(reply.position, reply.resolution or self.resolution)
        return b""

    def replies(self, command: Command, mount: Mount) -> list[Reply]:
        match command:
            case SetPosition(target=target):
                mount.set_target(target)  # out of limits: ignored, as real units do
                return [Position(mount.position)] if self.answers_set else []
            case Stop():
                mount.stop()
                return [Position(mount.position)]
        return super().replies(command, mount)

    def reset(self) -> None:
        self._frames.reset()


class MD01Device(Rot2ProgDevice):
    protocol: ClassVar[str] = "md01"
    answers_set: ClassVar[bool] = True


__all__ = [
    "MD01Client",
    "MD01Device",
    "Rot2ProgClient",
    "Rot2ProgDevice",
    "position_frame",
    "set_frame",
    "status_frame",
    "stop_frame",
]
