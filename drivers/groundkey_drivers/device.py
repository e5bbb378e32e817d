"""What every device driver shares: a name, no I/O in the constructor, and
``async with driver:`` to open and (idempotently) close it."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class AsyncDevice(abc.ABC):
    """Base of the Rotator, Detector and TimeTagger interfaces."""

    name: str

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect to the device (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect (idempotent)."""
