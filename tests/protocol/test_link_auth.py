from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.auth import (
    P127,
    HmacAuth,
    LinkAuthError,
    OtpExhaustedError,
    OtpPool,
    ReplayError,
    ReplayWindow,
    TagMismatchError,
    WegmanCarterAuth,
    poly127_hash,
)

LINK_KEY = bytes(range(32))


def hmac_pair() -> tuple[HmacAuth, HmacAuth]:
    return (
        HmacAuth(LINK_KEY, local="alice", remote="bob"),
        HmacAuth(LINK_KEY, local="bob", remote="alice"),
    )


def wc_pair(n_pads: int = 8, seed: int = 1) -> tuple[WegmanCarterAuth, WegmanCarterAuth]:
    rng = np.random.default_rng(seed)
    hash_key = rng.bytes(16)
    a2b = rng.bytes(16 * n_pads)
    b2a = rng.bytes(16 * n_pads)
    alice = WegmanCarterAuth(
        hash_key, local="alice", remote="bob", send_pads=OtpPool(a2b), recv_pads=OtpPool(b2a)
    )
    bob = WegmanCarterAuth(
        hash_key, local="bob", remote="alice", send_pads=OtpPool(b2a), recv_pads=OtpPool(a2b)
    )
    return alice, bob


@pytest.mark.parametrize("make", [hmac_pair, wc_pair])
def test_roundtrip_both_directions(make: object) -> None:
    alice, bob = make()  # type: ignore[operator]
    for i in range(5):
        assert bob.open(alice.seal(b"sift %d" % i)) == b"sift %d" % i
        assert alice.open(bob.seal(b"ack %d" % i)) == b"ack %d" % i


@pytest.mark.parametrize("make", [hmac_pair, wc_pair])
def test_tampered_frame_rejected(make: object) -> None:
    alice, bob = make()  # type: ignore[operator]
    frame = bytearray(alice.seal(b"bases 0101"))
    frame[13] ^= 0x01  # flip one payload bit
    with pytest.raises(TagMismatchError) as info:
        bob.open(bytes(frame))
    assert info.value.seq == 1
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize("make", [hmac_pair, wc_pair])
def test_tampered_tag_and_header_rejected(make: object) -> None:
    alice, bob = make()  # type: ignore[operator]
    frame = bytearray(alice.seal(b"x"))
    frame[-1] ^= 0x80
    with pytest.raises(TagMismatchError):
        bob.open(bytes(frame))
    frame2 = bytearray(alice.seal(b"y"))
    frame2[11] ^= 0x04  # seq 2 -> 6: header is authenticated
    with pytest.raises(LinkAuthError):
        bob.open(bytes(frame2))


@pytest.mark.parametrize("make", [hmac_pair, wc_pair])
def test_replay_rejected_and_reorder_tolerated(make: object) -> None:
    alice, bob = make()  # type: ignore[operator]
    f1, f2, f3 = (alice.seal(b"m%d" % i) for i in range(3))
    assert bob.open(f1) == b"m0"
    assert bob.open(f3) == b"m2"
    assert bob.open(f2) == b"m1"  # late but inside the window
    for frame in (f1, f2, f3):
        with pytest.raises(ReplayError):
            bob.open(frame)


@pytest.mark.parametrize("make", [hmac_pair, wc_pair])
def test_reflected_frame_rejected(make: object) -> None:
    alice, _ = make()  # type: ignore[operator]
    frame = alice.seal(b"hello")
    with pytest.raises(LinkAuthError):
        alice.open(frame)  # sent back to its author: wrong direction context


def test_failed_verification_burns_the_sequence_number() -> None:
    alice, bob = wc_pair()
    good = alice.seal(b"genuine")
    forged = bytearray(good)
    forged[-3] ^= 0xFF
    with pytest.raises(TagMismatchError):
        bob.open(bytes(forged))
    with pytest.raises(ReplayError):
        bob.open(good)


def test_wegman_carter_consumes_one_pad_per_frame_and_runs_out() -> None:
    alice, bob = wc_pair(n_pads=3)
    assert alice.send_pads.last_seq == 3
    for i in range(3):
        bob.open(alice.seal(b"%d" % i))
    with pytest.raises(OtpExhaustedError):
        alice.seal(b"one too many")
    # refilling both ends with the same fresh key continues the link
    fresh = np.random.default_rng(9).bytes(32)
    alice.send_pads.extend(fresh)
    bob.recv_pads.extend(fresh)
    assert bob.open(alice.seal(b"after refill")) == b"after refill"


def test_wegman_carter_pads_are_erased_after_use() -> None:
    pool = OtpPool(bytes(range(1, 49)))
    first = pool.take(1)
    assert first == bytes(range(1, 17))
    pool.discard_through(1)
    with pytest.raises(ReplayError):
        pool.take(1)
    assert pool.take(2) == bytes(range(17, 33))
    assert "\\x" not in repr(pool)


def test_wegman_carter_tag_is_one_time_padded() -> None:
    """Same message, same hash key, different pads -> unrelated tags."""
    alice, _ = wc_pair()
    a = alice.seal(b"same")
    b = alice.seal(b"same")
    assert a[-16:] != b[-16:]


def test_repr_hides_keys() -> None:
    auth = HmacAuth(LINK_KEY, local="alice", remote="bob")
    assert LINK_KEY.hex() not in repr(auth)
    assert "\\x00\\x01" not in repr(auth)


def test_short_and_foreign_frames() -> None:
    alice, bob = hmac_pair()
    with pytest.raises(ProtocolError):
        bob.open(b"GA")
    with pytest.raises(ProtocolError):
        bob.open(b"XX" + alice.seal(b"p")[2:])
    _, wc_bob = wc_pair()
    with pytest.raises(LinkAuthError, match="scheme"):
        wc_bob.open(alice.seal(b"p"))


def test_replay_window_edges() -> None:
    w = ReplayWindow(size=4)
    for seq in (1, 2, 10):
        w.check(seq)
        w.mark(seq)
    with pytest.raises(ReplayError, match="behind"):
        w.check(6)
    w.check(7)
    with pytest.raises(ReplayError):
        w.check(0)


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=100), b=st.binary(max_size=100))
def test_poly127_distinct_messages_hash_apart(a: bytes, b: bytes) -> None:
    key = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
    if a != b:
        # collisions have probability <= L/p ~ 2^-123 for a random key
        assert poly127_hash(key, a) != poly127_hash(key, b)
    assert 0 <= poly127_hash(key, a) < P127


def test_poly127_padding_distinguishes_trailing_zeros() -> None:
    key = bytes(range(16))
    assert poly127_hash(key, b"\x00" * 15) != poly127_hash(key, b"\x00" * 14)
    assert poly127_hash(key, b"") != poly127_hash(key, b"\x00")


def test_forged_frames_do_not_move_the_window() -> None:
    alice, bob = hmac_pair()
    genuine = alice.seal(b"real")
    forged = bytearray(genuine)
    forged[4:12] = (2**63).to_bytes(8, "big")  # far-future seq with a bogus tag
    with pytest.raises(TagMismatchError):
        bob.open(bytes(forged))
    assert bob.open(genuine) == b"real"  # HMAC: nothing was spent, still accepted


def test_huge_sequence_jump_is_cheap() -> None:
    w = ReplayWindow()
    w.mark(1)
    w.mark(2**62)
    with pytest.raises(ReplayError):
        w.check(1)
    w.check(2**62 + 1)
