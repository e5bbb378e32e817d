"""PTU T2 files built from the documented layout decode to exactly the times written."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundkey_protocol.devices import ptu
from groundkey_protocol.errors import ProtocolError


def hh_records(events: list[tuple[str, int, int]], wrap: int, v1: bool = False) -> bytes:
    """Encode (kind, channel, absolute ticks) as HydraHarp T2, inserting overflows."""
    out = []
    ovf = 0
    for kind, chan, ticks in events:
        need = ticks // wrap - ovf
        if need > 0:
            if v1:
                out.extend([(1 << 31) | (63 << 25)] * need)
            else:
                out.append((1 << 31) | (63 << 25) | need)
            ovf += need
        tt = ticks - ovf * wrap
        special = 0 if kind == "photon" else 1
        out.append((special << 31) | (chan << 25) | tt)
    return struct.pack(f"<{len(out)}I", *out)


def build_file(record_type: int, records: bytes, resolution_s: float) -> bytes:
    return ptu.encode_header(record_type, len(records) // 4, resolution_s) + records


@pytest.mark.parametrize(
    ("record_type", "wrap", "v1"),
    [
        (ptu.RT_HYDRAHARP_V2_T2, ptu.HH_WRAP_V2, False),
        (ptu.RT_GENERIC_T2, ptu.HH_WRAP_V2, False),
        (ptu.RT_HYDRAHARP_V1_T2, ptu.HH_WRAP_V1, True),
    ],
)
def test_hydraharp_and_generic_t2_decode_exactly(record_type: int, wrap: int, v1: bool) -> None:
    rng = np.random.default_rng(4)
    ticks = np.sort(rng.integers(0, 40 * wrap, 3000))
    ticks[1500:1510] += 9 * wrap  # a long quiet gap: multi-overflow (or repeated v1)
    ticks.sort()
    kinds = rng.choice(["photon", "sync", "marker"], len(ticks), p=[0.8, 0.15, 0.05])
    chans = [
        int(rng.integers(0, 8)) if k == "photon" else 0 if k == "sync" else int(rng.integers(1, 16))
        for k in kinds
    ]
    events = list(zip(kinds, chans, ticks.tolist(), strict=True))
    header, ev = ptu.decode_file(build_file(record_type, hh_records(events, wrap, v1), 1e-12))
    assert header.record_type == record_type
    np.testing.assert_array_equal(ev.timestamps_ps, ticks)
    want_kind = np.array([{"photon": 0, "sync": 1, "marker": 2}[k] for k in kinds])
    np.testing.assert_array_equal(ev.kinds, want_kind)
    want_ch = np.array([c + 1 if k == "photon" else c for k, c in zip(kinds, chans, strict=True)])
    np.testing.assert_array_equal(ev.channels, want_ch)


def test_picoharp_t2_with_4ps_resolution_and_markers() -> None:
    recs = [
        (2 << 28) | 100,  # channel 2 at tick 100
        (0xF << 28) | 0,  # overflow
        (0xF << 28) | (5000 << 4) | 0x4,  # marker 4 at tick PH_WRAP + (5000<<4 | 4)
        (1 << 28) | 7,
    ]
    data = build_file(ptu.RT_PICOHARP_T2, struct.pack("<4I", *recs), 4e-12)
    _, ev = ptu.decode_file(data)
    np.testing.assert_array_equal(
        ev.timestamps_ps,
        np.array([100, ptu.PH_WRAP + ((5000 << 4) | 4), ptu.PH_WRAP + 7]) * 4,
    )
    np.testing.assert_array_equal(ev.kinds, [0, 2, 0])
    np.testing.assert_array_equal(ev.channels, [3, 4, 2])


def test_chunked_decoding_carries_overflow() -> None:
    events = [("photon", 1, t) for t in range(0, 30 * ptu.HH_WRAP_V2, ptu.HH_WRAP_V2 // 3)]
    records = hh_records(events, ptu.HH_WRAP_V2)
    dec = ptu.T2Decoder(ptu.RT_HYDRAHARP_V2_T2, 1e-12)
    parts = [dec.decode(records[i : i + 40]) for i in range(0, len(records), 40)]
    got = np.concatenate([p.timestamps_ps for p in parts])
    np.testing.assert_array_equal(got, [t for _, _, t in events])


def test_header_tags_and_errors() -> None:
    data = build_file(ptu.RT_HYDRAHARP_V2_T2, b"", 1e-12)
    header = ptu.parse_header(data)
    assert header.tags["File_Comment"] == "groundkey"
    assert header.global_resolution_s == 1e-12
    assert header.num_records == 0
    with pytest.raises(ProtocolError, match="magic"):
        ptu.parse_header(b"NOTAPTU!" + bytes(100))
    with pytest.raises(ProtocolError, match="Header_End"):
        ptu.parse_header(data[:100])
    with pytest.raises(ProtocolError, match="record type"):
        ptu.T2Decoder(0x00010303, 1e-12)
    with pytest.raises(ProtocolError, match="fewer"):
        ptu.decode_file(ptu.encode_header(ptu.RT_GENERIC_T2, 10, 1e-12))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_header_parser(data: bytes) -> None:
    try:
        ptu.decode_file(ptu.MAGIC + data)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(ptu.T2_RECORD_TYPES))
def test_fuzz_records(body: bytes, record_type: int) -> None:
    try:
        ev = ptu.T2Decoder(record_type, 1e-12).decode(body)
    except ProtocolError:
        return
    assert len(ev.timestamps_ps) == len(ev.kinds) == len(ev.channels)
    assert (np.diff(ev.timestamps_ps) > -(1 << 28)).all()
