"""Replay a recorded file as a time tagger: PicoQuant PTU (T2) or native ``.gkrec``.

``file:///data/pass.ptu?pace=realtime`` paces batches by their timestamps against the
wall clock; ``pace=fast`` (default) delivers as fast as they are read. PTU sync
records come out on channel 0, detector channels as 1.., markers as 64 + marker.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import IO, Any

import numpy as np

from groundkey_drivers.errors import DeviceError
from groundkey_drivers.timetagger.base import TimeTagger
from groundkey_protocol import recording
from groundkey_protocol.devices import ptu
from groundkey_protocol.devices.timetagger import TagBatch
from groundkey_protocol.errors import ProtocolError

MARKER_BASE = 64


class ReplayTagger(TimeTagger):
    def __init__(
        self, url: str, *, name: str | None = None, read_bytes: int = 4 << 20, **_options: Any
    ) -> None:
        super().__init__(name=name or url)
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        self.path = urllib.parse.unquote(parts.path)
        self.pace = query.get("pace", "fast")
        if self.pace not in ("fast", "realtime"):
            raise DeviceError(f"pace must be fast or realtime, got {self.pace!r}", device=url)
        self.read_bytes = read_bytes
        self._file: IO[bytes] | None = None
        self.meta: dict[str, Any] = {}

    async def open(self) -> None:
        if self._file is None:
            try:
                self._file = await asyncio.to_thread(open, self.path, "rb")
            except OSError as exc:
                raise DeviceError(str(exc), device=self.name) from None

    async def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await asyncio.to_thread(file.close)

    async def start(self) -> None:
        if self._file is None:
            raise DeviceError("not open", device=self.name)
        await asyncio.to_thread(self._file.seek, 0)

    async def stop(self) -> None:
        return None

    async def _read(self, n: int) -> bytes:
        assert self._file is not None
        return await asyncio.to_thread(self._file.read, n)

    async def _batches(self) -> AsyncIterator[TagBatch]:
        if self._file is None:
            raise DeviceError("not open", device=self.name)
        head = await self._read(8)
        await asyncio.to_thread(self._file.seek, 0)
        source = self._ptu() if head == ptu.MAGIC else self._native()
        t0 = time.monotonic()
        first_ps: int | None = None
        async for ts, ch in source:
            if self.pace == "realtime" and len(ts):
                if first_ps is None:
                    first_ps = int(ts[0])
                due = (int(ts[-1]) - first_ps) * 1e-12
                await asyncio.sleep(max(0.0, due - (time.monotonic() - t0)))
            yield TagBatch(ts, ch, frames=1)
        yield TagBatch(np.empty(0, np.int64), np.empty(0, np.uint8), ended=True)

    async def _ptu(self) -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
        data = b""
        while True:
            more = await self._read(self.read_bytes)
            data += more
            try:
                header = ptu.parse_header(data)
                break
            except ProtocolError:
                if not more:
                    raise
        self.meta = {"ptu": {k: v for k, v in header.tags.items() if not isinstance(v, bytes)}}
        decoder = ptu.T2Decoder(header.record_type, header.global_resolution_s)
        left = 4 * header.num_records
        buf = data[header.data_offset :]
        while left > 0:
            if len(buf) < 4:
                more = await self._read(self.read_bytes)
                if not more:
                    raise ProtocolError("file ends before its last record", protocol=ptu.PROTOCOL)
                buf += more
                continue
            usable = min(len(buf) // 4 * 4, left)
            ev = decoder.decode(buf[:usable])
            buf = buf[usable:]
            left -= usable
            ch = np.where(ev.kinds == ptu.KIND_MARKER, ev.channels + MARKER_BASE, ev.channels)
            ch = np.where(ev.kinds == ptu.KIND_SYNC, 0, ch).astype(np.uint8)
            yield ev.timestamps_ps, ch

    async def _native(self) -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
        reader = recording.RecordingReader()
        while more := await self._read(self.read_bytes):
            for chunk in reader.feed(more):
                if chunk.kind == recording.KIND_TAGS:
                    yield chunk.timestamps_ps, chunk.channels
                elif chunk.meta is not None:
                    self.meta = chunk.meta
        if reader.meta is None:
            raise ProtocolError("not a groundkey recording", protocol=recording.PROTOCOL)
