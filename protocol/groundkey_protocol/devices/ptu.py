"""PicoQuant PTU files: tagged header and T2 records (HydraHarp v1/v2, Generic, PicoHarp).

Header: ``PQTTTR\\0\\0`` magic, 8-byte version, then 48-byte tags (32-byte name, int32
index, uint32 type, 8-byte value or payload length followed by the payload) until
``Header_End``. Records are little-endian uint32. Decoding is vectorized: overflow
corrections come from a cumulative sum, never a per-record loop.

Event kinds in :class:`T2Events`: ``KIND_PHOTON`` (channel = detector channel + 1),
``KIND_SYNC`` (channel 0), ``KIND_MARKER`` (channel = marker bits).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from groundkey_protocol.errors import ProtocolError

PROTOCOL = "ptu"
MAGIC: Final = b"PQTTTR\0\0"

TY_EMPTY8: Final = 0xFFFF0008
TY_BOOL8: Final = 0x00000008
TY_INT8: Final = 0x10000008
TY_BITSET64: Final = 0x11000008
TY_COLOR8: Final = 0x12000008
TY_FLOAT8: Final = 0x20000008
TY_TDATETIME: Final = 0x21000008
TY_FLOAT8ARRAY: Final = 0x2001FFFF
TY_ANSISTRING: Final = 0x4001FFFF
TY_WIDESTRING: Final = 0x4002FFFF
TY_BINARYBLOB: Final = 0xFFFFFFFF
_BLOB_TYPES = {TY_FLOAT8ARRAY, TY_ANSISTRING, TY_WIDESTRING, TY_BINARYBLOB}
_SCALAR_TYPES = {TY_EMPTY8, TY_BOOL8, TY_INT8, TY_BITSET64, TY_COLOR8, TY_FLOAT8, TY_TDATETIME}

RT_PICOHARP_T2: Final = 0x00010203
RT_HYDRAHARP_V1_T2: Final = 0x00010204
RT_HYDRAHARP_V2_T2: Final = 0x01010204
RT_GENERIC_T2: Final = 0x00010207
T2_RECORD_TYPES: Final = (RT_PICOHARP_T2, RT_HYDRAHARP_V1_T2, RT_HYDRAHARP_V2_T2, RT_GENERIC_T2)

HH_WRAP_V2: Final = 33554432
HH_WRAP_V1: Final = 33552000
PH_WRAP: Final = 210698240

KIND_PHOTON: Final = 0
KIND_SYNC: Final = 1
KIND_MARKER: Final = 2

_TAG = struct.Struct("<32siI")

TagValue = int | float | str | bytes | bool | None


@dataclass(frozen=True, slots=True)
class PtuHeader:
    tags: dict[str, TagValue]
    data_offset: int

    @property
    def record_type(self) -> int:
        return int(self._require("TTResultFormat_TTTRRecType"))  # type: ignore[arg-type]

    @property
    def num_records(self) -> int:
        return int(self._require("TTResult_NumberOfRecords"))  # type: ignore[arg-type]

    @property
    def global_resolution_s(self) -> float:
        return float(self._require("MeasDesc_GlobalResolution"))  # type: ignore[arg-type]

    def _require(self, name: str) -> TagValue:
        if name not in self.tags:
            raise ProtocolError(f"header lacks tag {name}", protocol=PROTOCOL)
        return self.tags[name]


def _key(name: str, index: int) -> str:
    return name if index < 0 else f"{name}[{index}]"


def parse_header(data: bytes) -> PtuHeader:
    """Parse the tagged header; ``data_offset`` is where the records begin."""
    if len(data) < 16 or data[:8] != MAGIC:
        raise ProtocolError("not a PTU file (bad magic)", protocol=PROTOCOL, data=data[:16])
    pos = 16
    tags: dict[str, TagValue] = {}
    while True:
        if pos + 48 > len(data):
            raise ProtocolError("header ends before Header_End", protocol=PROTOCOL)
        raw_name, index, typ = _TAG.unpack_from(data, pos)
        name = raw_name.split(b"\0", 1)[0].decode("ascii", "replace")
        raw = data[pos + 40 : pos + 48]
        pos += 48
        value: TagValue
        if typ in _SCALAR_TYPES:
            if typ in (TY_FLOAT8, TY_TDATETIME):
                value = struct.unpack("<d", raw)[0]
            elif typ == TY_BOOL8:
                value = struct.unpack("<q", raw)[0] != 0
            elif typ == TY_EMPTY8:
                value = None
            else:
                value = struct.unpack("<q", raw)[0]
        elif typ in _BLOB_TYPES:
            length = struct.unpack("<q", raw)[0]
            if length < 0 or pos + length > len(data):
                raise ProtocolError(f"tag {name}: bad payload length {length}", protocol=PROTOCOL)
            blob = data[pos : pos + length]
            pos += length
            if typ == TY_ANSISTRING:
                value = blob.split(b"\0", 1)[0].decode("latin-1")
            elif typ == TY_WIDESTRING:
                value = blob.decode("utf-16-le", "replace").split("\0", 1)[0]
            else:
                value = blob
        else:
            raise ProtocolError(f"tag {name}: unknown type 0x{typ:08x}", protocol=PROTOCOL)
        tags[_key(name, index)] = value
        if name == "Header_End":
            return PtuHeader(tags, pos)


def encode_tag(name: str, typ: int, value: TagValue, index: int = -1) -> bytes:
    """One header tag (used by tests and recorders to write PTU files)."""
    head = _TAG.pack(name.encode("ascii"), index, typ)
    if typ in _BLOB_TYPES:
        if isinstance(value, str):
            blob = value.encode("latin-1" if typ == TY_ANSISTRING else "utf-16-le") + b"\0"
        else:
            blob = bytes(value) if isinstance(value, bytes) else b""
        blob += b"\0" * (-len(blob) % 8)
        return head + struct.pack("<q", len(blob)) + blob
    if typ in (TY_FLOAT8, TY_TDATETIME):
        return head + struct.pack("<d", float(value or 0.0))
    return head + struct.pack("<q", int(value or 0))


def encode_header(record_type: int, num_records: int, global_resolution_s: float) -> bytes:
    """A minimal valid PTU header for T2 data."""
    return (
        MAGIC
        + b"1.0.00\0\0"
        + encode_tag("File_Comment", TY_ANSISTRING, "groundkey")
        + encode_tag("TTResultFormat_TTTRRecType", TY_INT8, record_type)
        + encode_tag("TTResult_NumberOfRecords", TY_INT8, num_records)
        + encode_tag("MeasDesc_GlobalResolution", TY_FLOAT8, global_resolution_s)
        + encode_tag("MeasDesc_Resolution", TY_FLOAT8, global_resolution_s)
        + encode_tag("Header_End", TY_EMPTY8, None)
    )


@dataclass(slots=True)
class T2Events:
    timestamps_ps: npt.NDArray[np.int64]
    channels: npt.NDArray[np.uint8]
    kinds: npt.NDArray[np.uint8]


class T2Decoder:
    """Decode T2 records chunk by chunk, carrying the overflow correction across chunks."""

    def __init__(self, record_type: int, global_resolution_s: float) -> None:
        if record_type not in T2_RECORD_TYPES:
            raise ProtocolError(f"unsupported record type 0x{record_type:08x}", protocol=PROTOCOL)
        if not 0 < global_resolution_s < 1:
            raise ProtocolError(f"bad global resolution {global_resolution_s}", protocol=PROTOCOL)
        self.record_type = record_type
        self.resolution_ps = global_resolution_s * 1e12
        self.overflow_ticks = 0
        self._int_res = round(self.resolution_ps)
        self._exact = abs(self.resolution_ps - self._int_res) < 1e-9 and self._int_res > 0

    def decode(self, data: bytes | memoryview | npt.NDArray[np.uint32]) -> T2Events:
        if isinstance(data, np.ndarray):
            rec = data.astype("<u4", copy=False)
        else:
            if len(data) % 4:
                raise ProtocolError("T2 data not a multiple of 4 bytes", protocol=PROTOCOL)
            rec = np.frombuffer(data, dtype="<u4")
        if self.record_type == RT_PICOHARP_T2:
            chan = (rec >> 28).astype(np.int64)
            tt = (rec & 0x0FFFFFFF).astype(np.int64)
            special = chan == 0xF
            marker_bits = tt & 0xF
            ovf = special & (marker_bits == 0)
            ovf_ticks = np.where(ovf, PH_WRAP, 0)
            is_marker = special & ~ovf
            kinds_all = np.where(is_marker, KIND_MARKER, KIND_PHOTON)
            chan_out = np.where(is_marker, marker_bits, chan + 1)
        else:
            special = (rec >> 31).astype(bool)
            chan = ((rec >> 25) & 0x3F).astype(np.int64)
            tt = (rec & 0x1FFFFFF).astype(np.int64)
            ovf = special & (chan == 63)
            if self.record_type == RT_HYDRAHARP_V1_T2:
                ovf_ticks = np.where(ovf, HH_WRAP_V1, 0)
            else:
                ovf_ticks = np.where(ovf, HH_WRAP_V2 * np.maximum(tt, 1), 0)
            is_sync = special & (chan == 0)
            is_marker = special & (chan >= 1) & (chan <= 15)
            bad = special & ~ovf & ~is_sync & ~is_marker
            if np.any(bad):
                raise ProtocolError("special record with reserved channel", protocol=PROTOCOL)
            kinds_all = np.where(is_sync, KIND_SYNC, np.where(is_marker, KIND_MARKER, KIND_PHOTON))
            chan_out = np.where(special, chan, chan + 1)
        cum = np.cumsum(ovf_ticks) + self.overflow_ticks
        if len(cum):
            self.overflow_ticks = int(cum[-1])
        keep = ~ovf
        ticks = cum[keep] + tt[keep]
        if self._exact:
            ts = ticks * self._int_res
        else:
            ts = np.rint(ticks * self.resolution_ps).astype(np.int64)
        return T2Events(ts, chan_out[keep].astype(np.uint8), kinds_all[keep].astype(np.uint8))


def decode_file(data: bytes) -> tuple[PtuHeader, T2Events]:
    """Decode a whole in-memory PTU T2 file."""
    header = parse_header(data)
    body = data[header.data_offset :]
    n = header.num_records
    if n < 0 or len(body) < 4 * n:
        raise ProtocolError(f"file holds fewer than {n} records", protocol=PROTOCOL)
    decoder = T2Decoder(header.record_type, header.global_resolution_s)
    return header, decoder.decode(memoryview(body)[: 4 * n])
