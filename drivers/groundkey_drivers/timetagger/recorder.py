"""Append tag batches to a native recording file (the durable spool of raw chunks)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from groundkey_protocol import recording


class Recorder:
    """Appends META/TAGS chunks; each append is one ``write`` (+ fsync if ``durable``)."""

    def __init__(self, path: str, meta: dict[str, Any], *, durable: bool = True) -> None:
        self.path = path
        self.meta = meta
        self.durable = durable
        self._fd = -1

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._fd = fd
        self._write(recording.encode_meta(self.meta))

    def _write(self, data: bytes) -> None:
        os.write(self._fd, data)
        if self.durable:
            os.fsync(self._fd)

    async def append(
        self, timestamps_ps: npt.NDArray[np.int64], channels: npt.NDArray[np.uint8]
    ) -> None:
        await asyncio.to_thread(self._write, recording.encode_tags(timestamps_ps, channels))

    async def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            await asyncio.to_thread(os.close, fd)
