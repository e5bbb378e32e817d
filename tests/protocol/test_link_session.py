"""Shared per-block session framing and Wegman–Carter transcript tags (sans-I/O)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from groundkey_protocol.link.messages import BlockAbort, BlockReady, CascadeDone
from groundkey_protocol.link.session import (
    PAD_BYTES,
    BlockOpen,
    BlockSession,
    SessionError,
    pad_key_count,
)

LINK_KEY = bytes(range(32))


def pair(block_id: str) -> tuple[BlockSession, BlockSession]:
    station = BlockSession(
        LINK_KEY, block_id=block_id, local="ground", peer="satellite", initiator=True
    )
    satellite = BlockSession(
        LINK_KEY, block_id=block_id, local="satellite", peer="ground", initiator=False
    )
    return station, satellite


def converse(station: BlockSession, satellite: BlockSession, block_id: str) -> None:
    satellite.open(station.seal(BlockOpen(block_id=block_id, pass_id="p", params="{}")))
    station.open(satellite.seal(BlockReady(block_id=block_id)))
    satellite.open(station.seal(CascadeDone(block_id=block_id, disclosed_bits=123)))


def test_transcript_tags_agree_on_an_honest_exchange() -> None:
    block = str(uuid.uuid4())
    pads = np.random.default_rng(1).bytes(PAD_BYTES)
    station, satellite = pair(block)
    converse(station, satellite, block)
    tag = station.transcript_tag(pads)
    satellite.check_transcript_tag(pads, satellite.open(station.seal(tag)))  # type: ignore[arg-type]
    reply = satellite.transcript_tag(pads)
    station.check_transcript_tag(pads, station.open(satellite.seal(reply)))  # type: ignore[arg-type]
    assert tag.tag != reply.tag  # separate one-time pads per direction
    assert LINK_KEY.hex() not in repr(station)


def test_link_key_holder_who_alters_a_message_fails_the_transcript_tag() -> None:
    """The attacker knows the pre-shared link key, so HMAC passes, but not the pads."""
    block = str(uuid.uuid4())
    pads = np.random.default_rng(2).bytes(PAD_BYTES)
    station, satellite = pair(block)
    satellite.open(station.seal(BlockOpen(block_id=block, pass_id="p", params="{}")))
    satellite.seal(BlockReady(block_id=block))  # swallowed by the attacker ...
    forger = BlockSession(
        LINK_KEY, block_id=block, local="satellite", peer="ground", initiator=False
    )
    station.open(forger.seal(BlockReady(block_id=block, detail="forged")))  # ... HMAC is fine
    tag = station.transcript_tag(pads)
    with pytest.raises(SessionError, match="transcript authentication failed") as info:
        satellite.check_transcript_tag(pads, tag)
    assert info.value.auth_failed
    # and the attacker cannot make up the satellite's tag either
    with pytest.raises(SessionError):
        station.check_transcript_tag(pads, forger.transcript_tag(bytes(PAD_BYTES)))


def test_tags_depend_on_the_pads_and_the_block() -> None:
    block = str(uuid.uuid4())
    station, satellite = pair(block)
    converse(station, satellite, block)
    rng = np.random.default_rng(3)
    pads, other = rng.bytes(PAD_BYTES), rng.bytes(PAD_BYTES)
    with pytest.raises(SessionError):
        satellite.check_transcript_tag(other, station.transcript_tag(pads))
    with pytest.raises(ValueError, match="48 bytes"):
        station.transcript_tag(b"short")


def test_frames_of_other_blocks_replays_and_wrong_keys_abort() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    station, satellite = pair(a)
    frames = station.seal(BlockAbort(block_id=a, reason="x"))
    assert satellite.open(frames) == BlockAbort(block_id=a, reason="x")
    with pytest.raises(SessionError, match="authentication failed"):
        satellite.open(frames)
    _, other = pair(b)
    with pytest.raises(SessionError, match="malformed"):
        other.open(frames)
    with pytest.raises(ValueError, match="another block"):
        station.seal(BlockAbort(block_id=b, reason="x"))


def test_pad_key_count() -> None:
    assert pad_key_count(32) == 2
    assert pad_key_count(16) == 3
    assert pad_key_count(64) == 1
