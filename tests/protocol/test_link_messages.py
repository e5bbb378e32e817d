"""Link messages: compact round trips, and a decoder that only ever raises ProtocolError."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import groundkey_protocol.link.messages as messages_mod
from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import (
    AmplifySeed,
    BlockAbort,
    BlockAuth,
    BlockOpen,
    BlockReady,
    CascadeDone,
    CascadeQuery,
    CascadeReply,
    EstimateReply,
    EstimateRequest,
    LinkMessage,
    ReconcileData,
    SiftAnnounce,
    SiftReply,
    VerifyResult,
    VerifyTags,
    decode_message,
    encode_message,
    message_types,
    register_message,
)

SAMPLES: list[LinkMessage] = [
    BlockOpen(block_id="b", pass_id="p1", params='{"eps_sec": 1e-9}'),
    BlockReady(block_id="b", detail="commit"),
    SiftAnnounce(block_id="b", count=2, slots=np.array([5, 9], "<i8").tobytes(), bases=b"\x80"),
    SiftReply(block_id="b", count=2, bases=b"\x40", intensities=b"\x00\x02", sample_seed=7),
    EstimateRequest(block_id="b", z_count=3, z_bits=b"\xa0", sample_count=0, sample_bits=b""),
    EstimateReply(block_id="b", z_errors=[1, 2, 3], sample_errors=0, abort_reason=""),
    CascadeQuery(block_id="b", step=1, top_pass=0),
    CascadeQuery(
        block_id="b",
        step=2,
        frames=b"\x00" * 4,
        passes=b"\x01",
        starts=b"\x00" * 4,
        stops=b"\x02\x00\x00\x00",
    ),
    CascadeReply(block_id="b", step=2, count=1, parities=b"\x80"),
    CascadeDone(block_id="b", disclosed_bits=12),
    ReconcileData(
        block_id="b",
        method="ldpc",
        step=0,
        kind="syndrome",
        arrays={"s": b"\x01"},
        ints={"punctured": 3},
    ),
    VerifyTags(block_id="b", points=[2**64 - 1], tags=b"\x00" * 8),
    VerifyResult(block_id="b", frames=1, ok=b"\x80"),
    AmplifySeed(block_id="b", family="toeplitz", seed_bits=3, seed=b"\xe0", key_bits=2),
    BlockAbort(block_id="b", reason="QBER 0.2 above 0.11"),
    BlockAuth(block_id="b", tag=bytes(range(16))),
    BlockOpen(block_id="b", pass_id="p1", params="{}", pad_keys=["k1", "k2"], pad_key_bytes=32),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: LinkMessage) -> None:
    data = encode_message(message)
    assert decode_message(data) == message
    assert "bytes>" in repr(message) or not any(
        isinstance(getattr(message, f), bytes) for f in message.__struct_fields__
    )


def test_every_type_is_covered_and_tags_are_unique() -> None:
    assert {type(m) for m in SAMPLES} == set(message_types())
    tags = [t.__struct_config__.tag for t in message_types()]
    assert len(tags) == len(set(tags))


def test_encoding_is_compact() -> None:
    reply = CascadeReply(
        block_id="0123456789abcdef0123456789abcdef", step=3, count=800, parities=b"\x55" * 100
    )
    assert len(encode_message(reply)) < 160


def test_registered_types_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messages_mod, "_TYPES", list(messages_mod._TYPES))
    monkeypatch.setattr(messages_mod, "_decoder", None)

    class Ping(LinkMessage, frozen=True, kw_only=True, tag="test.ping"):
        nonce: int

    register_message(Ping)
    assert decode_message(encode_message(Ping(block_id="b", nonce=4))) == Ping(
        block_id="b", nonce=4
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xc1",
        b"\x92\xa1x\xa1b",
        msgspec.msgpack.encode(["sift.reply", "b", "x"]),
        msgspec.msgpack.encode({"t": "cascade.reply"}),
    ],
)
def test_malformed_input_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        message = decode_message(data)
    except ProtocolError:
        return
    assert isinstance(message, LinkMessage)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_fuzz_mutated_messages(message: LinkMessage, data: st.DataObject) -> None:
    raw = bytearray(encode_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        decoded = decode_message(bytes(raw[:cut]))
    except ProtocolError:
        return
    assert isinstance(decoded, LinkMessage)
