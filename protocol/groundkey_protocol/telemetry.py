"""Telemetry and key-exchange event schemas (versioned JSON, msgspec).

Every message is a JSON object with a ``type`` tag, a schema version ``v``, the
publishing ``station``, a per-type sequence number ``seq`` (1, 2, ...; a jump
means messages were lost, a repeat means a redelivery) and ``time`` (ISO-8601
UTC). Subscribers must ignore fields they do not know; a new required field or
a changed meaning bumps ``v``. ``docs/telemetry.md`` documents topics and fields.

Key-exchange events carry key IDs, lengths, QBER, secret fraction and ε values;
there is no field that could hold key material.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from groundkey_protocol.clock import format_utc
from groundkey_protocol.errors import ProtocolError

__all__ = [
    "SCHEMA_VERSION",
    "TOPIC_ROOT",
    "CountRates",
    "DetectorReading",
    "DetectorTemps",
    "KeyExchange",
    "PassEvent",
    "Pointing",
    "SequenceTracker",
    "Sequencer",
    "StationStatus",
    "TelemetryMessage",
    "decode",
    "encode",
    "kind",
    "topic",
]

SCHEMA_VERSION = 1
TOPIC_ROOT = "groundkey"


class _Base(msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=False):
    station: str
    seq: int = 0
    time: str = ""
    v: int = SCHEMA_VERSION


StationState = Literal["online", "idle", "tracking", "distilling", "degraded", "offline"]


class StationStatus(_Base, tag="status"):
    """Station presence and state. Retained on MQTT; the broker's will is ``offline``."""

    state: StationState
    version: str = ""
    uptime_s: float = 0.0
    detail: str = ""


class Pointing(_Base, tag="pointing"):
    """Mount position and pointing error (5–10 Hz during a pass)."""

    az_deg: float
    el_deg: float
    target_az_deg: float | None = None
    target_el_deg: float | None = None
    error_deg: float | None = None
    norad_id: int | None = None


class CountRates(_Base, tag="counts"):
    """Detector count rates per channel, Hz, over ``window_s``."""

    rates_hz: dict[str, float]
    window_s: float = 1.0
    coincidences_hz: float | None = None


class DetectorReading(msgspec.Struct, kw_only=True):
    channel: int
    temperature_c: float
    armed: bool = False
    bias_v: float | None = None


class DetectorTemps(_Base, tag="detectors"):
    """Detector temperatures and arm state."""

    detectors: list[DetectorReading]


PassPhase = Literal["scheduled", "aos", "tca", "los", "completed", "aborted"]


class PassEvent(_Base, tag="pass"):
    """Pass lifecycle event; ``aos``/``tca``/``los`` are ISO-8601 UTC predictions."""

    event: PassPhase
    pass_id: str
    satellite: str
    norad_id: int | None = None
    aos: str | None = None
    tca: str | None = None
    los: str | None = None
    max_el_deg: float | None = None
    reason: str = ""


class KeyExchange(_Base, tag="keyexchange"):
    """A key block became available (stored durably) for a partner: metadata only."""

    pass_id: str
    peer: str
    block_id: str
    key_ids: list[str]
    length_bits: int
    qber: float
    secret_fraction: float
    eps_sec: float
    eps_cor: float
    key_bytes: int = 0


TelemetryMessage = StationStatus | Pointing | CountRates | DetectorTemps | PassEvent | KeyExchange

_TYPE_TOPIC: dict[type[_Base], str] = {
    StationStatus: "status",
    Pointing: "pointing",
    CountRates: "counts",
    DetectorTemps: "detectors",
    PassEvent: "pass",
    KeyExchange: "keyexchange",
}
_KINDS = tuple(_TYPE_TOPIC.values())

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(TelemetryMessage)


def kind(message: TelemetryMessage) -> str:
    """Topic suffix (and sequence-number namespace) of a message."""
    return _TYPE_TOPIC[type(message)]


def topic(message: TelemetryMessage) -> str:
    """``groundkey/<station>/<kind>``."""
    return f"{TOPIC_ROOT}/{message.station}/{kind(message)}"


def encode(message: TelemetryMessage) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes | str) -> TelemetryMessage:
    """Decode one message; raises ProtocolError on bad JSON, schema or version."""
    try:
        message: TelemetryMessage = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"bad telemetry message: {exc}", protocol="telemetry") from None
    if message.v != SCHEMA_VERSION:
        raise ProtocolError(
            f"unsupported telemetry schema version {message.v} (know {SCHEMA_VERSION})",
            protocol="telemetry",
        )
    return message


class Sequencer:
    """Stamps messages with per-kind sequence numbers and the time."""

    def __init__(self) -> None:
        self._next: dict[str, int] = dict.fromkeys(_KINDS, 1)

    def stamp(self, message: TelemetryMessage, now_s: float) -> TelemetryMessage:
        k = kind(message)
        seq = self._next[k]
        self._next[k] = seq + 1
        when = format_utc(dt.datetime.fromtimestamp(now_s, tz=dt.UTC))
        stamped: TelemetryMessage = msgspec.structs.replace(message, seq=seq, time=when)
        return stamped


class SequenceTracker:
    """Subscriber-side gap detection per (station, kind).

    ``feed`` returns the number of messages missing before this one (0 when in
    order); duplicates and old messages are counted in ``duplicates`` and return
    0. ``seq == 0`` (the broker-published will) is ignored. A sequence that
    restarts at 1 (publisher restart) resets the stream.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}
        self.missing = 0
        self.duplicates = 0

    def feed(self, message: TelemetryMessage) -> int:
        if message.seq <= 0:
            return 0
        key = (message.station, kind(message))
        last = self._last.get(key)
        if last is None or message.seq == 1:
            self._last[key] = message.seq
            return 0
        if message.seq <= last:
            self.duplicates += 1
            return 0
        gap = message.seq - last - 1
        self._last[key] = message.seq
        self.missing += gap
        return gap
