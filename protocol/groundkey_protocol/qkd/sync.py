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
   index is the nearest multiple of the divider counted with the measured (drifting)
   period, so blocks that start late in a pass are numbered right; the clock offset
   (not the accumulated drift) must be within half a beacon period. A linear fit gives
   the clock offset and drift.
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

Without a beacon, :func:`recover_from_qubits` times the qubit stream itself
(after Calderaro et al., PR Applied 2020): the detections' emission-time estimates
are folded modulo the slot period for trial clock rates, coarse to fine (the
spectral line at 100 MHz; peak width = period / window), which gives drift and the
fractional slot phase; the integer slot offset (±10 µs = ±1000 slots) then comes from
correlating the detections with a public pattern, Alice's decoy-state intensities,
which BB84 announces for parameter estimation anyway: at the right shift almost no
detection falls on a vacuum slot and most fall on signal slots.

Everything is vectorized; Python loops run only over search stages.
"""

from __future__ import annotations

from collections.abc import Callable
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
    # The absolute index of the first beacon: its emission estimate divided by the
    # *drifting* period (``e = offset + index * period``). Dividing by the nominal
    # period would be off by ``index * drift``, i.e. by whole beacon periods for a
    # block that starts seconds into the pass. The period comes from a fit over the
    # whole block; the median keeps spurious tags out of the intercept.
    if len(idx) > 2 and rel_index[-1] > 0:
        fit_period = float(np.polyfit(rel_index.astype(np.float64), e[idx] - e[idx[0]], 1)[0])
        if abs(fit_period / period - 1.0) < 2e-6:
            period = fit_period
    base = np.rint(np.median((e[idx] - rel_index * period) / period))
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
    tb[keep]
    e_b = emission[keep]
    # offset/drift of the satellite clock (plus any TLE range error)
    x = k_b.astype(np.float64) * period
    slope, intercept = np.polyfit(x - x[0], e_b, 1)
    offset_ps = float(intercept - slope * x[0])
    drift_ppm = float((slope - 1.0) * 1e6)

    td = np.asarray(detect_ps, dtype=np.int64)
    # Interpolate in emission time (arrival minus predicted flight time): there the
    # slot index is linear in time up to the small TLE error, even across beacon gaps.
    td_f = td.astype(np.float64)
    rel_e = td_f - np.interp(td_f, grid_t.astype(np.float64), grid_tof.astype(np.float64))
    rel_e -= float(sat_epoch_ps) + e_b[0]
    del td_f
    rel_eb = e_b - e_b[0]
    rel_k = (k_b - k_b[0]).astype(np.float64)
    rate = slope * period  # emission ps per slot
    frac = np.interp(rel_e, rel_eb, rel_k)
    before = rel_e < 0
    after = rel_e > rel_eb[-1]
    frac[before] = rel_e[before] / rate
    frac[after] = rel_k[-1] + (rel_e[after] - rel_eb[-1]) / rate
    # per-channel phase offset (cable and detector delays), from a subsample
    ch = np.asarray(channels).astype(np.int64)
    stride = max(1, len(frac) // 400_000)
    sub = frac[::stride]
    corr_ch = _group_peaks(sub - np.rint(sub), ch[::stride], 256, cfg.phase_bins, 0.1, 1)
    frac -= corr_ch[ch]
    # per-window residual tracking
    _track_windows(frac, td, cfg)
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


def _fold_strength(rel_e: Float64Array, period: float, drifts: Float64Array) -> Float64Array:
    """|mean exp(2 pi i e / (P (1 + d)))| for each trial drift d (rows: trials)."""
    cycles = rel_e[None, :] / (period * (1.0 + drifts[:, None]))
    return np.asarray(np.abs(np.exp(2j * np.pi * cycles).mean(axis=1)), dtype=np.float64)


def search_drift(
    rel_e: Float64Array,
    period: float,
    max_drift_ppm: float,
    *,
    first_count: int = 400,
    max_points: int = 4000,
) -> float:
    """Clock-rate error (ppm) from the periodicity of emission-time estimates.

    ``rel_e`` is sorted emission time relative to its first element. Stage windows
    grow 8x; each stage scans +-range with steps of a quarter peak width.
    """
    n = len(rel_e)
    if n < 50:
        raise ProtocolError("too few detections for a qubit-timing search", protocol="sync")
    center = 0.0
    half_range = max_drift_ppm * 1e-6
    count = min(first_count, n)
    while True:
        window = rel_e[:count]
        span = float(window[-1] - window[0])
        if span <= 0:
            raise ProtocolError("detections do not span any time", protocol="sync")
        step = period / span / 4.0
        stride = max(1, count // max_points)
        pts = window[::stride]
        trials = center + np.arange(-half_range, half_range + step, step)
        strength = np.concatenate(
            [_fold_strength(pts, period, trials[i : i + 256]) for i in range(0, len(trials), 256)]
        )
        center = float(trials[int(strength.argmax())])
        if count >= n:
            return center * 1e6
        half_range = 2.0 * step
        count = min(n, count * 8)


def recover_from_qubits(
    detect_ps: Int64Array,
    channels: npt.NDArray[np.uint8],
    tof_grid_ps: tuple[Int64Array, Int64Array],
    public_weight: Callable[[Int64Array], Float64Array],
    *,
    sat_epoch_ps: int = 0,
    max_offset_ps: float = 20e6,
    config: SyncConfig | None = None,
    shift_sample: int = 4000,
) -> SyncResult:
    """Slot indices without a beacon. ``public_weight(slots)`` is the announced pattern
    as expected relative click probability (e.g. the intensity of each slot)."""
    cfg = config or SyncConfig()
    period = float(cfg.slot_period_ps)
    td = np.asarray(detect_ps, dtype=np.int64)
    grid_t, grid_tof = tof_grid_ps
    td_f = td.astype(np.float64)
    e = td_f - np.interp(td_f, grid_t.astype(np.float64), grid_tof.astype(np.float64))
    e -= float(sat_epoch_ps)
    order = np.argsort(e, kind="stable")
    e0 = float(e[order[0]])
    rel = e - e0
    drift_ppm = search_drift(rel[order], period, cfg.max_drift_ppm)
    rate = period * (1.0 + drift_ppm * 1e-6)
    # slot index counted from e0 (an integer shift and a phase still unknown)
    frac = rel / rate
    ch = np.asarray(channels).astype(np.int64)
    stride = max(1, len(frac) // 400_000)
    sub = frac[::stride]
    corr_ch = _group_peaks(sub - np.rint(sub), ch[::stride], 256, cfg.phase_bins, 0.1, 1)
    frac -= corr_ch[ch]
    # integer offset: nominal index of e0 plus a shift within the offset uncertainty
    base = np.rint(frac)
    in_gate = np.abs(frac - base) <= cfg.gate_slots / 2
    pick = np.flatnonzero(in_gate)[:: max(1, int(in_gate.sum()) // shift_sample)]
    k_nominal = np.rint(e0 / period)
    shifts = np.arange(-np.ceil(max_offset_ps / period), np.ceil(max_offset_ps / period) + 1)
    cand = (base[pick][None, :] + k_nominal + shifts[:, None]).astype(np.int64)
    score = np.asarray(public_weight(cand.ravel()), dtype=np.float64).reshape(cand.shape)
    shift = int(shifts[int(score.mean(axis=1).argmax())])
    k_first = int(k_nominal) + shift
    _track_windows(frac, td, cfg)
    slot_rel = np.rint(frac)
    phase = frac - slot_rel
    slots = slot_rel.astype(np.int64) + k_first
    offset_ps = e0 - k_first * rate
    return SyncResult(
        slots=slots,
        phase_slots=phase,
        in_gate=np.abs(phase) <= cfg.gate_slots / 2,
        offset_ps=float(offset_ps),
        drift_ppm=drift_ppm,
        beacons_used=0,
        beacons_rejected=0,
    )


def _wrap(x: Float64Array) -> Float64Array:
    return np.asarray(x - np.rint(x), dtype=np.float64)


def _track_windows(frac: Float64Array, td: Int64Array, cfg: SyncConfig) -> None:
    """Subtract, in place, each window's residual phase (estimated on a subsample)."""
    if not len(td):
        return
    win = (td - td.min()) // int(cfg.window_s * 1e12)
    n_win = int(win.max()) + 1
    stride = max(1, len(frac) // 1_000_000)
    sub = frac[::stride]
    resid = _group_peaks(
        sub - np.rint(sub),
        win[::stride],
        n_win,
        cfg.phase_bins,
        cfg.gate_slots,
        cfg.min_window_counts,
    )
    frac -= resid[win]


def _group_peaks(
    phase: Float64Array,
    groups: Int64Array,
    n_groups: int,
    bins: int,
    near_slots: float,
    min_counts: int,
) -> Float64Array:
    """Circular peak of the phases (in [-0.5, 0.5)) of each group: histogram peak,
    refined by the mean within ``near_slots``; 0 for groups with fewer than
    ``min_counts`` members."""
    b = np.minimum(((phase + 0.5) * bins).astype(np.int64), bins - 1)
    hist = np.bincount(groups * bins + b, minlength=n_groups * bins).reshape(n_groups, bins)
    counts = hist.sum(axis=1)
    peak = (hist.argmax(axis=1) + 0.5) / bins - 0.5
    d = _wrap(phase - peak[groups])
    near = np.abs(d) < near_slots
    num = np.bincount(groups[near], weights=d[near], minlength=n_groups)
    den = np.bincount(groups[near], minlength=n_groups)
    refined = peak + np.where(den > 0, num / np.maximum(den, 1), 0.0)
    return np.asarray(np.where(counts >= min_counts, refined, 0.0), dtype=np.float64)
