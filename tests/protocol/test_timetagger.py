"""GKTT frame codec: round trips, wraparound, missed events, sequence gaps, fuzzing."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundkey_protocol.devices import timetagger as tt
from groundkey_protocol.errors import ProtocolError


def sorted_tags(n: int, span_ps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, span_ps, n, dtype=np.int64))
    ch = rng.integers(1, 9, n, dtype=np.uint8)
    return ts, ch


def test_round_trip_across_many_wraps_in_one_stream() -> None:
    ts, ch = sorted_tags(50_000, 7 * tt.WRAP_PS + 12345)
    frames, next_seq, epoch = tt.encode_frames(
        ts, ch, first_seq=0, epoch=0, records_per_frame=1000, start=True
    )
    assert next_seq == len(frames)
    assert epoch == ts[-1] >> tt.TIME_BITS
    decoder = tt.FrameDecoder()
    # feed in odd-sized pieces: frames split across bulk transfers
    blob = b"".join(frames)
    batches = [decoder.feed(blob[i : i + 7777]) for i in range(0, len(blob), 7777)]
    got_ts = np.concatenate([b.timestamps_ps for b in batches])
    got_ch = np.concatenate([b.channels for b in batches])
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_ch, ch)
    assert got_ts.dtype == np.int64
    assert got_ch.dtype == np.uint8
    assert decoder.lost_frames == 0
    assert decoder.frames == len(frames)


def test_overflow_record_counts_multiple_wraps_without_tags() -> None:
    ts = np.array([5, 3 * tt.WRAP_PS + 9], dtype=np.int64)  # 3 wraps with no tag between
    frames, _, _ = tt.encode_frames(ts, np.array([1, 2], np.uint8), first_seq=0, epoch=0)
    records = np.frombuffer(frames[0][tt.HEADER_SIZE :], "<u8")
    assert len(records) == 3
    assert records[1] >> np.uint64(48) == tt.KIND_OVERFLOW
    assert records[1] & np.uint64(tt.TIME_MASK) == 3
    np.testing.assert_array_equal(tt.FrameDecoder().feed(frames[0]).timestamps_ps, ts)


def test_lost_frames_counted_and_epoch_header_keeps_time_right() -> None:
    ts, ch = sorted_tags(20_000, 5 * tt.WRAP_PS)
    frames, _, _ = tt.encode_frames(ts, ch, first_seq=100, epoch=0, records_per_frame=500)
    decoder = tt.FrameDecoder()
    kept = frames[:10] + frames[13:]  # frames 10..12 lost on the way
    batch = decoder.feed(b"".join(kept))
    assert batch.lost_frames == 3
    assert decoder.lost_frames == 3
    # every tag that arrived still has its absolute time
    assert np.isin(batch.timestamps_ps, ts).all()
    assert len(batch) == len(ts) - sum(
        int((np.frombuffer(f[tt.HEADER_SIZE :], "<u8") >> np.uint64(48) == 0).sum())
        for f in frames[10:13]
    )


def test_missed_event_records_and_flags() -> None:
    ts = np.array([10, 20], dtype=np.int64)
    frames, _, _ = tt.encode_frames(
        ts,
        np.array([1, 1], np.uint8),
        first_seq=0,
        epoch=0,
        start=True,
        end=True,
        missed={3: 17, 4: 5},
    )
    batch = tt.FrameDecoder().feed(frames[0])
    assert batch.missed_events == 22
    assert batch.ended
    np.testing.assert_array_equal(batch.timestamps_ps, ts)


def test_restart_flag_counts_restart_not_loss() -> None:
    a, _, _ = tt.encode_frames(
        np.array([1], np.int64), np.array([1], np.uint8), first_seq=0, epoch=0, start=True
    )
    b, _, _ = tt.encode_frames(
        np.array([2], np.int64), np.array([1], np.uint8), first_seq=0, epoch=0, start=True
    )
    batch = tt.FrameDecoder().feed(a[0] + b[0])
    assert batch.restarts == 1
    assert batch.lost_frames == 0


def test_bad_bytes_raise_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        tt.FrameDecoder().feed(b"XXXX" + bytes(40))
    bad_kind = struct.pack("<Q", 7 << 48)
    header = tt.FRAME_HEADER.pack(tt.MAGIC, tt.VERSION, 0, 0, 0, 0, 1, 0)
    with pytest.raises(ProtocolError, match="kind"):
        tt.FrameDecoder().feed(header + bad_kind)


def test_status_identify_and_usbnet_codecs() -> None:
    status = tt.Status(True, 0x3E, 7, 7, 1234, 5)
    assert tt.Status.decode(status.encode()) == status
    assert status.start_unix_s is None  # unknown
    started = tt.Status(True, 0x3E, 7, 7, 1234, 5, start_unix_us=1_482_166_198_250_000)
    assert len(started.encode()) == 40
    assert tt.Status.decode(started.encode()) == started
    assert started.start_unix_s == pytest.approx(1_482_166_198.25, abs=1e-6)
    assert tt.decode_identify(tt.encode_identify("a", "b", "c", "d")) == ("a", "b", "c", "d")
    assert tt.wvalue_to_threshold(tt.threshold_to_wvalue(-250)) == -250
    msgs = [tt.UsbnetMessage(tt.OP_CTRL, 0, b"abc"), tt.UsbnetMessage(tt.OP_BULK_READ, 1)]
    blob = b"".join(m.encode() for m in msgs)
    reader = tt.UsbnetReader()
    got = reader.feed(blob[:5]) + reader.feed(blob[5:])
    assert got == msgs


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_frame_decoder_raises_only_protocol_error(data: bytes) -> None:
    try:
        tt.FrameDecoder().feed(data)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.integers(0, 2**32 - 1))
def test_fuzz_valid_header_with_random_records(body: bytes, seq: int) -> None:
    body = body[: len(body) // 8 * 8]
    header = tt.FRAME_HEADER.pack(tt.MAGIC, tt.VERSION, 0, 0, seq, 3, len(body) // 8, 0)
    try:
        batch = tt.FrameDecoder().feed(header + body)
    except ProtocolError:
        return
    assert len(batch.timestamps_ps) == len(batch.channels)
    assert (batch.timestamps_ps >= 3 << tt.TIME_BITS).all()


def test_status_of_firmware_without_the_start_time() -> None:
    """The 32-byte STATUS of older firmware decodes with the start time unknown."""
    legacy = tt.STATUS_STRUCT_V1.pack(1, 1, 0x1E, 9, 9, 4321, 2)
    status = tt.Status.decode(legacy)
    assert status == tt.Status(True, 0x1E, 9, 9, 4321, 2)
    assert status.start_unix_s is None
    with pytest.raises(ProtocolError, match="40"):
        tt.Status.decode(legacy + b"\0")
