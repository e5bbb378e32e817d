"""Clock recovery on synthetic arrivals: worst-case offset, drift and range acceleration."""

from __future__ import annotations

import numpy as np
import pytest

from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.qkd.sync import SyncConfig, recover, recover_from_qubits, unwrap_beacons

PERIOD_PS = 10_000
DIVIDER = 10_000


def tof_ps(t_s: np.ndarray) -> np.ndarray:
    """Range 900 km closing at 7 km/s and accelerating at 108 m/s² (REFERENCES §3)."""
    r_m = 900e3 - 7e3 * t_s + 0.5 * 108.0 * t_s**2
    return r_m / 299_792_458.0 * 1e12


@pytest.mark.parametrize(("offset_ps", "drift_ppm"), [(9_800_000, 25.0), (-9_900_000, -25.0)])
def test_recovers_slots_offset_and_drift(offset_ps: int, drift_ppm: float) -> None:
    rng = np.random.default_rng(5)
    duration_s = 3.0
    n_slots = int(duration_s * 1e8)

    def arrival(slots: np.ndarray) -> np.ndarray:
        emit = offset_ps + slots * PERIOD_PS * (1 + drift_ppm * 1e-6)
        return np.asarray(emit + tof_ps(emit * 1e-12), dtype=np.float64)

    # signal: 20 kcps of detections, 400 ps FWHM jitter, a per-channel cable delay
    slots = np.sort(rng.choice(n_slots, 60_000, replace=False)).astype(np.int64)
    ch = rng.integers(1, 5, len(slots)).astype(np.uint8)
    delays = np.array([0, 1200, 1500, 900, 1100])
    sig_t = arrival(slots) + delays[ch] + rng.normal(0, 170, len(slots))
    # beacon: 95 % detected, a 1.5 s cloud gap, plus dark counts
    beacon_k = np.arange(0, n_slots, DIVIDER, dtype=np.int64)
    kept = rng.random(len(beacon_k)) < 0.95
    kept &= ~((beacon_k > 0.8e8) & (beacon_k < 2.3e8))
    beacon_t = arrival(beacon_k[kept]) + 3000 + rng.normal(0, 40, kept.sum())
    dark_t = rng.uniform(beacon_t.min(), beacon_t.max(), 300)
    beacon_all = np.sort(np.concatenate([beacon_t, dark_t])).astype(np.int64)
    # noise on the detector channels
    noise_t = rng.uniform(sig_t.min(), sig_t.max(), 2000)
    det_t = np.concatenate([sig_t, noise_t])
    det_ch = np.concatenate([ch, rng.integers(1, 5, 2000).astype(np.uint8)])
    truth = np.concatenate([slots, np.full(2000, -1)])
    order = np.argsort(det_t)
    det_t, det_ch, truth = np.rint(det_t[order]).astype(np.int64), det_ch[order], truth[order]

    # the station's prediction from a TLE that is 1 km off (3.3 µs)
    grid_s = np.arange(-0.5, duration_s + 0.5, 0.05)
    prediction = (
        np.rint(grid_s * 1e12).astype(np.int64),
        np.rint(tof_ps(grid_s) + 3_300_000).astype(np.int64),
    )
    result = recover(
        det_t,
        det_ch,
        beacon_all,
        prediction,
        config=SyncConfig(slot_period_ps=PERIOD_PS, sync_divider=DIVIDER),
    )

    signal = truth >= 0
    assert np.mean(result.slots[signal] == truth[signal]) >= 0.999
    assert result.in_gate[signal].mean() > 0.99
    assert result.in_gate[~signal].mean() < 0.3
    assert abs(result.drift_ppm - drift_ppm) < 0.01
    # the offset absorbs the TLE error, the beacon delay and the flight-time change
    # during the flight (range rate x time of flight ~ 70 ns)
    assert abs(result.offset_ps - (offset_ps - 3_300_000 + 3000)) < 200_000
    assert result.beacons_rejected >= 250  # the dark counts


def test_unwrap_rejects_no_grid_and_too_few() -> None:
    with pytest.raises(ProtocolError):
        unwrap_beacons(np.array([1.0, 2.0]), 1e8)
    rng = np.random.default_rng(0)
    with pytest.raises(ProtocolError):
        unwrap_beacons(np.sort(rng.uniform(0, 1e12, 50)), 1e8)


def test_absolute_beacon_index_from_prediction() -> None:
    k = np.arange(7, 2000, dtype=np.int64)
    emission = (k * 1e8 * (1 + 20e-6) + 4e6).astype(np.float64)  # 4 µs off, 20 ppm fast
    index, keep, drift = unwrap_beacons(emission, 1e8)
    np.testing.assert_array_equal(index, k)
    assert keep.all()
    assert abs(drift - 20.0) < 0.01


def public_intensity(slots: np.ndarray) -> np.ndarray:
    """A stand-in for Alice's announced decoy pattern: mu in {0.8, 0.8, 0.1, 0} by hash."""
    h = (slots.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(62)
    return np.array([0.8, 0.8, 0.1, 0.0])[h.astype(np.int64)]


@pytest.mark.parametrize(("offset_ps", "drift_ppm"), [(9_700_000, 24.0), (-8_000_000, -17.5)])
def test_recovers_from_the_qubits_alone(offset_ps: int, drift_ppm: float) -> None:
    rng = np.random.default_rng(9)
    n_slots = int(2.0 * 1e8)
    cand = np.unique(rng.integers(0, n_slots, 30_000))
    keep = rng.random(len(cand)) < public_intensity(cand) / 0.8  # clicks follow intensity
    slots = cand[keep]
    ch = rng.integers(1, 5, len(slots)).astype(np.uint8)
    emit = offset_ps + slots * PERIOD_PS * (1 + drift_ppm * 1e-6)
    delays = np.array([0, 1200, 1500, 900, 1100])
    t = emit + tof_ps(emit * 1e-12) + delays[ch] + rng.normal(0, 170, len(slots))
    noise = rng.uniform(t.min(), t.max(), 300)
    det_t = np.concatenate([t, noise])
    det_ch = np.concatenate([ch, rng.integers(1, 5, 300).astype(np.uint8)])
    truth = np.concatenate([slots, np.full(300, -1)])
    order = np.argsort(det_t)
    grid_s = np.arange(-0.5, 2.5, 0.05)
    prediction = (
        np.rint(grid_s * 1e12).astype(np.int64),
        np.rint(tof_ps(grid_s) - 2_000_000).astype(np.int64),  # TLE 600 m off
    )
    result = recover_from_qubits(
        np.rint(det_t[order]).astype(np.int64), det_ch[order], prediction, public_intensity
    )
    truth = truth[order]
    signal = truth >= 0
    assert np.mean(result.slots[signal] == truth[signal]) >= 0.999
    assert abs(result.drift_ppm - drift_ppm) < 0.01
