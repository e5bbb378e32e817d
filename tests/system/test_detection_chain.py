"""Simulated Micius pass -> emulated USB tagger (subprocess) -> real pyusb driver over
usbnet -> ingest -> clock recovery -> sifting against Alice's record."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from groundkey_drivers.timetagger import open_tagger
from groundkey_protocol.orbit import Station, look_angles, parse_tle
from groundkey_protocol.qkd.sync import recover, recover_from_qubits
from groundkey_sim.downlink import Downlink, preset
from groundkey_sim.downlink.presets import MICIUS_TLE, XINGLONG

C_M_S = 299_792_458.0
SEED = 20170616
DURATION_S = 4.0


def spawn_tagger(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "groundkey_sim.cli", "tagger", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("usbnet://127.0.0.1:"), url
    return proc, url


def stop_process(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def tagger_process(request: pytest.FixtureRequest) -> Iterator[str]:
    proc, url = spawn_tagger(*request.param)
    try:
        yield url
    finally:
        stop_process(proc)


def station_prediction(start_unix_s: float, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The station's own time-of-flight prediction from the TLE (no simulator code)."""
    grid_s = np.arange(-1.0, duration_s + 1.0, 0.05)
    la = look_angles(parse_tle(MICIUS_TLE)[0], Station(*XINGLONG), start_unix_s + grid_s)
    tof_ps = np.asarray(la.range_m) / C_M_S * 1e12
    return np.rint(grid_s * 1e12).astype(np.int64), np.rint(tof_ps).astype(np.int64)


# (start, published sifted rate bit/s, range km) -- Liao et al. 2017 via REFERENCES §3
SLICES = {
    "near-645km": ("2016-12-19T16:52:11Z", 12_000.0, 645.0),
    "near-1200km": ("2016-12-19T16:49:55Z", 1_000.0, 1200.0),
}


@pytest.mark.parametrize(
    "tagger_process",
    [
        [
            "--preset",
            "micius-2017",
            "--start",
            start,
            "--duration",
            str(DURATION_S),
            "--seed",
            str(SEED),
        ]
        for start, _, _ in SLICES.values()
    ],
    ids=list(SLICES),
    indirect=True,
)
async def test_micius_slice_end_to_end(tagger_process: str, request: pytest.FixtureRequest) -> None:
    start, published_bps, range_km = SLICES[request.node.callspec.id]
    start_unix_s = dt.datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()

    ts_parts, ch_parts = [], []
    async with open_tagger(tagger_process) as tagger:
        await tagger.start()
        async for batch in tagger.batches():
            ts_parts.append(batch.timestamps_ps)
            ch_parts.append(batch.channels)
        assert tagger.stats.lost_frames == 0
        assert tagger.stats.dropped_transfers == 0
    ts = np.concatenate(ts_parts)
    ch = np.concatenate(ch_parts)

    # the same run in-process: the truth the station never sees
    link = Downlink(
        preset("micius-2017"), seed=SEED, start_unix_s=start_unix_s, duration_s=DURATION_S
    )
    chunks = list(link.chunks(0.05))
    np.testing.assert_array_equal(ts, np.concatenate([c.timestamps_ps for c in chunks]))
    truth = np.concatenate([c.true_slots for c in chunks])
    assert abs(np.mean([c.mean_range_m for c in chunks]) / 1e3 - range_km) < 15

    beacon = ch == 5
    result = recover(
        ts[~beacon], ch[~beacon], ts[beacon], station_prediction(start_unix_s, DURATION_S)
    )
    det_truth = truth[~beacon]
    signal = det_truth >= 0
    assert np.mean(result.slots[signal] == det_truth[signal]) >= 0.999
    assert abs(result.drift_ppm - 12.0) < 0.5

    # the same without the beacon: timing from the qubits and the announced decoy pattern
    weights = np.array(preset("micius-2017").intensities)
    qubits = recover_from_qubits(
        ts[~beacon],
        ch[~beacon],
        station_prediction(start_unix_s, DURATION_S),
        lambda slots: weights[link.alice.intensity_class(slots)],
    )
    assert np.mean(qubits.slots[signal] == det_truth[signal]) >= 0.999

    # sifting against Alice's record, like the classical link would
    gate = result.in_gate
    bit, basis, _ = link.alice.values(result.slots[gate])
    bob_ch = ch[~beacon][gate].astype(np.int64) - 1
    bob_basis, bob_bit = bob_ch // 2, bob_ch % 2
    sifted = bob_basis == basis
    rate_bps = sifted.sum() / DURATION_S
    qber = np.mean(bob_bit[sifted] != bit[sifted])
    print(f"range {range_km} km: sifted {rate_bps:.0f} bit/s, QBER {qber:.4f}")
    assert 0.75 * published_bps <= rate_bps <= 1.25 * published_bps, rate_bps
    assert 0.01 <= qber <= 0.03, qber
