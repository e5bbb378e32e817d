"""Clock recovery: satellite clock offset and drift, and a pulse-slot index per detection.

Method (beacon + qubit phase, as Micius did with its sync laser):

1. *Beacon unwrapping.* The satellite fires a bright sync pulse every ``sync_divider``
   slots (10 kHz at 100 MHz: one per 100 µs) onto a dedicated tagger channel. Remove
   the predicted time of flight (from the TLE) and the nominal slot-0 epoch from each
   beacon tag: what remains is the emission time on the satellite clock plus errors
   of < 50 µs (offset ±10 µs, TLE error a few µs), i.e. less than half a beacon period.
   Differences between consecutive beacons are rounded to whole beacon periods (first
   with the nominal period, then with the drift measured from that first pass), so the
   ±25 ppm drift and gaps of seconds stay unambiguous; spurious tags (dark counts on
   the beacon channel) fail the grid test and are dropped. The first beacons' absolute
   index is the nearest multiple of the divider, which is why the prediction must be
   within half a beacon period. A linear fit gives the clock offset and drift.
2. *Interpolation.* Each detection's emission time (arrival minus predicted time of
   flight) is mapped to a slot index by linear interpolation between the beacons
   (100 µs apart). In emission time the relation is linear up to the TLE error, so
   the range acceleration (≤ 360 ns/s²) never enters and beacon gaps of seconds
   (clouds, a saturated beacon detector) cost nothing.
3. *Fine phase from the qubits.* The qubit detections' fractional slot phase is
   histogrammed per channel (detector cable delays differ from the beacon's), then
   per time window (``window_s``) for the residual; the histogram peak, refined by a
   local mean, is the phase correction. Detections within ``gate_slots`` of a slot
   centre are flagged ``in_gate`` (the 2 ns coincidence window).

Everything is vectorized; the only Python loops run over channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from groundkey_protocol.errors import ProtocolError

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SyncConfig:
    slot_period_ps: int = 10_000
    sync_divider: int = 10_000
    max_drift_ppm: float = 50.0
    window_s: float = 1.0
    phase_bins: int = 50
    gate_slots: float = 0.2  # full width: 2 ns at 100 MHz
    min_window_counts: int = 200


@dataclass(slots=True)
class SyncResult:
    slots: Int64Array  # one per detection
    phase_slots: Float64Array  # residual phase of each detection, in slots
    in_gate: npt.NDArray[np.bool_]
    offset_ps: float  # satellite clock offset at slot 0 (including TLE range error)
    drift_ppm: float
    beacons_used: int
    beacons_rejected: int


def _grid_errors(
    de: Float64Array, period: float, tol_abs: float, tol_rel: float
) -> tuple[Int64Array, npt.NDArray[np.bool_]]:
    n = np.rint(de / period)
    err = de - n * period
    return n.astype(np.int64), np.abs(err) <= tol_abs + tol_rel * np.abs(de)


def unwrap_beacons(
    emission_ps: Float64Array, beacon_period_ps: float, max_drift_ppm: float = 50.0
) -> tuple[Int64Array, npt.NDArray[np.bool_], float]:
    """Beacon emission estimates -> (beacon index, kept mask, drift ppm).

    Indices are absolute: ``index * beacon_period`` is the nominal emission time.
    """
    e = np.asarray(emission_ps, dtype=np.float64)
    keep = np.ones(len(e), dtype=bool)
    if len(e) < 3:
        raise ProtocolError("need at least 3 beacon tags for clock recovery", protocol="sync")
    tol_abs = 5_000.0
    drift = 0.0
    for tol_rel in (max_drift_ppm * 1e-6, 2e-6):
        period = beacon_period_ps * (1.0 + drift * 1e-6)
        for _ in range(3):
            idx = np.flatnonzero(keep)
            _, good = _grid_errors(np.diff(e[idx]), period, tol_abs, tol_rel)
            bad_in = np.concatenate([[True], ~good])
            bad_out = np.concatenate([~good, [True]])
            drop = bad_in & bad_out
            if not drop.any():
                break
            keep[idx[drop]] = False
        idx = np.flatnonzero(keep)
        de = np.diff(e[idx])
        n, good = _grid_errors(de, period, tol_abs, tol_rel)
        if good.sum() < 2:
            raise ProtocolError("beacon tags show no periodic grid", protocol="sync")
        rel = de[good] / (n[good] * beacon_period_ps)
        drift = float((np.median(rel[n[good] > 0]) - 1.0) * 1e6)
    idx = np.flatnonzero(keep)
    period = beacon_period_ps * (1.0 + drift * 1e-6)
    n, good = _grid_errors(np.diff(e[idx]), period, tol_abs, 2e-6)
    rel_index = np.concatenate([[0], np.cumsum(n)])
    base = np.rint(np.median((e[idx[:101]] - rel_index[:101] * period) / beacon_period_ps))
    index = np.full(len(e), -1, dtype=np.int64)
    index[idx] = rel_index + int(base)
    return index, keep, drift


def recover(
    detect_ps: Int64Array,
    channels: npt.NDArray[np.uint8],
    beacon_ps: Int64Array,
    tof_grid_ps: tuple[Int64Array, Int64Array],
    *,
    sat_epoch_ps: int = 0,
    config: SyncConfig | None = None,
) -> SyncResult:
    """Assign a slot index to every detection (see the module docstring)."""
    cfg = config or SyncConfig()
    period = float(cfg.slot_period_ps)
    beacon_period = period * cfg.sync_divider
    tb = np.asarray(beacon_ps, dtype=np.int64)
    grid_t, grid_tof = tof_grid_ps
    emission = (
        tb.astype(np.float64)
        - np.interp(tb.astype(np.float64), grid_t.astype(np.float64), grid_tof.astype(np.float64))
        - float(sat_epoch_ps)
    )
    index, keep, _ = unwrap_beacons(emission, beacon_period, cfg.max_drift_ppm)
    k_b = index[keep] * cfg.sync_divider
    t_b = tb[keep]
    e_b = emission[keep]
    # offset/drift of the satellite clock (plus any TLE range error)
    x = k_b.astype(np.float64) * period
    slope, intercept = np.polyfit(x - x[0], e_b, 1)
    offset_ps = float(intercept - slope * x[0])
    drift_ppm = float((slope - 1.0) * 1e6)

    td = np.asarray(detect_ps, dtype=np.int64)
    # Interpolate in emission time (arrival minus predicted flight time): there the
    # slot index is linear in time up to the small TLE error, even across beacon gaps.
    e_d = (
        td.astype(np.float64)
        - np.interp(td.astype(np.float64), grid_t.astype(np.float64), grid_tof.astype(np.float64))
        - float(sat_epoch_ps)
    )
    rel_e = e_d - e_b[0]
    rel_eb = e_b - e_b[0]
    rel_k = (k_b - k_b[0]).astype(np.float64)
    rate = slope * period  # emission ps per slot
    frac = np.interp(rel_e, rel_eb, rel_k)
    before = rel_e < 0
    after = rel_e > rel_eb[-1]
    frac[before] = rel_e[before] / rate
    frac[after] = rel_k[-1] + (rel_e[after] - rel_eb[-1]) / rate
    phase = frac - np.rint(frac)
    # per-channel phase offset (cable and detector delays)
    corr = np.zeros(len(td), dtype=np.float64)
    ch = np.asarray(channels)
    for c in np.unique(ch):
        sel = ch == c
        corr[sel] = _peak_phase(phase[sel], cfg.phase_bins)
    phase = _wrap(phase - corr)
    # per-window residual tracking
    if len(td):
        win = ((td - td.min()) // int(cfg.window_s * 1e12)).astype(np.int64)
        n_win = int(win.max()) + 1
        bins = np.minimum(((phase + 0.5) * cfg.phase_bins).astype(np.int64), cfg.phase_bins - 1)
        hist = np.bincount(win * cfg.phase_bins + bins, minlength=n_win * cfg.phase_bins)
        hist = hist.reshape(n_win, cfg.phase_bins)
        peak = (hist.argmax(axis=1) + 0.5) / cfg.phase_bins - 0.5
        counts = hist.sum(axis=1)
        peak = np.where(counts >= cfg.min_window_counts, peak, 0.0)
        near = np.abs(_wrap(phase - peak[win])) < cfg.gate_slots
        num = np.bincount(win[near], weights=_wrap(phase - peak[win])[near], minlength=n_win)
        den = np.bincount(win[near], minlength=n_win)
        resid = peak + np.where(den > 0, num / np.maximum(den, 1), 0.0)
        resid = np.where(counts >= cfg.min_window_counts, resid, 0.0)
        frac = frac - corr - resid[win]
    else:
        frac = frac - corr
    slot_rel = np.rint(frac)
    phase = frac - slot_rel
    slots = slot_rel.astype(np.int64) + k_b[0]
    return SyncResult(
        slots=slots,
        phase_slots=phase,
        in_gate=np.abs(phase) <= cfg.gate_slots / 2,
        offset_ps=offset_ps,
        drift_ppm=drift_ppm,
        beacons_used=int(keep.sum()),
        beacons_rejected=int((~keep).sum()),
    )


def _wrap(x: Float64Array) -> Float64Array:
    return np.asarray(x - np.rint(x), dtype=np.float64)


def _peak_phase(phase: Float64Array, bins: int) -> float:
    """Circular peak of phases in [-0.5, 0.5): histogram peak refined by a local mean."""
    if len(phase) == 0:
        return 0.0
    b = np.minimum(((phase + 0.5) * bins).astype(np.int64), bins - 1)
    hist = np.bincount(b, minlength=bins)
    peak = (int(hist.argmax()) + 0.5) / bins - 0.5
    d = _wrap(phase - peak)
    near = np.abs(d) < 0.1
    if near.any():
        peak += float(d[near].mean())
    return float(peak)
