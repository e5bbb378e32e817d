"""Sifting and squashing."""

from __future__ import annotations

import numpy as np
import pytest

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.qkd.sifting import (
    Detections,
    PulseTable,
    SparsePulseTable,
    alice_sift,
    bob_sift,
    squash_clicks,
)
from groundkey_protocol.qkd.synth import synthesize_pass


def test_squash_single_and_multi_clicks() -> None:
    rng = np.random.default_rng(0)
    slots = np.array([5, 9, 9, 12, 12, 20, 20, 20], dtype=np.int64)
    # ch: 0 Z0, 1 Z1, 2 X0, 3 X1
    chans = np.array([1, 2, 2, 0, 1, 0, 3, 3], dtype=np.uint8)
    d = squash_clicks(slots, chans, rng)
    assert d.slots.tolist() == [5, 9, 12, 20]
    assert d.bases[:2].tolist() == [0, 1]
    assert d.bits[:2].tolist() == [1, 0]
    assert d.bases[2] == 0  # both Z detectors: Z basis, random bit
    # double clicks are random: over many draws both values occur
    many = np.repeat(np.arange(400, dtype=np.int64), 2)
    mixed = np.tile(np.array([0, 1], dtype=np.uint8), 400)
    bits = squash_clicks(many, mixed, rng).bits
    assert 120 < int(bits.sum()) < 280
    cross = np.tile(np.array([0, 3], dtype=np.uint8), 400)
    squashed = squash_clicks(many, cross, rng)
    assert 120 < int(squashed.bases.sum()) < 280


def test_sifting_keeps_matching_bases_in_order() -> None:
    table = PulseTable(
        100,
        bases=np.array([0, 1, 1, 0, 1], np.uint8),
        bits=np.array([1, 0, 1, 1, 0], np.uint8),
        intensities=np.array([0, 1, 2, 0, 0], np.uint8),
    )
    det = Detections(
        np.array([100, 101, 103, 104], np.int64),
        np.array([0, 0, 0, 1], np.uint8),
        np.array([1, 1, 0, 0], np.uint8),
    )
    sa, bases, intens = alice_sift(det.slots, det.bases, table)
    sb = bob_sift(det, bases, intens)
    assert sa.bits.tolist() == [1, 1, 0]
    assert sb.bits.tolist() == [1, 0, 0]
    assert sa.intensities.tolist() == sb.intensities.tolist() == [0, 0, 0]
    assert sa.counts(0).tolist() == [2, 0, 0]
    assert sa.counts(1).tolist() == [1, 0, 0]
    with pytest.raises(ProtocolError):
        alice_sift(np.array([99], np.int64), np.array([0], np.uint8), table)
    with pytest.raises(ProtocolError):
        bob_sift(det, bases[:2], intens)


def test_synthetic_pass_sifts_to_half_with_expected_qber() -> None:
    sp = synthesize_pass(np.random.default_rng(4), detections=200_000)
    sa, bases, intens = alice_sift(sp.bob.slots, sp.bob.bases, sp.alice)
    sb = bob_sift(sp.bob, bases, intens)
    assert 0.48 < sa.bits.size / 200_000 < 0.52
    qber = float((sa.bits != sb.bits)[sa.intensities == 0].mean())
    assert 0.009 < qber < 0.017
    with pytest.raises(ProtocolError):
        sp.alice.lookup(np.array([sp.alice.slots[-1] + 1]))
    assert "SparsePulseTable" in repr(sp.alice)
    assert isinstance(sp.alice, SparsePulseTable)


def test_squash_matches_a_per_slot_reference_on_the_deterministic_cases() -> None:
    rng = np.random.default_rng(9)
    slots = np.sort(rng.integers(0, 3000, 5000)).astype(np.int64)
    chans = rng.integers(0, 4, slots.size, dtype=np.uint8)
    d = squash_clicks(slots, chans, np.random.default_rng(1))
    assert d.slots.tolist() == sorted(set(slots.tolist()))
    by_slot: dict[int, set[int]] = {}
    for slot, ch in zip(slots.tolist(), chans.tolist(), strict=True):
        by_slot.setdefault(slot, set()).add(ch)
    for slot, basis, bit in zip(d.slots.tolist(), d.bases.tolist(), d.bits.tolist(), strict=True):
        clicked = by_slot[slot]
        if len({c >> 1 for c in clicked}) == 1:
            assert basis == next(iter(clicked)) >> 1
        if len(clicked) == 1:
            assert bit == next(iter(clicked)) & 1
