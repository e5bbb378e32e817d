"""The async Rotator interface. Public methods hold the policy (limits, logging,
timeouts, error context); concrete drivers fill the protected hooks."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections import deque
from typing import ClassVar

from groundkey_drivers.device import AsyncDevice
from groundkey_drivers.errors import (
    DeviceDisconnected,
    DeviceError,
    DeviceRejected,
    DeviceTimeout,
    LimitError,
)
from groundkey_drivers.transport import Transport, transport_for_url
from groundkey_protocol.devices.rotator import (
    AzEl,
    Azimuth,
    ClientCodec,
    Command,
    GetPosition,
    Position,
    Prompt,
    Rejected,
    Reply,
    RotatorLimits,
    SetPosition,
    Stop,
)

log = logging.getLogger(__name__)

DEFAULT_LIMITS = RotatorLimits()
DEFAULT_PARK = AzEl(0.0, 90.0)


class Rotator(AsyncDevice):
    """An az/el mount. Constructors do no I/O: ``async with rotator:`` opens it."""

    def __init__(
        self,
        *,
        name: str,
        limits: RotatorLimits = DEFAULT_LIMITS,
        park: AzEl = DEFAULT_PARK,
        slew_rate_deg_s: tuple[float, float] = (6.0, 6.0),
    ) -> None:
        self.name = name
        self.limits = limits
        self.park_position = park
        self.slew_rate_deg_s = slew_rate_deg_s  # (azimuth, elevation), for planning

    async def position(self) -> AzEl:
        """The position the device reports now."""
        return await self._get_position()

    async def point(self, target: AzEl) -> None:
        """Command the mount to ``target``; refused before any byte is sent if out of limits."""
        if not self.limits.contains(target):
            raise LimitError(
                f"target az={target.az_deg:.2f} el={target.el_deg:.2f} outside limits "
                f"az [{self.limits.min_az_deg}, {self.limits.max_az_deg}] "
                f"el [{self.limits.min_el_deg}, {self.limits.max_el_deg}]",
                device=self.name,
                command="point",
            )
        await self._set_position(target)

    async def stop(self) -> None:
        await self._stop()

    async def park(self) -> None:
        await self.point(self.park_position)

    @abc.abstractmethod
    async def _get_position(self) -> AzEl: ...

    @abc.abstractmethod
    async def _set_position(self, target: AzEl) -> None: ...

    @abc.abstractmethod
    async def _stop(self) -> None: ...


class CodecRotator(Rotator):
    """A rotator spoken to through a sans-I/O client codec over a :class:`Transport`.

    Policy lives here: one command at a time, a per-command deadline
    (:class:`DeviceTimeout` naming device and command), error replies as
    :class:`DeviceRejected`, and reconnection with exponential backoff when the
    device vanishes. During an outage a command fails fast with
    :class:`DeviceDisconnected`; once the endpoint is back, the next command
    simply works. Concrete drivers declare the codec and transport defaults.
    """

    codec_class: ClassVar[type[ClientCodec]]
    protocol: ClassVar[str]
    default_baud: ClassVar[int] = 9600
    default_port: ClassVar[int | None] = None
    reconnect_on_timeout: ClassVar[bool] = False

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        limits: RotatorLimits = DEFAULT_LIMITS,
        park: AzEl = DEFAULT_PARK,
        slew_rate_deg_s: tuple[float, float] = (6.0, 6.0),
        timeout_s: float = 2.0,
        reconnect_initial_s: float = 0.1,
        reconnect_max_s: float = 1.0,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            name=name or f"{self.protocol}@{url}",
            limits=limits,
            park=park,
            slew_rate_deg_s=slew_rate_deg_s,
        )
        self.url = url
        self.timeout_s = timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        options: dict[str, object] = {"baud": self.default_baud}
        if self.default_port is not None:
            options["port"] = self.default_port
        self._transport = transport or transport_for_url(url, **options)
        self._codec = self.codec_class()
        self._pending: deque[Reply] = deque()
        self._lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._opened = False
        self._stale = False

    @property
    def connected(self) -> bool:
        return self._transport.is_open

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.url!r})"

    async def open(self) -> None:
        self._opened = True
        if self._transport.is_open:
            return
        try:
            await self._transport.open()
        except DeviceDisconnected as exc:
            raise DeviceDisconnected(str(exc), device=self.name, command="open") from exc
        self._reset_parser()
        log.debug("%s: open (%s)", self.name, self.url)

    async def close(self) -> None:
        self._opened = False
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._transport.close()

    def _reset_parser(self) -> None:
        self._codec.reset()
        self._pending.clear()
        self._stale = False

    # --- reconnection -------------------------------------------------------------

    async def _ensure_connected(self, label: str) -> None:
        if not self._opened:
            raise DeviceDisconnected("not open", device=self.name, command=label)
        if self._transport.is_open:
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            try:  # one immediate attempt, then back off in the background
                async with asyncio.timeout(self.timeout_s):
                    await self._transport.open()
                self._reset_parser()
                log.info("%s: reconnected", self.name)
                return
            except (DeviceDisconnected, TimeoutError):
                self._reconnect_task = asyncio.get_running_loop().create_task(
                    self._reconnect(), name=f"reconnect {self.name}"
                )
        raise DeviceDisconnected("device gone, reconnecting", device=self.name, command=label)

    async def _reconnect(self) -> None:
        delay_s = self.reconnect_initial_s
        while self._opened:
            await asyncio.sleep(delay_s)
            try:
                await self._transport.open()
            except DeviceDisconnected:
                delay_s = min(delay_s * 2.0, self.reconnect_max_s)
                continue
            self._reset_parser()
            log.info("%s: reconnected", self.name)
            return

    # --- one command --------------------------------------------------------------

    async def _transact(self, command: Command, label: str) -> Reply | None:
        """Send ``command``; the reply if the protocol has one.

        A command that did not complete (timeout, cancellation, lost link) leaves the
        exchange ``stale``: before the next command, unread input is dropped and the
        parser reset, and protocols with ``reconnect_on_timeout`` re-open the link so
        that a late reply is never taken for the next answer.
        """
        async with self._lock:
            if self._stale and self.reconnect_on_timeout:
                await self._transport.close()
            await self._ensure_connected(label)
            if self._stale:
                self._transport.discard_input()
                self._reset_parser()
            request = self._codec.encode(command)
            log.debug("%s %s: -> %r", self.name, label, request.data)
            self._stale = True
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._transport.write(request.data)
                    reply = await self._next_reply(label) if request.expects_reply else None
            except TimeoutError:
                raise DeviceTimeout(
                    f"no reply to {request.data!r} within {self.timeout_s:g} s",
                    device=self.name,
                    command=label,
                ) from None
            except DeviceRejected:
                self._stale = False  # a complete (error) reply was read
                raise
            except DeviceDisconnected as exc:
                await self._transport.close()
                raise DeviceDisconnected(str(exc), device=self.name, command=label) from exc
            self._stale = False
            return reply

    async def _next_reply(self, label: str) -> Reply:
        while True:
            while self._pending:
                reply = self._pending.popleft()
                if isinstance(reply, Prompt):
                    continue
                if isinstance(reply, Rejected):
                    raise DeviceRejected(
                        f"device answered error {reply.code} {reply.text!r}",
                        device=self.name,
                        command=label,
                    )
                return reply
            data = await self._transport.read()
            self._pending.extend(self._codec.feed(data))

    # --- default hooks ------------------------------------------------------------

    async def _get_position(self) -> AzEl:
        reply = await self._transact(GetPosition(), "position")
        match reply:
            case Position(position=position):
                return position
            case Azimuth(az_deg=az):  # azimuth-only units
                return AzEl(az, 0.0)
        raise DeviceError(f"unexpected reply {reply!r}", device=self.name, command="position")

    async def _set_position(self, target: AzEl) -> None:
        await self._transact(SetPosition(target), "point")

    async def _stop(self) -> None:
        await self._transact(Stop(), "stop")
