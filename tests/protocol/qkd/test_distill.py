"""End-to-end distillation between the two roles: equal keys or an abort with a reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import (
    AmplifySeed,
    CascadeReply,
    SiftAnnounce,
    VerifyTags,
    decode_message,
    encode_message,
)
from groundkey_protocol.qkd import reconcile
from groundkey_protocol.qkd.cascade import CascadeBob
from groundkey_protocol.qkd.distill import (
    DistillAlice,
    DistillBob,
    DistillConfig,
    automatic_frame_bits,
)
from groundkey_protocol.qkd.reconcile import run_pair
from groundkey_protocol.qkd.synth import synthesize_pass


def distill(detections: int, e_d: float, seed: int, **config: object):
    sp = synthesize_pass(np.random.default_rng(seed), detections=detections, e_d=e_d)
    config.setdefault("frame_bits", 20_000)
    cfg = DistillConfig(**config)  # type: ignore[arg-type]
    alice = DistillAlice(cfg, sp.alice, np.random.default_rng(seed + 1), block_id=f"b{seed}")
    bob = DistillBob(cfg, sp.bob, np.random.default_rng(seed + 2), block_id=f"b{seed}")
    transcript = run_pair(alice, bob)
    assert alice.outcome is not None
    assert bob.outcome is not None
    return alice.outcome, bob.outcome, transcript


@pytest.mark.parametrize("qber", [0.005, 0.01, 0.02, 0.03, 0.05, 0.08])
def test_equal_keys_or_abort_over_bsc(qber: float) -> None:
    a, b, _ = distill(2_000_000, qber, seed=int(qber * 1000))
    print(f"e_d={qber}: {a.status} {a.reason} Q={a.stats.qber_estimate:.4f}")
    assert a.status == b.status
    if a.ok:
        assert a.key is not None
        assert b.key is not None
        assert a.key.key_bits == b.key.key_bits > 0
        assert a.key.material == b.key.material
    else:
        assert a.reason
        assert b.reason
        assert a.key is None
        assert b.key is None
    if qber <= 0.02:
        assert a.ok
    if qber >= 0.08:
        assert not a.ok


def test_transcript_equals_leakage_accounting() -> None:
    a, b, transcript = distill(1_500_000, 0.015, seed=21)
    assert a.ok
    assert b.ok
    parities = sum(m.count for _, m in transcript.messages if isinstance(m, CascadeReply))
    tags = sum(8 * len(m.tags) for _, m in transcript.messages if isinstance(m, VerifyTags))
    assert a.stats.disclosed_bits == b.stats.disclosed_bits == parities + tags
    assert tags == a.stats.tag_bits > 0
    seeds = [m for _, m in transcript.messages if isinstance(m, AmplifySeed)]
    assert len(seeds) == 1
    assert seeds[0].key_bits == a.key.key_bits
    assert a.stats.messages == b.stats.messages == len(transcript)
    for _, message in transcript.messages:
        assert decode_message(encode_message(message)) == message


class ResidualErrorBob(CascadeBob):
    """Cascade that leaves one wrong bit behind, to exercise verification."""

    def _advance(self):  # type: ignore[no-untyped-def]
        message = super()._advance()
        if self.done:
            self._bits[0, 7] ^= 1
        return message


class AllWrongBob(CascadeBob):
    """Cascade that leaves an error in every frame."""

    def _advance(self):  # type: ignore[no-untyped-def]
        message = super()._advance()
        if self.done:
            self._bits[:, 0] ^= 1
        return message


def test_verification_catches_a_residual_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        reconcile.RECONCILERS,
        "cascade-yan",
        ("groundkey_protocol.qkd.cascade:CascadeAlice", f"{__name__}:ResidualErrorBob"),
    )
    a, b, _ = distill(1_500_000, 0.015, seed=22)
    # the bad frame is dropped and reported; the rest still gives equal keys
    assert a.stats.frames_failed == b.stats.frames_failed == 1
    assert a.ok
    assert b.ok
    assert a.key is not None
    assert b.key is not None
    assert a.key.material == b.key.material
    fk = a.stats.finite_key
    assert fk is not None
    frames = a.stats.frames
    frame_bits = a.stats.key_input_bits // frames
    assert a.key.key_bits == fk.key_bits - frame_bits - frames


def test_all_frames_failing_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        reconcile.RECONCILERS,
        "cascade-yan",
        ("groundkey_protocol.qkd.cascade:CascadeAlice", f"{__name__}:AllWrongBob"),
    )
    a, b, _ = distill(1_500_000, 0.015, seed=27)
    assert not a.ok
    assert not b.ok
    assert a.reason == b.reason == f"verification failed in all {a.stats.frames} frames"


def test_sampling_and_mas_family() -> None:
    a, b, _ = distill(2_000_000, 0.015, seed=23, sample_fraction=0.05, amplify="mas")
    assert a.ok
    assert b.key is not None
    assert a.key is not None
    assert a.stats.sample_bits > 10_000
    assert abs(a.stats.qber_estimate - a.stats.z_qber) < 0.01
    assert a.key.material == b.key.material


def test_biconf_variant_end_to_end() -> None:
    a, b, _ = distill(1_500_000, 0.015, seed=24, reconcile="cascade-biconf")
    assert a.ok
    assert a.key is not None
    assert b.key is not None
    assert a.key.material == b.key.material


def test_key_material_never_in_repr() -> None:
    a, b, transcript = distill(1_500_000, 0.01, seed=25)
    assert a.key is not None
    text = repr(a) + repr(a.key) + repr(b) + repr(transcript)
    text += "".join(repr(m) for _, m in transcript.messages)
    assert a.key.material.hex()[:16] not in text
    assert "bytes>" in repr(transcript.messages[0][1])
    assert "material" not in repr(a.key)
    meta = a.key.metadata()
    assert meta["key_bits"] == a.key.key_bits
    assert meta["block_id"] == "b25"
    assert a.key.material.hex()[:16] not in json.dumps(meta)


def test_out_of_order_and_foreign_messages_raise_protocol_error() -> None:
    sp = synthesize_pass(np.random.default_rng(5), detections=50_000)
    cfg = DistillConfig(frame_bits=10_000)
    alice = DistillAlice(cfg, sp.alice, np.random.default_rng(1), block_id="x")
    with pytest.raises(ProtocolError):
        alice.receive(SiftAnnounce(block_id="y", count=0, slots=b"", bases=b""))
    with pytest.raises(ProtocolError):
        alice.receive(SiftAnnounce(block_id="x", count=3, slots=b"\x00" * 8, bases=b"\x00"))
    bob = DistillBob(cfg, sp.bob, np.random.default_rng(2), block_id="x")
    with pytest.raises(ProtocolError):
        bob.receive(VerifyTags(block_id="x", points=[1], tags=b""))


def test_micius_class_pass_gives_a_key() -> None:
    a, b, _ = distill(4_000_000, 0.012, seed=26, frame_bits=100_000)
    assert a.ok
    assert a.key is not None
    assert b.key is not None
    print(f"Micius-class pass: {a.key.key_bits} key bits, Q={a.stats.qber_estimate:.4f}")
    assert a.key.material == b.key.material
    assert 100_000 < a.key.key_bits < 400_000


@pytest.mark.parametrize("qber", [0.005, 0.02, 0.05, 0.08])
def test_reconcile_verify_amplify_over_bsc(qber: float) -> None:
    """The post-estimation chain alone over a binary symmetric channel up to 8 %."""
    from groundkey_protocol.qkd.amplify import toeplitz_hash
    from groundkey_protocol.qkd.reconcile import ReconcileParams, create_reconciler
    from groundkey_protocol.qkd.verify import poly_hash64

    rng = np.random.default_rng(int(qber * 1e4))
    alice_bits = rng.integers(0, 2, (20, 10_000), dtype=np.uint8)
    bob_bits = alice_bits ^ (rng.random(alice_bits.shape) < qber).astype(np.uint8)
    params = ReconcileParams(method="cascade-yan", qber=qber, seed=3, block_id="z")
    alice = create_reconciler("alice", alice_bits, params)
    bob = create_reconciler("bob", bob_bits, params)
    run_pair(alice, bob)
    points = [int(p) for p in rng.integers(0, 2**63, 1)]
    ok = (poly_hash64(alice_bits, points) == poly_hash64(bob.corrected_bits, points)).all(axis=1)  # type: ignore[attr-defined]
    assert ok.sum() >= 19
    n = int(ok.sum()) * 10_000
    seed = rng.integers(0, 2, n + n // 2 - 1, dtype=np.uint8)
    key_a = toeplitz_hash(alice_bits[ok].reshape(-1), seed, n // 2)
    key_b = toeplitz_hash(bob.corrected_bits[ok].reshape(-1), seed, n // 2)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(key_a, key_b)


def test_config_from_mapping() -> None:
    cfg = DistillConfig.from_mapping(
        {"eps_sec": 1e-10, "reconcile": "cascade-biconf", "intensities": [0.6, 0.2, 0.0]}
    )
    assert cfg.eps_sec == 1e-10
    assert cfg.intensities == (0.6, 0.2, 0.0)
    with pytest.raises(ValueError, match="unknown distillation settings: bogus"):
        DistillConfig.from_mapping({"bogus": 1})
    with pytest.raises(ValueError, match="unknown reconciliation method"):
        DistillConfig(reconcile="turbo")
    with pytest.raises(ValueError, match="unknown hash family"):
        DistillConfig(amplify="sha")
    with pytest.raises(ValueError, match="intensities"):
        DistillConfig(intensities=(0.1, 0.2, 0.0))
    with pytest.raises(ValueError, match="probabilities"):
        DistillConfig(probabilities=(0.5, 0.5, 0.5))


def test_pass_split_into_independent_blocks() -> None:
    from groundkey_protocol.qkd.sifting import split_detections

    sp = synthesize_pass(np.random.default_rng(31), detections=3_000_000)
    blocks = split_detections(sp.bob, 1_500_000)
    assert [b.slots.size for b in blocks] == [1_500_000, 1_500_000]
    keys = []
    for i, block in enumerate(blocks):
        cfg = DistillConfig(frame_bits=20_000)
        alice = DistillAlice(cfg, sp.alice, np.random.default_rng(40 + i), block_id=f"s{i}")
        bob = DistillBob(cfg, block, np.random.default_rng(50 + i), block_id=f"s{i}")
        run_pair(alice, bob)
        assert alice.outcome is not None
        assert bob.outcome is not None
        assert alice.outcome.key is not None
        assert bob.outcome.key is not None
        assert alice.outcome.key.material == bob.outcome.key.material
        keys.append(alice.outcome.key.material)
    assert keys[0] != keys[1]


def test_ldpc_plugs_into_the_same_pipeline() -> None:
    """The block pipeline runs any registered reconciler; LDPC needs a few messages only."""
    a, b, transcript = distill(2_000_000, 0.012, seed=33, reconcile="ldpc-blind")
    assert a.ok
    assert a.key is not None
    assert b.key is not None
    assert a.key.material == b.key.material
    assert len(transcript) < 20


@pytest.mark.parametrize("reconcile", ["ldpc-blind", "cascade-yan"])
def test_automatic_frames_follow_the_method_and_the_qber(reconcile: str) -> None:
    """frame_bits 0: LDPC cuts the frames its plan gives for the agreed QBER estimate
    (1.44·10^6 key bits up to 1.5 %, 3.6·10^5 up to 2.5 %), Cascade 10^5-bit frames;
    a block with fewer key bits is one frame; both ends agree."""
    assert automatic_frame_bits("ldpc-blind", 0.012) == 1_440_000
    assert automatic_frame_bits("ldpc", 0.02) == 360_000
    assert automatic_frame_bits("ldpc-blind", 0.05) == 90_000
    assert automatic_frame_bits("cascade-yan", 0.012) == 100_000
    a, b, _ = distill(4_000_000, 0.009, seed=35, reconcile=reconcile, frame_bits=0)
    assert a.stats.frames == b.stats.frames
    assert a.stats.qber_estimate < 0.015
    size = a.stats.key_input_bits // a.stats.frames
    planned = automatic_frame_bits(reconcile, a.stats.qber_estimate)
    assert size <= planned  # never more than planned
    if reconcile == "cascade-yan":
        assert a.stats.frames > 1
        assert size > planned // 2  # about planned each
    else:
        assert a.stats.frames == 1  # ~10^6 key bits: less than one planned frame
    assert a.ok
    assert a.key is not None
    assert b.key is not None
    assert a.key.material == b.key.material


def test_reconciliation_qber_is_the_keys_not_the_signals() -> None:
    """Decoy and vacuum detections err more than signal ones; the QBER handed to
    reconciliation weights each intensity's Z error rate by its share of the key."""
    sp = synthesize_pass(np.random.default_rng(4), detections=1_200_000, e_d=0.012)
    cfg = DistillConfig(reconcile="ldpc-blind")
    alice = DistillAlice(cfg, sp.alice, np.random.default_rng(5), block_id="q")
    bob = DistillBob(cfg, sp.bob, np.random.default_rng(6), block_id="q")
    run_pair(alice, bob)
    a_key = alice._sifted.bits[alice._key_idx]  # type: ignore[union-attr]
    b_key = bob._sifted.bits[bob._key_idx]  # type: ignore[union-attr]
    true_qber = float((a_key != b_key).mean())
    st = bob.stats
    assert st.z_qber < true_qber  # the signal's Z QBER alone is too low ...
    assert abs(st.qber_estimate - true_qber) < 0.05 * true_qber  # ... the key's is right
    assert alice.stats.qber_estimate == st.qber_estimate
