"""The async TimeTagger interface and the URL registry."""

from __future__ import annotations

import abc
import importlib
import importlib.metadata
import logging
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from groundkey_drivers.device import AsyncDevice
from groundkey_drivers.errors import TransportURLError
from groundkey_protocol.devices.timetagger import TagBatch

log = logging.getLogger(__name__)

TAGGER_DRIVERS: dict[str, str] = {
    "usbnet": "groundkey_drivers.timetagger.usb:UsbTimeTagger",
    "usb": "groundkey_drivers.timetagger.usb:UsbTimeTagger",
    "file": "groundkey_drivers.timetagger.replay:ReplayTagger",
}


@dataclass(slots=True)
class TaggerStats:
    """What the stream lost, and where: frames (sequence gaps), events (device FIFO),
    transfers (host queue full), plus reconnects after device resets."""

    tags: int = 0
    frames: int = 0
    lost_frames: int = 0
    missed_events: int = 0
    dropped_transfers: int = 0
    reconnects: int = 0


class TimeTagger(AsyncDevice):
    """A time tagger: ``async with`` opens it, :meth:`batches` streams decoded tags."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self.stats = TaggerStats()
        #: the instant (UTC seconds, device clock) tagger time 0 stands for, as the
        #: device reported it after :meth:`start`; None when it does not report it
        self.start_unix_s: float | None = None

    @abc.abstractmethod
    async def start(self) -> None:
        """Start acquisition (the time base restarts at 0; see :attr:`start_unix_s`)."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    async def batches(self) -> AsyncIterator[TagBatch]:
        """Decoded tag batches until the run ends; losses are counted and logged."""
        async for batch in self._batches():
            self.stats.tags += len(batch)
            self.stats.frames += batch.frames
            if batch.lost_frames:
                self.stats.lost_frames += batch.lost_frames
                log.warning("%s: %d frame(s) lost (sequence gap)", self.name, batch.lost_frames)
            if batch.missed_events:
                self.stats.missed_events += batch.missed_events
                log.warning("%s: device missed %d event(s)", self.name, batch.missed_events)
            yield batch
            if batch.ended:
                return

    @abc.abstractmethod
    def _batches(self) -> AsyncIterator[TagBatch]: ...


def open_tagger(url: str, **options: Any) -> TimeTagger:
    """Driver for ``url``: ``usbnet://HOST:PORT``, ``usb://VID:PID[?serial=S]``,
    ``file:///path.ptu|.gkrec[?pace=fast|realtime]``. Does no I/O."""
    scheme = urllib.parse.urlsplit(url).scheme
    target = TAGGER_DRIVERS.get(scheme)
    if target is None:  # third-party drivers: entry point group "groundkey.timetagger"
        for entry in importlib.metadata.entry_points(group="groundkey.timetagger"):
            if entry.name == scheme:
                target = entry.value
    if target is None:
        raise TransportURLError(f"{url}: no time-tagger driver for scheme {scheme!r}")
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    tagger: TimeTagger = cls(url, **options)
    return tagger
