"""Cascade: efficiency on ≥ 10^6-bit batches, agreement of leakage counts, transcripts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import (
    CascadeQuery,
    CascadeReply,
    decode_message,
    encode_message,
)
from groundkey_protocol.qkd.cascade import (
    _WORD_READ,
    CascadeAlice,
    CascadeBob,
    _block_parities,
    _xor_prefix,
    cascade_schedule,
)
from groundkey_protocol.qkd.reconcile import (
    ReconcileAlice,
    ReconcileBob,
    ReconcileParams,
    Transcript,
    create_reconciler,
    run_pair,
)


def h2(q: float) -> float:
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


def bsc_batch(frames: int, n: int, qber: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, (frames, n), dtype=np.uint8)
    errors = (rng.random((frames, n)) < qber).astype(np.uint8)
    return alice, alice ^ errors, float(errors.mean())


def reconcile(
    method: str, alice_bits: np.ndarray, bob_bits: np.ndarray, qber: float
) -> tuple[ReconcileAlice, ReconcileBob, Transcript]:
    params = ReconcileParams(method=method, qber=qber, seed=11, block_id="blk")
    alice = create_reconciler("alice", alice_bits, params)
    bob = create_reconciler("bob", bob_bits, params)
    assert isinstance(alice, ReconcileAlice)
    assert isinstance(bob, ReconcileBob)
    transcript = run_pair(alice, bob)
    return alice, bob, transcript


@pytest.mark.parametrize(
    ("frame_bits", "qber", "f_max"),
    [
        (10_000, 0.01, 1.10),
        (10_000, 0.02, 1.10),
        (10_000, 0.05, 1.10),
        (100_000, 0.01, 1.07),
        (100_000, 0.02, 1.07),
        (100_000, 0.05, 1.07),
    ],
)
def test_yan_efficiency_on_megabit_batches(frame_bits: int, qber: float, f_max: float) -> None:
    frames = 1_000_000 // frame_bits
    a, b, actual = bsc_batch(frames, frame_bits, qber, seed=frame_bits + int(qber * 1000))
    alice, bob, transcript = reconcile("cascade-yan", a, b, actual)
    disclosed = int(bob.disclosed_bits.sum())
    f = disclosed / (a.size * h2(actual))
    fer = float((bob.corrected_bits != a).any(axis=1).mean())
    print(f"yan n={frame_bits} Q={qber}: f={f:.4f} FER={fer:.4f} messages={len(transcript)}")
    assert f <= f_max
    assert fer <= 0.05
    np.testing.assert_array_equal(alice.disclosed_bits, bob.disclosed_bits)
    # frames advance on their own and the tail asks several levels at once: the
    # whole batch needs a few hundred round trips (one wave per pass took ~900)
    assert len(transcript) <= 600


@pytest.mark.parametrize(("method", "f_max"), [("cascade-biconf", 1.12), ("cascade-original", 1.3)])
def test_other_variants_correct_errors(method: str, f_max: float) -> None:
    a, b, actual = bsc_batch(20, 10_000, 0.03, seed=3)
    _, bob, _ = reconcile(method, a, b, actual)
    f = bob.disclosed_bits.sum() / (a.size * h2(actual))
    fer = float((bob.corrected_bits != a).any(axis=1).mean())
    print(f"{method}: f={f:.4f} FER={fer:.3f}")
    assert f <= f_max
    assert fer <= 0.2 if method == "cascade-original" else fer == 0.0


def test_transcript_carries_exactly_the_counted_parities() -> None:
    a, b, actual = bsc_batch(8, 4_000, 0.04, seed=5)
    alice, bob, transcript = reconcile("cascade-yan", a, b, actual)
    replies = [m for who, m in transcript.messages if isinstance(m, CascadeReply)]
    assert all(who == "alice" for who, m in transcript.messages if isinstance(m, CascadeReply))
    assert sum(r.count for r in replies) == int(bob.disclosed_bits.sum())
    assert int(alice.disclosed_bits.sum()) == int(bob.disclosed_bits.sum())
    assert alice.done
    assert bob.done
    assert bob.messages_sent + alice.messages_sent == len(transcript)
    # every message survives the wire encoding unchanged
    for _, message in transcript.messages:
        assert decode_message(encode_message(message)) == message


def test_no_parity_is_asked_twice() -> None:
    a, b, actual = bsc_batch(6, 20_000, 0.03, seed=7)
    _, bob, transcript = reconcile("cascade-yan", a, b, actual)
    ranges = []
    tops = []
    for _, m in transcript.messages:
        if isinstance(m, CascadeQuery):
            cols = [np.frombuffer(m.frames, "<u4"), np.frombuffer(m.passes, "u1")]
            cols += [np.frombuffer(m.starts, "<u4"), np.frombuffer(m.stops, "<u4")]
            ranges.append(np.stack([c.astype(np.int64) for c in cols], axis=1))
            if m.top_pass >= 0:
                rows = np.frombuffer(m.top_frames, "<u4").tolist() or list(range(6))
                tops += [(m.top_pass, row) for row in rows]
    asked = np.concatenate(ranges)
    assert len(np.unique(asked, axis=0)) == len(asked)
    assert len(set(tops)) == len(tops)  # each frame's top level of a pass once
    assert (bob.corrected_bits == a).all()


def test_frames_advance_independently() -> None:
    """A clean frame next to noisy ones discloses only its top-level parities."""
    a, b, _ = bsc_batch(4, 10_000, 0.03, seed=9)
    b[0] = a[0]
    params_qber = 0.03
    _, bob, transcript = reconcile("cascade-yan", a, b, params_qber)
    schedule = cascade_schedule("cascade-yan", params_qber, 10_000)
    nblocks = [-(-10_000 // p.block_bits) for p in schedule]
    tops_only = nblocks[0] + sum(nb - 1 for nb in nblocks[1:])
    assert bob.disclosed_bits[0] == tops_only
    assert (bob.disclosed_bits[1:] > tops_only).all()
    assert (bob.corrected_bits == a).all()
    assert len(transcript) < 400


def test_schedules_follow_the_references() -> None:
    yan = cascade_schedule("cascade-yan", 0.02, 100_000)
    assert [p.block_bits for p in yan] == [40, 200] + [50_000] * 8
    orig = cascade_schedule("cascade-original", 0.01, 10_000)
    assert [p.block_bits for p in orig] == [73, 146, 292, 584]
    biconf = cascade_schedule("cascade-biconf", 0.05, 10_000)
    assert [p.block_bits for p in biconf] == [19, 57]


def test_no_errors_and_tiny_frames() -> None:
    a, _, _ = bsc_batch(3, 2, 0.0, seed=1)
    _, bob, _ = reconcile("cascade-yan", a, a.copy(), 0.01)
    np.testing.assert_array_equal(bob.corrected_bits, a)
    a, b, actual = bsc_batch(5, 37, 0.1, seed=2)
    _, bob, _ = reconcile("cascade-yan", a, b, max(actual, 0.01))
    assert bob.disclosed_bits.min() > 0


def test_alice_rejects_out_of_range_queries() -> None:
    a, _, _ = bsc_batch(2, 100, 0.0, seed=1)
    alice = CascadeAlice(a, ReconcileParams(method="cascade-yan", qber=0.02, seed=1, block_id="b"))
    bad = CascadeQuery(
        block_id="b",
        step=1,
        frames=np.array([0], "<u4").tobytes(),
        passes=np.array([0], "u1").tobytes(),
        starts=np.array([5], "<u4").tobytes(),
        stops=np.array([500], "<u4").tobytes(),
    )
    with pytest.raises(ProtocolError):
        alice.receive(bad)
    with pytest.raises(ProtocolError):
        alice.receive(CascadeQuery(block_id="other", step=1))
    with pytest.raises(ProtocolError):
        alice.receive(CascadeQuery(block_id="b", step=1, frames=b"\x00\x00\x00"))


@pytest.mark.parametrize("frame_bits", [1_000, 1_003])
def test_bob_range_parities_follow_his_flips(frame_bits: int) -> None:
    """Bob's range parities from his rows in pass order (word reads of many bits, bit
    reads of few) equal a direct count on his current bits, after his flips."""
    a, b, actual = bsc_batch(6, frame_bits, 0.05, seed=7)
    params = ReconcileParams(method="cascade-yan", qber=actual, seed=4, block_id="w")
    bob = CascadeBob(b, params)
    run_pair(CascadeAlice(a, params), bob)
    bits = bob.corrected_bits
    assert bob.flips > 0
    rng = np.random.default_rng(9)
    count = 600  # enough bits in total for the word reads
    f = rng.integers(0, 6, count)
    q = rng.integers(0, 4, count)
    s = rng.integers(0, frame_bits - 1, count)
    lengths = np.minimum(rng.integers(1, 120, count), frame_bits - s)
    rows = q * 6 + f
    bob._rows.make(rows)
    start = rows * frame_bits + s
    got = bob._rows.parities(start, lengths)
    assert lengths.sum() >= _WORD_READ
    few = [bob._rows.parities(start[i : i + 1], lengths[i : i + 1]) for i in range(count)]
    np.testing.assert_array_equal(np.concatenate(few), got)
    for i in range(count):
        order = bob._passes.perm(int(q[i]))[s[i] : s[i] + lengths[i]]
        assert got[i] == int(bits[f[i], order].sum()) & 1


@pytest.mark.parametrize(
    ("n", "k"), [(1, 1), (9, 4), (1_003, 40), (1_000, 40), (960, 64), (800, 200)]
)
def test_block_parities_match_direct_sums(n: int, k: int) -> None:
    bits = np.random.default_rng(n + k).integers(0, 2, (3, n), dtype=np.uint8)
    want = [[int(row[b : b + k].sum()) & 1 for b in range(0, n, k)] for row in bits]
    np.testing.assert_array_equal(_block_parities(bits, k), np.array(want, dtype=np.uint8))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1_003, 100_000])
def test_word_prefix_xor_matches_running_xor(n: int) -> None:
    bits = np.random.default_rng(n).integers(0, 2, (3, n), dtype=np.uint8)
    np.testing.assert_array_equal(_xor_prefix(bits), np.bitwise_xor.accumulate(bits, axis=1))
