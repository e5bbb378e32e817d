"""Clocks: the one source of "now" for everything time-dependent.

In service the daemon uses :class:`WallClock`. Demos and tests use a
:class:`SimClock`: simulated time runs ``speed`` times faster than the wall clock
from a shared anchor, so a daemon and a simulator in different processes that
are handed the same spec string agree on simulated time to within their wall
clocks' agreement.

Spec strings (``Clock.from_spec``)::

    wall
    sim:EPOCH[,speed=S][,anchor=UNIX_WALL_SECONDS]

``EPOCH`` is ISO-8601 UTC, the simulated time at wall time ``anchor`` (default:
the moment the spec is parsed; pass an explicit anchor to share a clock across
processes, :meth:`SimClock.spec` always does).
"""

from __future__ import annotations

import abc
import datetime as dt
import time

from groundkey_protocol.errors import ProtocolError

UTC = dt.UTC


def parse_utc(text: str) -> dt.datetime:
    """Parse an ISO-8601 timestamp; naive means UTC. Raises ValueError naming the text."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"not an ISO-8601 UTC time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_utc(value: dt.datetime) -> str:
    """ISO-8601 UTC with a ``Z`` suffix and millisecond precision."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Clock(abc.ABC):
    """Source of the current time, in UTC seconds since the Unix epoch."""

    speed: float = 1.0

    @abc.abstractmethod
    def now_s(self) -> float:
        """Current (possibly simulated) time as Unix seconds."""

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now_s(), tz=UTC)

    def wall_delay_s(self, sim_delay_s: float) -> float:
        """Wall-clock seconds to wait for ``sim_delay_s`` of this clock to pass."""
        return max(0.0, sim_delay_s) / self.speed

    def wall_delay_until_s(self, when_s: float) -> float:
        """Wall-clock seconds to wait until this clock reads ``when_s``."""
        return self.wall_delay_s(when_s - self.now_s())

    @abc.abstractmethod
    def spec(self) -> str:
        """A string that :meth:`from_spec` turns back into an equivalent clock."""

    @staticmethod
    def from_spec(spec: str) -> Clock:
        text = spec.strip()
        if text == "wall":
            return WallClock()
        if not text.startswith("sim:"):
            raise ProtocolError(f"clock spec must be 'wall' or 'sim:EPOCH[,...]', got {spec!r}")
        fields = text[4:].split(",")
        try:
            epoch = parse_utc(fields[0])
        except ValueError as exc:
            raise ProtocolError(f"clock spec {spec!r}: {exc}") from None
        speed = 1.0
        anchor: float | None = None
        for item in fields[1:]:
            key, _, value = item.partition("=")
            try:
                if key == "speed":
                    speed = float(value)
                elif key == "anchor":
                    anchor = float(value)
                else:
                    raise ProtocolError(f"clock spec {spec!r}: unknown field {key!r}")
            except ValueError:
                raise ProtocolError(f"clock spec {spec!r}: {key} is not a number") from None
        return SimClock(epoch=epoch, speed=speed, anchor_wall_s=anchor)


class WallClock(Clock):
    """The system's UTC clock."""

    def now_s(self) -> float:
        return time.time()

    def spec(self) -> str:
        return "wall"

    def __repr__(self) -> str:
        return "WallClock()"


class SimClock(Clock):
    """Simulated time: ``epoch + speed * (wall_now - anchor)``."""

    def __init__(
        self, *, epoch: dt.datetime, speed: float = 1.0, anchor_wall_s: float | None = None
    ) -> None:
        if not speed > 0:
            raise ProtocolError(f"clock speed must be positive, got {speed}")
        self.epoch_s = epoch.astimezone(UTC).timestamp()
        self.speed = float(speed)
        self.anchor_wall_s = time.time() if anchor_wall_s is None else float(anchor_wall_s)

    def now_s(self) -> float:
        return self.epoch_s + (time.time() - self.anchor_wall_s) * self.speed

    def spec(self) -> str:
        epoch = format_utc(dt.datetime.fromtimestamp(self.epoch_s, tz=UTC))
        return f"sim:{epoch},speed={self.speed:g},anchor={self.anchor_wall_s:.6f}"

    def __repr__(self) -> str:
        return f"SimClock({self.spec()!r})"
