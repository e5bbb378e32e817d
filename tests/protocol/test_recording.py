"""Native recording format: round trip, truncation, corruption, fuzzing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundkey_protocol import recording
from groundkey_protocol.errors import ProtocolError


def sample() -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    ts = np.sort(rng.integers(0, 10**13, 5000))
    ch = rng.integers(1, 6, 5000, dtype=np.uint8)
    blob = recording.encode_meta({"source": "test", "start_utc": "2016-12-19T16:49:58Z"})
    for i in range(0, 5000, 1234):
        blob += recording.encode_tags(ts[i : i + 1234], ch[i : i + 1234])
    return blob, ts, ch


def test_round_trip_is_self_describing() -> None:
    blob, ts, ch = sample()
    meta, got_ts, got_ch, pending = recording.decode(blob)
    assert meta["format"] == "groundkey-tags"
    assert meta["source"] == "test"
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_ch, ch)
    assert pending == 0


def test_truncated_tail_is_reported_not_fatal() -> None:
    blob, ts, _ = sample()
    _, got_ts, _, pending = recording.decode(blob[:-100])
    assert pending > 0
    np.testing.assert_array_equal(got_ts, ts[: len(got_ts)])
    assert len(got_ts) == 4 * 1234


def test_corruption_detected() -> None:
    blob, _, _ = sample()
    bad = bytearray(blob)
    bad[-50] ^= 0xFF
    with pytest.raises(ProtocolError, match="CRC"):
        recording.decode(bytes(bad))
    with pytest.raises(ProtocolError, match="META"):
        recording.decode(recording.encode_tags(np.array([1]), np.array([1])))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_reader(data: bytes) -> None:
    try:
        recording.decode(recording.encode_meta({}) + data)
    except ProtocolError:
        pass
