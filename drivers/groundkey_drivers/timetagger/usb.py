"""GKTT USB time tagger on pyusb: libusb (``usb://``) or usbnet (``usbnet://``) backends.

Bulk reads run in a dedicated thread; each transfer goes to the event loop through a
bounded queue (a semaphore of ``queue_transfers`` slots). If the loop does not take
transfers within ``backpressure_s`` the transfer is dropped and counted. A device
that disappears (reset, unplug) is found again, reconfigured and restarted; its
restarted time base is shifted onto the first start's (STATUS reports both starts).
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import numpy as np
import usb.core
import usb.util

from groundkey_drivers.errors import DeviceDisconnected, DeviceError
from groundkey_drivers.timetagger.base import TimeTagger
from groundkey_drivers.usbnet import parse_usb_url
from groundkey_protocol.devices import timetagger as tt

log = logging.getLogger(__name__)


class _Reconnected:
    pass


class _Gap:
    """Transfers were dropped before the next one: the decoder must resync."""


class UsbTimeTagger(TimeTagger):
    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        channels: Sequence[int] = (1, 2, 3, 4, 5),
        thresholds_mv: Mapping[int, int] | None = None,
        delays_ps: Mapping[int, int] | None = None,
        queue_transfers: int = 64,
        transfer_bytes: int = 1 << 20,
        backpressure_s: float = 2.0,
        read_timeout_ms: int = 200,
        reconnect_timeout_s: float = 30.0,
        idle_check_s: float = 1.0,
    ) -> None:
        super().__init__(name=name or url)
        self.url = url
        self.channels = tuple(channels)
        self.thresholds_mv = dict(thresholds_mv or {})
        self.delays_ps = dict(delays_ps or {})
        self.transfer_bytes = transfer_bytes
        self.backpressure_s = backpressure_s
        self.read_timeout_ms = read_timeout_ms
        self.reconnect_timeout_s = reconnect_timeout_s
        self.idle_check_s = idle_check_s
        self._queue_slots = queue_transfers
        self._dev: Any = None
        self._backend: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: asyncio.Queue[bytes | _Gap | _Reconnected | BaseException] | None = None
        self._slots = threading.Semaphore(queue_transfers)
        self._running = False
        self.identity = ""

    # ----------------------------------------------------------------- sync (thread) side

    def _connect(self) -> None:
        backend, vid, pid, serial = parse_usb_url(self.url)
        if backend is not None and self._backend is not None:
            backend = self._backend
        self._backend = backend

        def match(dev: Any) -> bool:
            return serial is None or dev.serial_number == serial

        dev = usb.core.find(backend=backend, idVendor=vid, idProduct=pid, custom_match=match)
        if dev is None:
            raise DeviceDisconnected(f"no device {vid:04x}:{pid:04x}", device=self.name)
        dev.set_configuration()
        raw = dev.ctrl_transfer(tt.REQ_IN, tt.REQ_IDENTIFY, 0, 0, 256, 2000)
        self.identity = ",".join(tt.decode_identify(bytes(raw)))
        mask = sum(1 << c for c in self.channels)
        dev.ctrl_transfer(tt.REQ_OUT, tt.REQ_SET_CHANNELS, mask, 0, None, 2000)
        for chan, mv in self.thresholds_mv.items():
            wvalue = tt.threshold_to_wvalue(mv)
            dev.ctrl_transfer(tt.REQ_OUT, tt.REQ_SET_THRESHOLD, wvalue, chan, None, 2000)
        for chan, delay in self.delays_ps.items():
            dev.ctrl_transfer(tt.REQ_OUT, tt.REQ_SET_DELAY, 0, chan, tt.encode_delay(delay), 2000)
        self._dev = dev

    def _release(self) -> None:
        if self._dev is not None:
            try:
                usb.util.dispose_resources(self._dev)
            except usb.core.USBError:
                pass
            self._dev = None

    def _reader(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._read_loop(loop)
        except Exception as exc:
            log.exception("%s: bulk reader failed", self.name)
            queue = self._queue
            if queue is not None:
                try:
                    loop.call_soon_threadsafe(
                        queue.put_nowait,
                        DeviceError(f"bulk reader failed: {exc}", device=self.name),
                    )
                except RuntimeError:
                    pass

    def _read_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        buf = array.array("B", bytes(self.transfer_bytes))
        view = memoryview(buf)
        queue = self._queue
        assert queue is not None

        gap = False

        def post(item: bytes | _Gap | _Reconnected | BaseException) -> bool:
            nonlocal gap
            if not self._slots.acquire(timeout=self.backpressure_s):
                self.stats.dropped_transfers += 1
                gap = True
                return False
            if gap and isinstance(item, bytes):
                item, gap = _Gap(), False  # the slot carries the gap marker instead
                self.stats.dropped_transfers += 1
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed
                self._stop.set()
            return True

        while not self._stop.is_set():
            try:
                n = self._dev.read(tt.BULK_IN_EP, buf, self.read_timeout_ms)
            except usb.core.USBTimeoutError:
                continue
            except usb.core.USBError as exc:
                if self._stop.is_set():
                    return
                log.warning("%s: device gone (%s); reconnecting", self.name, exc)
                if not self._reconnect():
                    post(DeviceDisconnected("device did not come back", device=self.name))
                    return
                post(_Reconnected())
                continue
            if n:
                post(bytes(view[:n]))

    def _reconnect(self) -> bool:
        self._release()
        deadline = time.monotonic() + self.reconnect_timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self._connect()
                if self._running:
                    self._dev.ctrl_transfer(tt.REQ_OUT, tt.REQ_START, 0, 0, None, 2000)
                return True
            except (usb.core.USBError, DeviceError) as exc:
                log.debug("%s: reconnect failed: %s", self.name, exc)
                self._release()
                self._stop.wait(0.1)
        return False

    # ----------------------------------------------------------------- async side

    async def open(self) -> None:
        if self._dev is None:
            try:
                await asyncio.to_thread(self._connect)
            except usb.core.USBError as exc:
                raise DeviceDisconnected(str(exc), device=self.name) from None
            log.info("%s: opened %s", self.name, self.identity)

    async def close(self) -> None:
        await self._join()
        await asyncio.to_thread(self._release)

    async def _join(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join)

    async def control(
        self,
        request_type: int,
        request: int,
        value: int = 0,
        index: int = 0,
        data_or_length: bytes | int | None = None,
    ) -> bytes:
        """A raw control transfer (returns IN data, b"" for OUT)."""
        if self._dev is None:
            raise DeviceDisconnected("not open", device=self.name)
        dev = self._dev
        try:
            out = await asyncio.to_thread(
                dev.ctrl_transfer, request_type, request, value, index, data_or_length, 2000
            )
        except usb.core.USBError as exc:
            raise DeviceError(str(exc), device=self.name, command=f"0x{request:02x}") from None
        return bytes(out) if request_type & 0x80 else b""

    async def status(self) -> tt.Status:
        return tt.Status.decode(await self.control(tt.REQ_IN, tt.REQ_STATUS, 0, 0, 64))

    async def start(self) -> None:
        await self._join()
        self._stop.clear()
        self._queue = asyncio.Queue()
        self._slots = threading.Semaphore(self._queue_slots)
        self.start_unix_s = None
        await self.control(tt.REQ_OUT, tt.REQ_START)
        # the device tells when its time base started (building a run may take it a
        # while): the host's clock after START returns would be late
        self.start_unix_s = (await self.status()).start_unix_s
        self._running = True
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._reader, args=(loop,), name=f"usb-bulk {self.name}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        self._running = False
        if self._dev is not None:
            await self.control(tt.REQ_OUT, tt.REQ_STOP)

    async def _batches(self) -> AsyncIterator[tt.TagBatch]:
        if self._queue is None:
            raise DeviceError("not started", device=self.name)
        decoder = tt.FrameDecoder()
        queue = self._queue
        shift_ps = 0  # after a reconnect: the restarted time base's start, in ours
        while True:
            try:
                async with asyncio.timeout(self.idle_check_s):
                    item = await queue.get()
            except TimeoutError:
                # quiet: if the device has stopped, its END frame was lost with a dropped
                # transfer; end the stream instead of waiting forever
                if queue.empty() and not (await self.status()).running:
                    log.warning("%s: device stopped; END frame lost", self.name)
                    yield tt.TagBatch(np.empty(0, np.int64), np.empty(0, np.uint8), ended=True)
                    return
                continue
            self._slots.release()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _Gap):
                decoder.resync()
                log.warning("%s: host queue full, transfers dropped", self.name)
                continue
            if isinstance(item, _Reconnected):
                self.stats.reconnects += 1
                decoder.reset()
                log.warning("%s: reconnected after a device reset", self.name)
                shift_ps = await self._restart_shift_ps(shift_ps)
                continue
            batch = decoder.feed(item)
            if shift_ps:
                batch = dataclasses.replace(batch, timestamps_ps=batch.timestamps_ps + shift_ps)
            yield batch

    async def _restart_shift_ps(self, old_ps: int) -> int:
        """The device restarted its time base at 0 on the START after a reconnect: the
        offset of its new start from the first one (:attr:`start_unix_s`), when both
        are known, keeps tag times on the first run's time base."""
        if self.start_unix_s is None:
            return old_ps
        try:
            restarted_s = (await self.status()).start_unix_s
        except DeviceError as exc:
            log.warning("%s: no start time after the reconnect (%s)", self.name, exc)
            return old_ps
        if restarted_s is None:
            return old_ps
        shift_ps = round((restarted_s - self.start_unix_s) * 1e12)
        log.info(
            "%s: time base restarted %.6f s after the first start", self.name, shift_ps * 1e-12
        )
        return shift_ps
