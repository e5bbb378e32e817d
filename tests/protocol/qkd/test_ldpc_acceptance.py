"""Acceptance: efficiency and frame error rate of LDPC reconciliation (issue 5).

What is measured, honestly:

* Frames of 9 000 key bits (10 000-bit codewords), QBER estimate = true QBER.
* ``test_first_message_fer_and_efficiency``: 300 frames per QBER. The first-message
  frame error rate is asserted ≤ 2 % as a point estimate (at a true FER of 10^-2,
  more than 6 failures in 300 has probability ~3 %, so this guards against
  regressions; it does not prove FER ≤ 10^-2 to high confidence). The efficiency
  f = disclosed / (n·h(Q)) is asserted to match the calibrated target of
  :func:`default_efficiency` and to stay below the bounds in ``_F_MAX``. At these
  frame sizes the targets are 1.48 (1 %), 1.4 (2 %), 1.25 (5 %), 1.17 (8 %),
  calibrated on 480 frames each for a first-message FER of ~10^-2 or lower
  (0.2–1 % measured). With 4.5·10^4-bit frames
  (``test_long_frames_reach_the_efficiency_target_at_high_qber``, 80 frames) the
  targets are 1.32 (1 %), 1.27 (2 %), 1.17 (5 %), 1.12 (8 %). The issue's
  f ≤ 1.15 over all of 1–8 % is NOT met: only at ≥ ~6 % with long frames.
* Error floor: the IRA-style codes have low-weight codewords (weight ~16 at
  n = 10^4), so BP occasionally converges to a wrong codeword that meets the
  syndrome (seen ~1 in 300 frames at QBER 8 %, 0 in 200 at 1–5 %). Bob cannot
  see those; verification does, and the test checks that it does. They bound the
  FER after the blind round from below, so FER ≤ 10^-4 after blind rounds is met
  only for frames Bob can flag, not overall.
* ``test_blind_round_rescues_failed_frames``: FER after the blind round cannot
  be measured at 10^-4 in the time budget. Instead the first message is made to
  fail on purpose (true QBER 30 % above the estimate) and we count frames the
  reveal round does not rescue: 0 of the 195 forced failures (42, 73, 80)
  gives P(fail after | fail first) ≤ ~1.5 % (95 %), so with FER₁ ≤ 10^-2 the FER of
  frames Bob can flag is ≤ ~2·10^-4 after the blind round, under harsher
  conditions than normal operation.
"""

from __future__ import annotations

import numpy as np
import pytest

from groundkey_protocol.qkd.ldpc import LdpcAlice, LdpcBob, default_efficiency
from groundkey_protocol.qkd.ldpc.rate import binary_entropy
from groundkey_protocol.qkd.reconcile import ReconcileParams, run_pair
from groundkey_protocol.qkd.verify import poly_hash64

FRAME_BITS = 9_000
_F_MAX = {0.01: 1.5, 0.02: 1.42, 0.05: 1.27, 0.08: 1.19}


def _run(  # type: ignore[no-untyped-def]
    method: str, qber: float, frames: int, true_qber: float, seed: int, frame_bits: int = FRAME_BITS
):
    rng = np.random.default_rng([seed, round(qber * 1e5)])
    alice_bits = rng.integers(0, 2, (frames, frame_bits), dtype=np.uint8)
    bob_bits = alice_bits ^ (rng.random(alice_bits.shape) < true_qber).astype(np.uint8)
    params = ReconcileParams(method=method, qber=qber, seed=seed, block_id="acc")
    alice = LdpcAlice(alice_bits, params, rng=np.random.default_rng(seed))
    bob = LdpcBob(bob_bits, params)
    transcript = run_pair(alice, bob)
    same = (bob.corrected_bits == alice_bits).all(axis=1)
    return alice, bob, transcript, same, alice_bits


@pytest.mark.parametrize("qber", sorted(_F_MAX))
def test_first_message_fer_and_efficiency(qber: float) -> None:
    alice, bob, transcript, same, alice_bits = _run("ldpc-blind", qber, 300, qber, seed=21)
    assert len(transcript) <= 3
    # a first-message frame error: syndrome unmet, or met by a wrong codeword
    first_errors = int((~bob.frame_ok_first | ~same).sum())
    assert first_errors <= 6, f"first-message FER {first_errors / 300:.3f} at QBER {qber}"
    # identical keys or a detected failure (Bob's syndrome check or verification tags)
    points = [0x1234_5678_9ABC_DEF1, 0x0FED_CBA9_8765_4321]
    tags_differ = (poly_hash64(alice_bits, points) != poly_hash64(bob.corrected_bits, points)).any(
        axis=1
    )
    assert np.all(same | ~bob.frame_ok | tags_differ)
    assert np.array_equal(tags_differ, ~same)
    # after the blind round only wrong-codeword decodings remain (error floor)
    assert int((~same).sum()) <= 2
    f_first = bob._setup.plan.efficiency(qber)
    assert f_first == pytest.approx(default_efficiency(qber, FRAME_BITS), abs=0.01)
    f = float(bob.disclosed_bits.sum()) / (
        bob.disclosed_bits.size * FRAME_BITS * binary_entropy(qber)
    )
    assert f <= _F_MAX[qber]
    assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)


@pytest.mark.parametrize("qber", [0.02, 0.05, 0.08])
def test_blind_round_rescues_failed_frames(qber: float) -> None:
    _, bob, transcript, same, _ = _run("ldpc-blind", qber, 80, 1.3 * qber, seed=22)
    assert len(transcript) == 3
    forced = int((~bob.frame_ok_first).sum())
    assert forced >= 25  # the first message really failed often
    assert same.all(), f"{int((~same).sum())} of {forced} forced failures not rescued"
    assert bob.frame_ok.all()


@pytest.mark.parametrize(("qber", "f_max"), [(0.05, 1.18), (0.08, 1.13)])
def test_long_frames_reach_the_efficiency_target_at_high_qber(qber: float, f_max: float) -> None:
    """4.5·10^4-bit frames, 80 per QBER: f ≤ 1.15 at 8 % (≤ 1.18 at 5 %), no frame lost."""
    frame_bits = 45_000
    alice, bob, transcript, same, _ = _run("ldpc-blind", qber, 80, qber, 23, frame_bits)
    assert len(transcript) <= 3
    assert int((~bob.frame_ok_first | ~same).sum()) <= 1
    assert same.all()
    f = float(bob.disclosed_bits.mean()) / (frame_bits * binary_entropy(qber))
    assert f <= f_max
    assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)
