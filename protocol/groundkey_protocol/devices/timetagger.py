"""Wire format of the groundkey USB time tagger (GKTT), and of usbnet, USB forwarded over TCP.

The full description lives in ``docs/timetagger-wire-format.md``; in short:

USB identity: VID 0x1209, PID 0x7474, one configuration, interface 0, bulk IN endpoint
0x81 (max packet 512). Vendor control requests (``bmRequestType`` 0x40 OUT / 0xC0 IN):

======  ==============  ====  ===============================================
bReq    name            dir   wValue / wIndex / data
======  ==============  ====  ===============================================
0x01    IDENTIFY        IN    ASCII ``vendor,model,serial,firmware``
0x02    SET_CHANNELS    OUT   wValue = bit mask of enabled channels (bit n = channel n)
0x03    SET_THRESHOLD   OUT   wIndex = channel, wValue = threshold mV (int16)
0x04    SET_DELAY       OUT   wIndex = channel, data = int32 LE delay in ps
0x05    START           OUT   time base restarts at 0 (STATUS reports when), sequence at 0
0x06    STOP            OUT   -
0x07    STATUS          IN    40 bytes, :data:`STATUS_STRUCT` (older firmware: 32)
0x08    RESET           OUT   the device re-enumerates (the host must reconnect)
0x7F    DEBUG_DROP      OUT   simulator only: wValue frames are silently discarded
======  ==============  ====  ===============================================

Bulk stream: a sequence of frames, each a 24-byte header (:data:`FRAME_HEADER`:
magic ``GKTF``, version 1, flags (1 START, 2 END), reserved u16, ``seq`` u32, ``epoch``
u32, ``n_records`` u32, reserved u32) followed by ``n_records`` little-endian uint64 records::

    bits  0..39  time field (ps, wraps every 2**40 ps = 1.0995 s)
    bits 40..47  channel
    bits 48..55  kind: 0 TAG (rising edge), 1 OVERFLOW (time field = wraps), 2 MISSED
                 (time field = events the device lost on that channel)
    bits 56..63  reserved, 0

``epoch`` is the number of wraps before the frame's first record, so a host that lost
frames still decodes absolute times; inside a frame OVERFLOW records advance the
epoch. ``seq`` increments by one per frame; a gap means frames were lost.

Decoding is vectorized: ``np.frombuffer`` over whole frames, no per-record Python loop.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from groundkey_protocol.errors import ProtocolError

PROTOCOL = "gktt"

VENDOR_ID: Final = 0x1209
PRODUCT_ID: Final = 0x7474
BULK_IN_EP: Final = 0x81
INTERFACE: Final = 0

REQ_OUT: Final = 0x40
REQ_IN: Final = 0xC0
REQ_IDENTIFY: Final = 0x01
REQ_SET_CHANNELS: Final = 0x02
REQ_SET_THRESHOLD: Final = 0x03
REQ_SET_DELAY: Final = 0x04
REQ_START: Final = 0x05
REQ_STOP: Final = 0x06
REQ_STATUS: Final = 0x07
REQ_RESET: Final = 0x08
REQ_DEBUG_DROP: Final = 0x7F

MAGIC: Final = b"GKTF"
VERSION: Final = 1
FLAG_START: Final = 0x01
FLAG_END: Final = 0x02
FRAME_HEADER: Final = struct.Struct("<4sBBHIIII")
HEADER_SIZE: Final = FRAME_HEADER.size  # 24
RECORD_SIZE: Final = 8
MAX_RECORDS: Final = 1 << 20
TIME_BITS: Final = 40
WRAP_PS: Final = 1 << TIME_BITS
TIME_MASK: Final = WRAP_PS - 1
KIND_TAG: Final = 0
KIND_OVERFLOW: Final = 1
KIND_MISSED: Final = 2

#: running, version, mask, seq, frames, tags, missed, start time (µs since the Unix epoch)
STATUS_STRUCT: Final = struct.Struct("<BBHIQQQq")
#: the STATUS reply of firmware without the start-time field (decoded with start 0)
STATUS_STRUCT_V1: Final = struct.Struct("<BBHIQQQ")

Int64Array = npt.NDArray[np.int64]
UInt8Array = npt.NDArray[np.uint8]
UInt64Array = npt.NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class Status:
    """Reply of ``STATUS``.

    ``start_unix_us``: the instant (device clock, µs since the Unix epoch) that
    tagger time 0 of the current or last run stands for; 0 when unknown (never
    started, or firmware that does not report it).
    """

    running: bool
    channel_mask: int
    next_seq: int
    frames_sent: int
    tags_sent: int
    missed_events: int
    start_unix_us: int = 0

    @property
    def start_unix_s(self) -> float | None:
        """``start_unix_us`` in seconds; None when unknown."""
        return self.start_unix_us * 1e-6 if self.start_unix_us else None

    def encode(self) -> bytes:
        return STATUS_STRUCT.pack(
            int(self.running),
            VERSION,
            self.channel_mask,
            self.next_seq & 0xFFFFFFFF,
            self.frames_sent,
            self.tags_sent,
            self.missed_events,
            self.start_unix_us,
        )

    @classmethod
    def decode(cls, data: bytes) -> Status:
        if len(data) == STATUS_STRUCT_V1.size:
            running, _version, mask, seq, frames, tags, missed = STATUS_STRUCT_V1.unpack(data)
            return cls(bool(running), mask, seq, frames, tags, missed)
        if len(data) != STATUS_STRUCT.size:
            raise ProtocolError(
                f"status is {len(data)} bytes, expected {STATUS_STRUCT.size}"
                f" (or {STATUS_STRUCT_V1.size})",
                protocol=PROTOCOL,
            )
        running, _version, mask, seq, frames, tags, missed, start_us = STATUS_STRUCT.unpack(data)
        return cls(bool(running), mask, seq, frames, tags, missed, start_us)


def encode_identify(vendor: str, model: str, serial: str, firmware: str) -> bytes:
    return ",".join((vendor, model, serial, firmware)).encode("ascii")


def decode_identify(data: bytes) -> tuple[str, str, str, str]:
    try:
        parts = data.decode("ascii").split(",")
    except UnicodeDecodeError:
        raise ProtocolError("identify reply is not ASCII", protocol=PROTOCOL, data=data) from None
    if len(parts) != 4:
        raise ProtocolError("identify reply needs 4 fields", protocol=PROTOCOL, data=data)
    return parts[0], parts[1], parts[2], parts[3]


def encode_delay(delay_ps: int) -> bytes:
    return struct.pack("<i", delay_ps)


def decode_delay(data: bytes) -> int:
    if len(data) != 4:
        raise ProtocolError("delay payload must be 4 bytes", protocol=PROTOCOL, data=data)
    return int(struct.unpack("<i", data)[0])


def threshold_to_wvalue(threshold_mv: int) -> int:
    if not -32768 <= threshold_mv <= 32767:
        raise ProtocolError(f"threshold {threshold_mv} mV out of int16", protocol=PROTOCOL)
    return threshold_mv & 0xFFFF


def wvalue_to_threshold(wvalue: int) -> int:
    return wvalue - 0x10000 if wvalue & 0x8000 else wvalue


# --------------------------------------------------------------------------- frames


def encode_frames(
    timestamps_ps: Int64Array,
    channels: UInt8Array,
    *,
    first_seq: int,
    epoch: int,
    records_per_frame: int = 8192,
    start: bool = False,
    end: bool = False,
    missed: dict[int, int] | None = None,
) -> tuple[list[bytes], int, int]:
    """Device side: pack sorted tags into frames. Returns (frames, next_seq, epoch after).

    OVERFLOW records are inserted wherever the 40-bit time field wraps; ``missed``
    (channel -> count) becomes MISSED records at the start of the first frame.
    """
    ts = np.asarray(timestamps_ps, dtype=np.int64)
    ch = np.asarray(channels, dtype=np.uint8)
    hi = ts >> TIME_BITS
    prev = np.empty_like(hi)
    if len(hi):
        prev[0] = epoch
        prev[1:] = hi[:-1]
    jumps = hi - prev
    if np.any(jumps < 0):
        raise ProtocolError("timestamps must be sorted and not before the epoch")
    n_ovf = int(np.count_nonzero(jumps))
    out = np.empty(len(ts) + n_ovf, dtype=np.uint64)
    # Position of each tag once one overflow record precedes every tag that jumps.
    pos = np.arange(len(ts)) + np.cumsum(jumps > 0)
    out[pos] = (
        (ts & TIME_MASK).astype(np.uint64)
        | (ch.astype(np.uint64) << np.uint64(40))
        | np.uint64(KIND_TAG << 48)
    )
    ovf_pos = pos[jumps > 0] - 1
    out[ovf_pos] = jumps[jumps > 0].astype(np.uint64) | np.uint64(KIND_OVERFLOW << 48)
    if missed:
        extra = np.array(
            [
                (count & TIME_MASK) | (chan << 40) | (KIND_MISSED << 48)
                for chan, count in sorted(missed.items())
            ],
            dtype=np.uint64,
        )
        out = np.concatenate([extra, out])
    frames: list[bytes] = []
    seq = first_seq
    cur_epoch = epoch
    is_ovf = (out >> np.uint64(48)) & np.uint64(0xFF) == KIND_OVERFLOW
    wraps = np.where(is_ovf, out & np.uint64(TIME_MASK), np.uint64(0)).astype(np.int64)
    cum = np.cumsum(wraps) + epoch
    n = max(1, records_per_frame)
    for i in range(0, max(len(out), 1), n):
        chunk = out[i : i + n]
        flags = FLAG_START if (start and i == 0) else 0
        if end and i + n >= len(out):
            flags |= FLAG_END
        header = FRAME_HEADER.pack(
            MAGIC, VERSION, flags, 0, seq & 0xFFFFFFFF, cur_epoch & 0xFFFFFFFF, len(chunk), 0
        )
        frames.append(header + chunk.tobytes())
        seq += 1
        if len(chunk):
            cur_epoch = int(cum[i + len(chunk) - 1])
    return frames, seq & 0xFFFFFFFF, cur_epoch


@dataclass(slots=True)
class TagBatch:
    """Decoded tags of one or more frames, plus what the stream said about losses."""

    timestamps_ps: Int64Array
    channels: UInt8Array
    frames: int = 0
    lost_frames: int = 0
    missed_events: int = 0
    restarts: int = 0
    ended: bool = False

    def __len__(self) -> int:
        return len(self.timestamps_ps)


def _empty_batch() -> TagBatch:
    return TagBatch(np.empty(0, np.int64), np.empty(0, np.uint8))


def decode_records(records: bytes | memoryview, epoch: int) -> tuple[Int64Array, UInt8Array, int]:
    """Records of one frame -> (timestamps_ps, channels, missed events). Vectorized."""
    if len(records) % RECORD_SIZE:
        raise ProtocolError("record bytes not a multiple of 8", protocol=PROTOCOL)
    rec = np.frombuffer(records, dtype="<u8")
    kind = (rec >> np.uint64(48)).astype(np.int64)
    if np.any(kind > KIND_MISSED):
        bad = int(kind[kind > KIND_MISSED][0])
        raise ProtocolError(f"unknown record kind 0x{bad:04x}", protocol=PROTOCOL)
    time = (rec & np.uint64(TIME_MASK)).astype(np.int64)
    is_tag = kind == KIND_TAG
    wraps = np.cumsum(np.where(kind == KIND_OVERFLOW, time, 0)) + epoch
    ts = (wraps[is_tag] << TIME_BITS) | time[is_tag]
    ch = ((rec[is_tag] >> np.uint64(40)) & np.uint64(0xFF)).astype(np.uint8)
    missed = int(time[kind == KIND_MISSED].sum())
    return ts, ch, missed


class FrameDecoder:
    """Host side stream decoder: feed bulk transfers, get :class:`TagBatch` es.

    Keeps partial frames across transfers, counts sequence gaps as lost frames and
    raises :class:`ProtocolError` on bytes that are not frames.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._next_seq: int | None = None
        self.frames = 0
        self.lost_frames = 0
        self.missed_events = 0
        self.tags = 0
        self.skipped_bytes = 0
        self._hunting = False

    def reset(self) -> None:
        """Forget partial data and the expected sequence (after a device reconnect)."""
        self._buf.clear()
        self._next_seq = None
        self._hunting = False

    def resync(self) -> None:
        """The stream lost bytes (a dropped transfer): discard the partial frame and skip
        to the next valid frame header; sequence numbers then count the lost frames."""
        self._buf.clear()
        self._hunting = True

    def _hunt(self) -> None:
        while self._hunting:
            idx = self._buf.find(MAGIC)
            if idx < 0:
                keep = len(MAGIC) - 1
                self.skipped_bytes += max(0, len(self._buf) - keep)
                del self._buf[: max(0, len(self._buf) - keep)]
                return
            if len(self._buf) - idx < HEADER_SIZE:
                self.skipped_bytes += idx
                del self._buf[:idx]
                return
            _m, version, _f, reserved, _s, _e, n, reserved2 = FRAME_HEADER.unpack_from(
                self._buf, idx
            )
            if version == VERSION and reserved == 0 and reserved2 == 0 and n <= MAX_RECORDS:
                self.skipped_bytes += idx
                del self._buf[:idx]
                self._hunting = False
            else:
                self.skipped_bytes += idx + 1
                del self._buf[: idx + 1]

    def feed(self, data: bytes | bytearray | memoryview) -> TagBatch:
        self._buf += data
        if self._hunting:
            self._hunt()
        ts_parts: list[Int64Array] = []
        ch_parts: list[UInt8Array] = []
        batch = _empty_batch()
        pos = 0
        buf = self._buf
        view = memoryview(buf)
        try:
            while len(buf) - pos >= HEADER_SIZE:
                magic, version, flags, _r, seq, epoch, n, _r2 = FRAME_HEADER.unpack_from(buf, pos)
                if magic != MAGIC or version != VERSION or n > MAX_RECORDS:
                    raise ProtocolError(
                        "bad frame header", protocol=PROTOCOL, data=bytes(buf[pos : pos + 24])
                    )
                end = pos + HEADER_SIZE + n * RECORD_SIZE
                if end > len(buf):
                    break
                ts, ch, missed = decode_records(view[pos + HEADER_SIZE : end], epoch)
                if flags & FLAG_START:
                    if self._next_seq is not None:
                        batch.restarts += 1
                elif self._next_seq is not None:
                    batch.lost_frames += (seq - self._next_seq) & 0xFFFFFFFF
                self._next_seq = (seq + 1) & 0xFFFFFFFF
                batch.ended = batch.ended or bool(flags & FLAG_END)
                batch.frames += 1
                batch.missed_events += missed
                ts_parts.append(ts)
                ch_parts.append(ch)
                pos = end
        finally:
            view.release()
            del buf[:pos]
        if ts_parts:
            batch.timestamps_ps = ts_parts[0] if len(ts_parts) == 1 else np.concatenate(ts_parts)
            batch.channels = ch_parts[0] if len(ch_parts) == 1 else np.concatenate(ch_parts)
        self.frames += batch.frames
        self.lost_frames += batch.lost_frames
        self.missed_events += batch.missed_events
        self.tags += len(batch)
        return batch


# --------------------------------------------------------------------------- usbnet

USBNET_HEADER: Final = struct.Struct("<IBB")  # length of (op, status, payload), op, status
OP_ENUMERATE: Final = 1
OP_CTRL: Final = 2
OP_BULK_READ: Final = 3
OP_BULK_WRITE: Final = 4
OP_RESET: Final = 5
USB_OK: Final = 0
USB_TIMEOUT: Final = 1
USB_PIPE: Final = 2
USB_NO_DEVICE: Final = 3
USB_IO: Final = 4
CTRL_STRUCT: Final = struct.Struct("<BBHHHI")  # bmRequestType bRequest wValue wIndex wLength ms
BULK_READ_STRUCT: Final = struct.Struct("<BII")  # endpoint, size, timeout ms
BULK_WRITE_STRUCT: Final = struct.Struct("<BI")  # endpoint, timeout ms
MAX_USBNET_MESSAGE: Final = 64 << 20


@dataclass(frozen=True, slots=True)
class UsbnetMessage:
    """One usbnet message (request or reply): an opcode, a status and a payload."""

    op: int
    status: int = USB_OK
    payload: bytes = b""

    def encode(self) -> bytes:
        return USBNET_HEADER.pack(len(self.payload) + 2, self.op, self.status) + self.payload


@dataclass(slots=True)
class UsbnetReader:
    """Sans-I/O splitter of a usbnet byte stream into :class:`UsbnetMessage` s."""

    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[UsbnetMessage]:
        self._buf += data
        out: list[UsbnetMessage] = []
        pos = 0
        while len(self._buf) - pos >= USBNET_HEADER.size:
            length, op, status = USBNET_HEADER.unpack_from(self._buf, pos)
            if length < 2 or length > MAX_USBNET_MESSAGE or not 1 <= op <= OP_RESET:
                raise ProtocolError("bad usbnet header", protocol="usbnet", data=bytes(self._buf))
            end = pos + 4 + length
            if end > len(self._buf):
                break
            out.append(UsbnetMessage(op, status, bytes(self._buf[pos + 6 : end])))
            pos = end
        del self._buf[:pos]
        return out


def encode_descriptors(devices: list[dict[str, Any]]) -> bytes:
    """ENUMERATE reply payload: JSON list of device descriptor dicts (pyusb field names)."""
    return json.dumps(devices).encode()


def decode_descriptors(payload: bytes) -> list[dict[str, Any]]:
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("bad ENUMERATE payload", protocol="usbnet", data=payload) from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ProtocolError("ENUMERATE payload must be a list of objects", protocol="usbnet")
    return value


def device_descriptor(serial_index: int = 3) -> dict[str, Any]:
    """The GKTT device's descriptors as usbnet ENUMERATE sends them."""
    return {
        "device": {
            "bLength": 18,
            "bDescriptorType": 1,
            "bcdUSB": 0x0300,
            "bDeviceClass": 0xFF,
            "bDeviceSubClass": 0,
            "bDeviceProtocol": 0,
            "bMaxPacketSize0": 64,
            "idVendor": VENDOR_ID,
            "idProduct": PRODUCT_ID,
            "bcdDevice": 0x0100,
            "iManufacturer": 1,
            "iProduct": 2,
            "iSerialNumber": serial_index,
            "bNumConfigurations": 1,
        },
        "configuration": {
            "bLength": 9,
            "bDescriptorType": 2,
            "wTotalLength": 25,
            "bNumInterfaces": 1,
            "bConfigurationValue": 1,
            "iConfiguration": 0,
            "bmAttributes": 0x80,
            "bMaxPower": 250,
        },
        "interface": {
            "bLength": 9,
            "bDescriptorType": 4,
            "bInterfaceNumber": INTERFACE,
            "bAlternateSetting": 0,
            "bNumEndpoints": 1,
            "bInterfaceClass": 0xFF,
            "bInterfaceSubClass": 0,
            "bInterfaceProtocol": 0,
            "iInterface": 0,
        },
        "endpoints": [
            {
                "bLength": 7,
                "bDescriptorType": 5,
                "bEndpointAddress": BULK_IN_EP,
                "bmAttributes": 2,
                "wMaxPacketSize": 512,
                "bInterval": 0,
            }
        ],
    }


def string_descriptor(text: str) -> bytes:
    """A USB string descriptor (UTF-16LE); index 0 (LANGID list) is ``b"\\x04\\x03\\x09\\x04"``."""
    body = text.encode("utf-16-le")
    return bytes((len(body) + 2, 3)) + body
