"""Whole accelerated passes of the micius-2017 downlink (TLE time-of-flight model, satellite
clock offset and 12 ppm drift) through ``groundkey run`` and the simulators in their own
processes: a pass split into several key blocks, every one of which must recover the
satellite clock (regression: later blocks were numbered whole beacon periods off, QBER
0.5), and a fast simulated clock, at which the tagger's time base starts well before
``start()`` returns (regression: the daemon used its own, later, start time)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from groundkey_protocol.qkd.sync import SyncConfig, recover
from groundkey_sim.downlink import Downlink, preset
from tests.system.harness import Rig

#: 73 s before AOS above 30 deg of the Micius pass over Xinglong (16:50:49.6Z)
EPOCH_30 = "2016-12-19T16:49:36Z"


def _run_pass(rig: Rig, *, min_block_detections: int, min_el_deg: float) -> str:
    rig.write_config(
        min_block_detections=min_block_detections, tof_model="tle", min_el_deg=min_el_deg
    )
    mark = rig.start()
    rig.wait("READY=1", since=mark, timeout_s=120.0)
    code = rig.finish(timeout_s=150.0)
    log = rig.log
    assert code == 0, log[-5000:]
    return log


def _check_blocks(rig: Rig, log: str) -> int:
    """Every sealed block gave a key (QBER < 3 %) identical at both ends; the count."""
    sealed = set(re.findall(r": sync \(block (\d+)\)", log))
    station = rig.station_keys()
    satellite = rig.satellite_keys()
    assert sealed, log[-5000:]
    assert "no key:" not in log, log[-5000:]
    assert len(station) == len(sealed), (len(station), sealed, log[-5000:])
    assert set(satellite) == set(station)
    for block_id, (qber, length_bits, material) in station.items():
        assert 0.005 < qber < 0.03, (block_id, qber)
        assert length_bits >= 8 * 32
        assert material == satellite[block_id][: len(material)]
        assert len(material) == (length_bits // 8) // 32 * 32
    assert "tagger time base started" in log  # the device's start instant was used
    assert "Traceback" not in log
    return len(sealed)


def test_pass_split_into_several_blocks(tmp_path: Path) -> None:
    """155 s of the pass above 30 deg at clock speed 15 (~2.9 M detections) in blocks of
    1 M: three blocks, the later ones starting about 60 s and 105 s into the pass, where
    drift x elapsed time is many beacon periods."""
    rig = Rig(tmp_path, speed=15.0, preset="micius-2017", epoch=EPOCH_30, tagger_s=155.0)
    try:
        log = _run_pass(rig, min_block_detections=1_000_000, min_el_deg=30.0)
        blocks = _check_blocks(rig, log)
        assert blocks >= 3, log[-5000:]
    finally:
        rig.close()


def test_clock_recovery_at_high_clock_speed(tmp_path: Path) -> None:
    """Clock speed 20, the pass above 30 deg in one block: building the run takes the
    tagger simulator 0.3-1 s of wall time (6-20 simulated s, tens of km of range); the
    block still syncs."""
    rig = Rig(tmp_path, speed=20.0, preset="micius-2017", epoch=EPOCH_30, tagger_s=175.0)
    try:
        log = _run_pass(rig, min_block_detections=5_000_000, min_el_deg=30.0)
        assert _check_blocks(rig, log) == 1
    finally:
        rig.close()


@pytest.mark.parametrize(("first_s", "last_s"), [(0.0, 3.0), (8.0, 11.0), (30.0, 33.0)])
def test_blocks_late_in_a_pass_get_absolute_slots(first_s: float, last_s: float) -> None:
    """Clock recovery alone, on one block's tags: with 12 ppm drift, 8 s into the pass
    the accumulated drift (96 us) exceeds half a beacon period (50 us); the slots must
    still be the ones Alice sent, not whole beacon periods (10 000 slots) off."""
    link = preset("micius-2017")
    downlink = Downlink(link, seed=3, duration_s=last_s)
    chunks = [c for c in downlink.chunks(0.5) if first_s <= c.start_s < last_s]
    ts = np.concatenate([c.timestamps_ps for c in chunks])
    ch = np.concatenate([c.channels for c in chunks])
    truth = np.concatenate([c.true_slots for c in chunks])
    beacon = ch == link.sync_channel
    sync = recover(
        ts[~beacon],
        ch[~beacon],
        ts[beacon],
        downlink.predicted_tof(),
        config=SyncConfig(slot_period_ps=link.slot_period_ps, sync_divider=link.sync_divider),
    )
    signal = (truth[~beacon] >= 0) & sync.in_gate
    assert signal.sum() > 1000
    assert np.mean(sync.slots[signal] == truth[~beacon][signal]) > 0.99
    assert sync.drift_ppm == pytest.approx(link.clock_drift_ppm, abs=0.01)
