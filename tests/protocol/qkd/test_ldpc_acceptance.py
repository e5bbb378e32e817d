"""Acceptance: efficiency and frame error rate of LDPC reconciliation (issue 5).

What is measured, honestly (QBER estimate = true QBER, deterministic seeds):

* ``test_efficiency_and_fer_at_the_frame_plan``: frames of
  :func:`frame_bits_for` key bits: 1.44·10^6 (1.4546·10^6-bit codewords) at QBER 1 %,
  3.6·10^5 (3.64·10^5-bit codewords) at 2 %, 9·10^4 (9.1·10^4-bit codewords) at 3, 5
  and 8 %; 8.64·10^6 key bits per QBER (6, 24 or 96 frames), blind mode (at most
  three messages). f = disclosed / (n·h(Q)) counts the syndrome (the first-message
  efficiency of :func:`default_efficiency`), the 32-bit check tag per frame
  (+0.0003 in f at 1 % on 1.44·10^6 bits, +0.0009 at 8 % on 9·10^4) and the
  reveals. Asserted: f ≤ 1.15 at 1, 2, 3, 5 and 8 %. The syndrome efficiencies
  were calibrated for a first-message FER ≤ ~10^-2 (decoder-level runs of the
  protocol's frames, /tmp scripts; the seed places the shortened symbols): 1.13 at
  1 % on 1.44·10^6-bit frames (1/144; 1.125: 1/48; 1.12: 0/12; 1.10: 8/12), 1.126
  –1.13 at 1.1–1.5 % (0/32 at 1.1 %, 0/48 at 1.2 %, 0/32 at 1.35 %, 0/48 at 1.4 %
  and at 1.5 %; at 1.4 %, f 1.122 failed 2/48; construction 7, whose rates
  0.88–0.895 take the rate-0.85 degree profile: with the rate-0.9 one, 4/16 failed
  at 1.2 % and 5/16 at 1.4 %), 1.125 at 2 % on 3.6·10^5 (1.12: 4/576), 1.13 at
  3 % (0/384), 1.12 at 5 %, 1.10 at 8 %. Through the roles at 1 %, 48 frames of
  1.44·10^6 bits: none failed, mean f 1.1303 with the tag. First-message failures
  are asserted ≤ 1 of 6 or 24, 2 of 96 (a regression guard: so few frames cannot
  show FER ≤ 10^-2 to high confidence), and every frame must end identical to
  Alice's.
  At 1 % the rate-0.91 code's threshold is f ≈ 1.10–1.11 and 3.6·10^5-bit frames
  sit far above it (f 1.12: 12/48 failed, 1.145: 7/512 through the roles), hence
  the longer frames there.
* ``test_first_message_on_1e4_bit_frames``: 10^4-bit codewords keep working
  (300 frames per QBER, syndrome efficiency as calibrated for 9·10^3-bit frames:
  1.48, 1.4, 1.25, 1.17; the 32-bit tag adds 0.044 at 1 %, 0.011 at 8 %; measured
  f = 1.579, 1.425, 1.264, 1.179 with blind reveals), identical keys or a detected
  failure (Bob's syndrome and tag checks, or the verification tags) for every frame.
* ``test_blind_round_rescues_failed_frames``: FER after the blind round cannot
  be measured at 10^-4 in the time budget. Instead the first message is made to
  fail on purpose (true QBER 30 % above the estimate) and we count frames the
  reveal round does not rescue: none of 199 forced failures, i.e.
  P(fail after | fail first) ≤ ~1.5 % (95 %), so with FER₁ ≤ 10^-2 the FER after
  the blind round is ≤ ~2·10^-4, under harsher conditions than normal operation.
* Error floor: the degree-2 information columns of rates 0.75–0.925 close cycles
  of degree-2 variables, i.e. low-weight codewords (lifted girth 7–12; construction
  6 no longer puts two of them on one pair of block rows, which closed 4- and
  6-cycles). BP rarely ends on one now (none in the runs below); the syndrome
  cannot reveal a wrong codeword, the per-frame check tag does (see
  test_ldpc_roles), and the blind round's reveal fixes it.
* Larger runs (not tests: /tmp scripts through the roles, blind mode, QBER
  estimate = truth, δ = 0.01): first-message failures / frames and mean f
  including tags and reveals: 1 %: 7/512, 1.156 (3.6·10^5-bit frames); 1.5 %:
  1/256, 1.146; 2 %: 1/512, 1.126; 3 %: 1/512, 1.133 (9·10^4); 5 %: 0/512,
  1.121; 8 %: 0/512, 1.101; none undetected. Of the 7 at 1 %, 5 were far from
  converging (a third of the checks unmet) and 2 ended two checks short
  (trapping sets). One of those was still two checks short after the blind round
  (a detected failure); the blind round now also reveals the key bits of such a
  frame's unmet checks, which frees it (test_ldpc_roles,
  test_blind_round_reveals_the_checks_a_trapped_frame_left_unmet). With δ = 0.1
  the same run gave 10/512 and f 1.158. A failed frame costs ~0.2–0.9 in f (its
  reveals), so at 1 % the mean sits ~0.01 above the first-message f. Before
  (9·10^4-bit frames, construction 5, fixed tranche): 1.23 at 1 %, 1.158 at 2 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from groundkey_protocol.qkd.ldpc import LdpcAlice, LdpcBob, default_efficiency
from groundkey_protocol.qkd.ldpc.rate import binary_entropy, code_length, frame_bits_for
from groundkey_protocol.qkd.reconcile import ReconcileParams, run_pair
from groundkey_protocol.qkd.verify import poly_hash64

SHORT_FRAME_BITS = 9_000
#: Key bits per QBER point: 96 frames of 9·10^4 bits, 24 of 3.6·10^5 or 6 of 1.44·10^6.
_LONG_BITS = 96 * 90_000
_F_MAX_SHORT = {0.01: 1.6, 0.02: 1.45, 0.05: 1.3, 0.08: 1.22}
#: Issue 5 target f ≤ 1.15 over 1–8 %.
_F_MAX_LONG = {0.01: 1.15, 0.02: 1.15, 0.03: 1.15, 0.05: 1.15, 0.08: 1.15}
_POINTS = [0x1234_5678_9ABC_DEF1, 0x0FED_CBA9_8765_4321]


def _run(  # type: ignore[no-untyped-def]
    method: str, qber: float, frames: int, true_qber: float, seed: int, frame_bits: int
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


def _efficiency(bob: LdpcBob, qber: float) -> float:
    return float(bob.disclosed_bits.mean()) / (bob.frame_bits * binary_entropy(qber))


@pytest.mark.parametrize("qber", sorted(_F_MAX_LONG))
def test_efficiency_and_fer_at_the_frame_plan(qber: float) -> None:
    frame_bits = frame_bits_for(qber)
    frames = _LONG_BITS // frame_bits
    alice, bob, transcript, same, _ = _run("ldpc-blind", qber, frames, qber, 24, frame_bits)
    assert len(transcript) <= 3
    assert bob._setup.plan.n == code_length(frame_bits)
    first_errors = int((~bob.frame_ok_first | ~same).sum())
    assert first_errors <= max(1, frames // 48), (
        f"first-message FER {first_errors}/{frames} at QBER {qber}"
    )
    assert same.all()
    assert bob.frame_ok.all()
    f_first = bob._setup.plan.efficiency(qber)
    assert f_first == pytest.approx(default_efficiency(qber, frame_bits), abs=0.005)
    assert _efficiency(bob, qber) <= _F_MAX_LONG[qber]
    assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)


@pytest.mark.parametrize("qber", sorted(_F_MAX_SHORT))
def test_first_message_on_1e4_bit_frames(qber: float) -> None:
    alice, bob, transcript, same, alice_bits = _run(
        "ldpc-blind", qber, 300, qber, 21, SHORT_FRAME_BITS
    )
    assert len(transcript) <= 3
    # a first-message frame error: syndrome unmet, or met by a wrong codeword
    first_errors = int((~bob.frame_ok_first | ~same).sum())
    assert first_errors <= 6, f"first-message FER {first_errors / 300:.3f} at QBER {qber}"
    # identical keys or a detected failure (Bob's syndrome check or verification tags)
    tags_differ = (
        poly_hash64(alice_bits, _POINTS) != poly_hash64(bob.corrected_bits, _POINTS)
    ).any(axis=1)
    assert np.all(same | ~bob.frame_ok | tags_differ)
    assert np.array_equal(tags_differ, ~same)
    # after the blind round only wrong-codeword decodings could remain (error floor)
    assert int((~same).sum()) <= 2
    f_first = bob._setup.plan.efficiency(qber)
    assert f_first == pytest.approx(default_efficiency(qber, SHORT_FRAME_BITS), abs=0.01)
    assert _efficiency(bob, qber) <= _F_MAX_SHORT[qber]
    assert np.array_equal(alice.disclosed_bits, bob.disclosed_bits)


@pytest.mark.parametrize("qber", [0.02, 0.05, 0.08])
def test_blind_round_rescues_failed_frames(qber: float) -> None:
    _, bob, transcript, same, _ = _run("ldpc-blind", qber, 80, 1.3 * qber, 22, SHORT_FRAME_BITS)
    assert len(transcript) == 3
    forced = int((~bob.frame_ok_first).sum())
    assert forced >= 25  # the first message really failed often
    assert same.all(), f"{int((~same).sum())} of {forced} forced failures not rescued"
    assert bob.frame_ok.all()
