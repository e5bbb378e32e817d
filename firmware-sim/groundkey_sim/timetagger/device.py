"""The GKTT device: vendor control requests in, bulk frames out, fed by a downlink model."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator

import numpy as np

from groundkey_protocol.clock import Clock
from groundkey_protocol.devices import timetagger as tt
from groundkey_sim.downlink import Downlink, TagChunk

log = logging.getLogger(__name__)

STRINGS = {1: "groundkey", 2: "GKTT time tagger (simulated)"}


class DeviceReset(Exception):
    """The device re-enumerates: the server drops the connection."""


class SimTimeTagger:
    """Device-side state machine. ``make_downlink(start_unix_s)`` builds a run on START.

    With ``clock`` None frames are produced as fast as the host reads them; with a
    clock, a chunk is released once the clock has passed its end.
    """

    def __init__(
        self,
        make_downlink: Callable[[float | None], Downlink],
        *,
        clock: Clock | None = None,
        serial: str = "GKTT0001",
        records_per_frame: int = 8192,
        chunk_s: float = 0.05,
    ) -> None:
        self.make_downlink = make_downlink
        self.clock = clock
        self.serial = serial
        self.records_per_frame = records_per_frame
        self.chunk_s = chunk_s
        self.channel_mask = 0xFFFF
        self.thresholds_mv: dict[int, int] = {}
        self.delays_ps: dict[int, int] = {}
        self._reset_run()

    def _reset_run(self) -> None:
        self.running = False
        self.seq = 0
        self.epoch = 0
        self.frames_sent = 0
        self.tags_sent = 0
        self.missed_events = 0
        self.drop_pending = 0
        self.frames_dropped = 0
        self._frames: collections.deque[bytes] = collections.deque()
        self._out = bytearray()
        self._chunks: Iterator[TagChunk] | None = None
        self._t0_unix_s = 0.0
        self._start_flag = False
        self._pending: TagChunk | None = None

    def reset(self) -> None:
        self.channel_mask = 0xFFFF
        self.thresholds_mv.clear()
        self.delays_ps.clear()
        self._reset_run()

    # ----------------------------------------------------------------- control

    def control(
        self, request_type: int, request: int, value: int, index: int, data: bytes, length: int
    ) -> bytes:
        """Handle a control transfer; returns IN data (or b"" for OUT). Raises ValueError
        for a stall (unknown request)."""
        if request_type == 0x80 and request == 6:  # standard GET_DESCRIPTOR
            kind, idx = value >> 8, value & 0xFF
            if kind == 3:
                if idx == 0:
                    return b"\x04\x03\x09\x04"[:length]
                text = self.serial if idx == 3 else STRINGS.get(idx)
                if text is None:
                    raise ValueError("no such string")
                return tt.string_descriptor(text)[:length]
            raise ValueError("descriptor not served over control")
        if request_type == tt.REQ_IN:
            if request == tt.REQ_IDENTIFY:
                return tt.encode_identify("groundkey", "GKTT-SIM", self.serial, "1.0")[:length]
            if request == tt.REQ_STATUS:
                return self.status().encode()[:length]
        elif request_type == tt.REQ_OUT:
            if request == tt.REQ_SET_CHANNELS:
                self.channel_mask = value
                return b""
            if request == tt.REQ_SET_THRESHOLD:
                self.thresholds_mv[index] = tt.wvalue_to_threshold(value)
                return b""
            if request == tt.REQ_SET_DELAY:
                self.delays_ps[index] = tt.decode_delay(data)
                return b""
            if request == tt.REQ_START:
                self.start()
                return b""
            if request == tt.REQ_STOP:
                self.stop()
                return b""
            if request == tt.REQ_RESET:
                raise DeviceReset
            if request == tt.REQ_DEBUG_DROP:
                self.drop_pending += value
                return b""
        raise ValueError(f"unsupported request 0x{request_type:02x}/0x{request:02x}")

    def status(self) -> tt.Status:
        return tt.Status(
            self.running,
            self.channel_mask,
            self.seq,
            self.frames_sent,
            self.tags_sent,
            self.missed_events,
            # without a clock the device does not know when it started
            round(self._t0_unix_s * 1e6) if self.clock is not None else 0,
        )

    def start(self) -> None:
        """Start a run. Tagger time 0 is the clock's instant at START; building the
        downlink model takes a while, so STATUS reports that instant for the host
        (``start_unix_us``), which must not read its own clock after START returns."""
        self._reset_run()
        self.running = True
        self._start_flag = True
        now = self.clock.now_s() if self.clock is not None else None
        downlink = self.make_downlink(now)
        self._t0_unix_s = downlink.start_unix_s
        self._chunks = downlink.chunks(self.chunk_s)
        log.info("tagger started: %r", downlink)

    def stop(self) -> None:
        if self.running:
            self._emit(np.empty(0, np.int64), np.empty(0, np.uint8), end=True)
        self.running = False
        self._chunks = None

    # ----------------------------------------------------------------- stream

    def release_delay_s(self) -> float:
        """Seconds (of the clock) until the next chunk may be released; 0 when it may."""
        if self.clock is None or self._pending is None:
            return 0.0
        due = self._t0_unix_s + self._pending.start_s + self.chunk_s
        return max(0.0, self.clock.wall_delay_until_s(due))

    def _emit(self, ts: np.ndarray, ch: np.ndarray, *, end: bool = False) -> None:
        frames, self.seq, self.epoch = tt.encode_frames(
            ts,
            ch,
            first_seq=self.seq,
            epoch=self.epoch,
            records_per_frame=self.records_per_frame,
            start=self._start_flag,
            end=end,
        )
        self._start_flag = False
        for frame in frames:
            if self.drop_pending > 0:
                self.drop_pending -= 1
                self.frames_dropped += 1
                continue
            self._frames.append(frame)
            self.frames_sent += 1
        self.tags_sent += len(ts)

    def produce(self) -> bool:
        """Generate the next chunk's frames if it is due. False when nothing is due."""
        if not self.running or self._chunks is None:
            return False
        if self._pending is None:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                self.stop()
                return True
        if self.release_delay_s() > 0:
            return False
        chunk, self._pending = self._pending, None
        ts, ch = chunk.timestamps_ps, chunk.channels
        keep = ((self.channel_mask >> ch.astype(np.int64)) & 1).astype(bool)
        ts, ch = ts[keep], ch[keep]
        if self.delays_ps:
            delay = np.zeros(256, np.int64)
            for c, d in self.delays_ps.items():
                delay[c & 0xFF] = d
            ts = np.maximum(ts + delay[ch], 0)
            order = np.argsort(ts, kind="stable")
            ts, ch = ts[order], ch[order]
        self._emit(ts, ch)
        return True

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the frame stream (frames may span transfers)."""
        while len(self._out) < size and (self._frames or self.produce()):
            while self._frames and len(self._out) < size:
                self._out += self._frames.popleft()
        data = bytes(self._out[:size])
        del self._out[:size]
        return data
