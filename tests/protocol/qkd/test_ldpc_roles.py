"""LDPC Alice/Bob behind the reconciliation interface: messages, leakage, errors."""

from __future__ import annotations

import numpy as np
import pytest

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import ReconcileData, decode_message, encode_message
from groundkey_protocol.qkd.ldpc import MOTHER_RATES, LdpcAlice, LdpcBob
from groundkey_protocol.qkd.ldpc.rate import (
    DELTA,
    FRAME_PLAN,
    SHORT_DELTA_MIN_FRAME_BITS,
    binary_entropy,
    code_length,
    default_delta,
    default_efficiency,
    frame_bits_for,
    mother_rates_for,
    plan_rate,
)
from groundkey_protocol.qkd.ldpc.roles import TAG_BITS
from groundkey_protocol.qkd.reconcile import ReconcileParams, create_reconciler, run_pair
from groundkey_protocol.qkd.verify import poly_hash64


def _pair(
    method: str, qber: float, frames: int, frame_bits: int, *, true_qber: float | None = None
) -> tuple[LdpcAlice, LdpcBob, np.ndarray]:
    rng = np.random.default_rng([frames, frame_bits, round(qber * 1e4)])
    alice_bits = rng.integers(0, 2, (frames, frame_bits), dtype=np.uint8)
    q = qber if true_qber is None else true_qber
    bob_bits = alice_bits ^ (rng.random(alice_bits.shape) < q).astype(np.uint8)
    params = ReconcileParams(method=method, qber=qber, seed=11, block_id="blk")
    alice = LdpcAlice(alice_bits, params, rng=np.random.default_rng(1))
    return alice, LdpcBob(bob_bits, params), alice_bits


def test_plan_puts_almost_everything_in_shortening() -> None:
    for frame_bits in (900, 9_000, 45_000, 100_000):
        n = code_length(frame_bits)
        assert n % 200 == 0
        assert n >= frame_bits / (1 - default_delta(frame_bits))
        if frame_bits >= SHORT_DELTA_MIN_FRAME_BITS:  # δ = 0.01: ~two lifting factors
            assert DELTA == 0.01
            assert n - frame_bits < 3 * (n // 200)
        for q in (0.005, 0.02, 0.05, 0.08, 0.11):
            plan = plan_rate(frame_bits, q, efficiency=1.2)
            assert plan.punctured + plan.shortened == n - frame_bits
            assert 0.45 - 1e-9 <= plan.mother_rate <= 0.95
            if 0.01 <= q <= 0.1:  # inside the range of mother rates: on target
                assert 0 <= plan.punctured < n // 200  # less than one block row
                assert plan.efficiency(q) == pytest.approx(1.2, abs=1.0 / (frame_bits * 0.05))


def test_frame_plan_uses_longer_frames_at_low_qber() -> None:
    """Both ends derive the frame size from the agreed QBER alone; the longer frames
    at QBER <= 2.5 % are what brings f to <= 1.15 there (1.4546·10^6-bit codewords up
    to 1.5 %, 3.64·10^5 up to 2.5 %)."""
    assert [frame_bits_for(q) for q in (0.005, 0.01, 0.015)] == [1_440_000] * 3
    assert [frame_bits_for(q) for q in (0.016, 0.02, 0.025)] == [360_000] * 3
    assert [frame_bits_for(q) for q in (0.026, 0.03, 0.05, 0.08, 0.11)] == [90_000] * 5
    assert FRAME_PLAN[-1][0] >= 0.5
    assert code_length(360_000) == 363_800
    assert code_length(1_440_000) == 1_454_600
    for q in (0.01, 0.015, 0.02, 0.025):
        bits = frame_bits_for(q)
        f = default_efficiency(q, bits)
        assert f <= 1.15
        assert f < default_efficiency(q, 90_000)
        plan = plan_rate(bits, q)
        assert plan.n == code_length(bits)
        assert plan.efficiency(q) == pytest.approx(f, abs=1e-3)
    # the daemon's code cache builds, per planned size, the mother rates it is used with
    assert mother_rates_for(1_440_000) == (0.9,)
    assert mother_rates_for(360_000) == (0.8,)
    assert mother_rates_for(90_000) == (0.8, 0.7, 0.6, 0.5)
    assert mother_rates_for(50_000) == MOTHER_RATES
    # a block too short for one planned frame is one shorter frame: its target lies
    # between the columns of the sizes around it
    assert (
        default_efficiency(0.01, 1_440_000)
        < default_efficiency(0.01, 700_000)
        < default_efficiency(0.01, 360_000)
    )


def test_registered_ldpc_round_trip_over_the_wire_codec() -> None:
    """The registry builds the roles; every message survives msgpack encoding."""
    rng = np.random.default_rng(2)
    alice_bits = rng.integers(0, 2, (4, 5_000), dtype=np.uint8)
    bob_bits = alice_bits ^ (rng.random(alice_bits.shape) < 0.03).astype(np.uint8)
    params = ReconcileParams(method="ldpc", qber=0.03, seed=1, block_id="b1")
    alice = create_reconciler("alice", alice_bits, params)
    bob = create_reconciler("bob", bob_bits, params)
    pending = alice.start()
    assert bob.start() == []
    assert len(pending) == 1
    assert alice.done
    wire = decode_message(encode_message(pending[0]))
    assert bob.receive(wire) == []
    assert bob.done
    assert np.array_equal(bob.corrected_bits, alice_bits)  # type: ignore[attr-defined]
    assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)
    assert "syndrome" in repr(wire)
    assert "bytes>" in repr(wire)


def test_blind_round_trip_counts_every_revealed_bit() -> None:
    # QBER estimate 25 % below the truth: many frames fail the first message
    alice, bob, alice_bits = _pair("ldpc-blind", 0.04, 24, 9_000, true_qber=0.05)
    transcript = run_pair(alice, bob)
    assert len(transcript) == 3
    kinds = [m.kind for _, m in transcript.messages]  # type: ignore[attr-defined]
    assert kinds == ["syndrome", "reveal-request", "reveal"]
    failed_first = ~bob.frame_ok_first
    assert failed_first.any()
    assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)
    plan = bob._setup.plan
    # per failed frame: the punctured symbols and the key bits Bob asked for (the
    # positions his decoder flipped, plus a tranche for frames far from converging)
    revealed = np.zeros(bob.frames, dtype=np.int64)
    for row, keys in zip(bob._failed, bob._revealed, strict=True):
        revealed[row] = plan.punctured + keys.size
    assert np.all(revealed[failed_first] > plan.punctured)
    expected = plan.syndrome_leak_bits + TAG_BITS + revealed
    assert np.array_equal(bob.disclosed_bits, expected)
    assert np.array_equal(bob.corrected_bits, alice_bits)
    assert bob.frame_ok.all()


def test_blind_round_reveals_the_checks_a_trapped_frame_left_unmet() -> None:
    """A 3.6·10^5-bit frame at QBER 1 % on which BP ends two checks short (a
    trapping set; found in a 512-frame run): revealing only the bits the decoder
    flipped left it two checks short again; the key bits of the unmet checks free it."""
    rng = np.random.default_rng([1, 86, 1000])
    alice_bits = rng.integers(0, 2, (4, 360_000), dtype=np.uint8)
    bob_bits = alice_bits ^ (rng.random(alice_bits.shape) < 0.01).astype(np.uint8)
    qber = float((alice_bits != bob_bits).mean())
    params = ReconcileParams(method="ldpc-blind", qber=qber, seed=1, block_id="trap")
    alice = LdpcAlice(alice_bits, params, rng=np.random.default_rng(86))
    bob = LdpcBob(bob_bits, params)
    run_pair(alice, bob)
    assert not bob.frame_ok_first[3]
    assert bob._unmet_checks[3].size == 2  # the trapped frame (the test's premise)
    unmet_keys = bob._setup.check_keys(bob._unmet_checks[3])
    assert 2 <= unmet_keys.size <= 2 * 100  # ~73 key bits per check at rate 0.9
    revealed = bob._revealed[list(bob._failed).index(3)]
    assert np.isin(unmet_keys, revealed).all()
    assert np.array_equal(bob.corrected_bits, alice_bits)
    assert bob.frame_ok.all()
    assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)


def test_blind_with_no_failure_takes_two_messages() -> None:
    alice, bob, alice_bits = _pair("ldpc-blind", 0.03, 4, 9_000)
    transcript = run_pair(alice, bob)
    assert [m.kind for _, m in transcript.messages] == ["syndrome", "done"]  # type: ignore[attr-defined]
    assert alice.done
    assert bob.done
    assert np.array_equal(bob.corrected_bits, alice_bits)


def test_key_material_stays_out_of_reprs() -> None:
    alice, bob, _ = _pair("ldpc", 0.02, 2, 2_000)
    (message,) = alice.start()
    for text in (repr(alice), repr(bob), repr(message)):
        assert "syndrome=" not in text or "bytes>" in text
        assert len(text) < 300


def test_malformed_messages_raise_protocol_error() -> None:
    alice, bob, _ = _pair("ldpc-blind", 0.02, 2, 2_000)
    (syndrome,) = alice.start()
    assert isinstance(syndrome, ReconcileData)
    short = ReconcileData(
        block_id="blk",
        method="ldpc-blind",
        step=0,
        kind="syndrome",
        arrays={"syndrome": syndrome.arrays["syndrome"][:-1]},
        ints=dict(syndrome.ints),
    )
    with pytest.raises(ProtocolError, match="syndrome"):
        bob.receive(short)
    wrong_code = ReconcileData(
        block_id="blk",
        method="ldpc-blind",
        step=0,
        kind="syndrome",
        arrays=dict(syndrome.arrays),
        ints={**syndrome.ints, "m": 1},
    )
    with pytest.raises(ProtocolError, match="code parameters"):
        bob.receive(wrong_code)
    no_tags = ReconcileData(
        block_id="blk",
        method="ldpc-blind",
        step=0,
        kind="syndrome",
        arrays={"syndrome": syndrome.arrays["syndrome"], "tags": b"\0\0\0"},
        ints=dict(syndrome.ints),
    )
    with pytest.raises(ProtocolError, match="tags"):
        bob.receive(no_tags)
    bad_request = ReconcileData(
        block_id="blk",
        method="ldpc-blind",
        step=1,
        kind="reveal-request",
        arrays={"frames": np.array([7], dtype="<u4").tobytes()},
        ints={"count": 3},
    )
    with pytest.raises(ProtocolError, match="reveal request"):
        alice.receive(bad_request)
    with pytest.raises(ProtocolError, match="block"):
        alice.receive(ReconcileData(block_id="other", method="ldpc-blind", step=1, kind="done"))


@pytest.mark.parametrize("qber", [0.005, 0.01, 0.02, 0.05, 0.08])
def test_identical_keys_or_detected_failure(qber: float) -> None:
    """Every frame ends identical to Alice's or flagged: by Bob (syndrome unmet) or by
    the verification tags (a wrong codeword that meets the syndrome)."""
    for method in ("ldpc", "ldpc-blind"):
        alice, bob, alice_bits = _pair(method, qber, 16, 9_000)
        transcript = run_pair(alice, bob)
        assert len(transcript) <= 3
        same = (bob.corrected_bits == alice_bits).all(axis=1)
        points = [0x9E37_79B9_7F4A_7C15]
        tags_differ = (
            poly_hash64(alice_bits, points) != poly_hash64(bob.corrected_bits, points)
        ).any(axis=1)
        assert np.all(same | ~bob.frame_ok | tags_differ)
        assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)
        f = bob.disclosed_bits.mean() / (9_000 * binary_entropy(qber))
        assert 1.0 < f < 2.5


def _gf2_rank(matrix: np.ndarray) -> int:
    a = matrix.astype(bool).copy()
    rank = 0
    for col in range(a.shape[1]):
        rows = np.flatnonzero(a[rank:, col]) + rank
        if rows.size == 0:
            continue
        a[[rank, rows[0]]] = a[[rows[0], rank]]
        below = np.flatnonzero(a[:, col])
        below = below[below != rank]
        a[below] ^= a[rank]
        rank += 1
        if rank == a.shape[0]:
            break
    return rank


@pytest.mark.parametrize("mother_rate", [0.9, 0.6])
def test_punctured_columns_are_independent_so_leakage_is_m_minus_p(mother_rate: float) -> None:
    """The syndrome leaks m - p bits only if the punctured columns have full rank."""
    from groundkey_protocol.qkd.ldpc.codes import get_code
    from groundkey_protocol.qkd.ldpc.rate import RatePlan, plan_positions

    code = get_code(mother_rate, 2_000)
    p = code.m // 2  # the most puncturing a plan ever uses
    plan = RatePlan(mother_rate, code.n, code.m, code.n - p, p, 0)
    pos = plan_positions(code, plan, seed=3)
    checks, variables = code.edges
    h = np.zeros((code.m, code.n), dtype=np.uint8)
    h[checks, variables] = 1
    assert _gf2_rank(h[:, pos.punctured]) == p
    # and at most one punctured symbol per check ("untainted")
    assert h[:, pos.punctured].sum(axis=1).max() <= 1


def test_check_tag_flags_a_frame_whose_word_is_not_alices() -> None:
    """Bob trusts a frame only if the syndrome AND Alice's check tag match: a frame
    whose tag does not (as after BP converged to a wrong codeword) is flagged and,
    in blind mode, gets the reveal round."""
    alice, bob, alice_bits = _pair("ldpc-blind", 0.02, 6, 9_000)
    (message,) = alice.start()
    assert isinstance(message, ReconcileData)
    tags = np.frombuffer(message.arrays["tags"], dtype="<u4").copy()
    assert np.array_equal(tags, bob._setup.tags(alice_bits))
    tags[3] ^= 1
    tampered = ReconcileData(
        block_id="blk",
        method="ldpc-blind",
        step=0,
        kind="syndrome",
        arrays={**message.arrays, "tags": tags.astype("<u4").tobytes()},
        ints=dict(message.ints),
    )
    (request,) = bob.receive(tampered)
    assert isinstance(request, ReconcileData)
    assert request.kind == "reveal-request"
    assert np.frombuffer(request.arrays["frames"], dtype="<u4").tolist() == [3]
    assert np.flatnonzero(~bob.frame_ok_first).tolist() == [3]
    (reveal,) = alice.receive(request)
    assert bob.receive(reveal) == []
    assert np.array_equal(bob.corrected_bits, alice_bits)
    assert np.flatnonzero(~bob.frame_ok).tolist() == [3]
    assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)
    assert np.all(bob.disclosed_bits >= bob._setup.plan.syndrome_leak_bits + TAG_BITS)


def test_check_tags_differ_for_nearby_words() -> None:
    """Low-weight differences (what a wrong codeword leaves in the key) change the tag."""
    _, bob, alice_bits = _pair("ldpc", 0.02, 1, 9_000)
    rng = np.random.default_rng(9)
    words = np.repeat(alice_bits, 200, axis=0)
    for row in range(200):
        words[row, rng.choice(9_000, size=1 + row % 12, replace=False)] ^= 1
    tags = bob._setup.tags(words)
    assert not np.any(tags == bob._setup.tags(alice_bits)[0])
