"""The downlink model: pass geometry -> channel transmittance -> detections, in chunks.

Only slots that produce a click are ever generated. Per 1 ms block the click
probability of the brightest intensity bounds all others, so candidate slots are
drawn at that rate (binomial count, uniform positions) and thinned by the ratio of
the slot's own click probability (its intensity comes from :class:`Alice`'s
counter-based hash). Memory is bounded by one chunk.

Time bases: tagger time 0 is ``start``; slot 0 is nominally emitted at tagger time
``sat_epoch_ps`` (default 0); truly at ``clock_offset_ps + k * period * (1 + drift)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from groundkey_protocol.clock import parse_utc
from groundkey_protocol.orbit import Station, look_angles, parse_tle
from groundkey_sim.downlink.presets import BACKGROUND_CPS, LinkPreset
from groundkey_sim.downlink.source import Alice

C_M_S = 299_792_458.0
BLOCK_S = 1e-3
GRID_S = 0.05
FIBER_DELAY_PS = 5_000_000
N_DETECTORS = 4
GEOMETRY_BLOCK = 500


def _geometry(
    tle_text: str, station: tuple[float, float, float], times_unix_s: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Range and elevation over ``times``, in blocks so memory stays bounded."""
    tle = parse_tle(tle_text)[0]
    site = Station(*station)
    range_m = np.empty(len(times_unix_s))
    el_deg = np.empty(len(times_unix_s))
    for i in range(0, len(times_unix_s), GEOMETRY_BLOCK):
        la = look_angles(tle, site, times_unix_s[i : i + GEOMETRY_BLOCK])
        range_m[i : i + GEOMETRY_BLOCK] = la.range_m
        el_deg[i : i + GEOMETRY_BLOCK] = la.el_deg
    return range_m, el_deg


@dataclass(slots=True)
class TagChunk:
    """Tags of one chunk, sorted by time, with the truth the station never sees."""

    timestamps_ps: npt.NDArray[np.int64]
    channels: npt.NDArray[np.uint8]
    true_slots: npt.NDArray[np.int64]  # -1 for background, dark counts and afterpulses
    start_s: float
    mean_range_m: float
    mean_loss_db: float

    def __len__(self) -> int:
        return len(self.timestamps_ps)


class Downlink:
    """One simulated pass (or bench run) of ``preset``, reproducible from ``seed``."""

    def __init__(
        self,
        preset: LinkPreset,
        *,
        seed: int = 1,
        start_unix_s: float | None = None,
        duration_s: float | None = None,
        sat_epoch_ps: int = 0,
    ) -> None:
        self.preset = preset
        self.alice = Alice(seed)
        self._seed = seed
        self.start_unix_s = (
            parse_utc(preset.start).timestamp() if start_unix_s is None else float(start_unix_s)
        )
        self.duration_s = preset.duration_s if duration_s is None else float(duration_s)
        self.sat_epoch_ps = int(sat_epoch_ps)
        self.period_ps = preset.slot_period_ps
        self._grid_s = np.arange(-1.0, self.duration_s + 1.0 + GRID_S, GRID_S)
        if preset.tle is not None:
            parse_tle(preset.tle)[0]
            Station(*preset.station)
            t_true = self.start_unix_s + self._grid_s + preset.along_track_error_s
            self._range_m, self._el_deg = _geometry(preset.tle, preset.station, t_true)
        else:
            self._range_m = np.full(self._grid_s.shape, FIBER_DELAY_PS * 1e-12 * C_M_S)
            self._el_deg = np.full(self._grid_s.shape, 90.0)

    def __repr__(self) -> str:
        return f"Downlink({self.preset.name!r}, start={self.start_unix_s}, dur={self.duration_s})"

    # ------------------------------------------------------------------ physics

    def tof_ps(self, t_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """True time of flight for emission at tagger time ``t_s`` (seconds)."""
        return np.interp(t_s, self._grid_s, self._range_m) / C_M_S * 1e12

    def loss_db(self, t_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Mean link loss (without detector efficiency, scintillation, pointing) in dB."""
        p = self.preset
        if p.tle is None:
            return np.full(np.shape(t_s), p.constant_loss_db)
        rng_m = np.interp(t_s, self._grid_s, self._range_m)
        el = np.radians(np.maximum(np.interp(t_s, self._grid_s, self._el_deg), 1.0))
        airmass = 1.0 / np.sin(el)
        geo = (p.rx_aperture_m / (p.tx_aperture_m + p.divergence_rad * rng_m)) ** 2
        atm = p.zenith_transmittance**airmass
        excess_db = p.excess_loss_db + p.low_el_excess_db * np.exp((airmass - 3.0) / 0.38)
        half = p.divergence_rad / 2.0
        point_mean = 1.0 / (1.0 + 4.0 * p.pointing_jitter_rad**2 / half**2)
        eta = np.minimum(geo, 1.0) * atm * p.optics_efficiency * point_mean
        return -10.0 * np.log10(eta) + excess_db

    def _block_eta(
        self, t_s: npt.NDArray[np.float64], rng: np.random.Generator
    ) -> npt.NDArray[np.float64]:
        """Per-block total efficiency with pointing jitter and scintillation (mean-preserving)."""
        p = self.preset
        eta = 10.0 ** (-self.loss_db(t_s) / 10.0) * p.detector_efficiency
        if p.tle is not None and p.pointing_jitter_rad > 0:
            half = p.divergence_rad / 2.0
            theta = rng.rayleigh(p.pointing_jitter_rad, t_s.shape)
            mean = 1.0 / (1.0 + 4.0 * p.pointing_jitter_rad**2 / half**2)
            eta = eta * np.exp(-2.0 * theta**2 / half**2) / mean
        if p.scintillation_sigma > 0:
            s = p.scintillation_sigma
            eta = eta * rng.lognormal(-s * s / 2.0, s, t_s.shape)
        return np.asarray(np.minimum(eta, 1.0), dtype=np.float64)

    # ------------------------------------------------------------------ generation

    def slot_range(self) -> tuple[int, int]:
        """First and one-past-last slot emitted during the run."""
        p = self.preset
        k0 = max(0, -(self.sat_epoch_ps + p.clock_offset_ps) // self.period_ps)
        return int(k0), int(k0 + round(self.duration_s * p.rate_hz))

    def chunks(self, chunk_s: float = 0.1) -> Iterator[TagChunk]:
        """Yield the detections chunk by chunk (chunks of emission time)."""
        p = self.preset
        rng = np.random.default_rng([self._seed, 0x5EED])
        k_first, k_end = self.slot_range()
        slots_per_block = round(BLOCK_S * p.rate_hz)
        blocks_per_chunk = max(1, round(chunk_s / BLOCK_S))
        slots_per_chunk = slots_per_block * blocks_per_chunk
        last_ps = np.int64(0)
        for k0 in range(k_first, k_end, slots_per_chunk):
            k1 = min(k0 + slots_per_chunk, k_end)
            chunk = self._chunk(k0, k1, slots_per_block, rng)
            ts = chunk.timestamps_ps
            if len(ts):
                np.maximum(ts, last_ps, out=ts)
                last_ps = ts[-1]
            yield chunk

    def emission_ps(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        p = self.preset
        k = slots.astype(np.float64)
        drift = 1.0 + p.clock_drift_ppm * 1e-6
        return self.sat_epoch_ps + p.clock_offset_ps + k * self.period_ps * drift

    def arrival_ps(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        emit = self.emission_ps(slots)
        return emit + self.tof_ps(emit * 1e-12)

    def _chunk(self, k0: int, k1: int, per_block: int, rng: np.random.Generator) -> TagChunk:
        p = self.preset
        n_blocks = -(-(k1 - k0) // per_block)
        block_start = k0 + np.arange(n_blocks, dtype=np.int64) * per_block
        block_len = np.minimum(block_start + per_block, k1) - block_start
        t_mid_s = self.emission_ps(block_start + block_len // 2) * 1e-12
        eta = self._block_eta(t_mid_s, rng)
        mu = np.asarray(p.intensities, dtype=np.float64)
        p_click = -np.expm1(-np.outer(eta, mu))  # (blocks, 3)
        p_max = p_click.max(axis=1)
        counts = rng.binomial(block_len, p_max)
        block_idx = np.repeat(np.arange(n_blocks), counts)
        slots = block_start[block_idx] + (rng.random(len(block_idx)) * block_len[block_idx]).astype(
            np.int64
        )
        slots = np.unique(slots)
        block_idx = (slots - k0) // per_block
        cls = self.alice.intensity_class(slots)
        accept = rng.random(len(slots)) * p_max[block_idx] < p_click[block_idx, cls]
        slots = slots[accept]
        bit, basis, _ = self.alice.values(slots)
        bob_basis = rng.integers(0, 2, len(slots), dtype=np.uint8)
        flip = rng.random(len(slots)) < p.misalignment
        bob_bit = np.where(
            bob_basis == basis, bit ^ flip, rng.integers(0, 2, len(slots), dtype=np.uint8)
        ).astype(np.uint8)
        sig_ch = (1 + 2 * bob_basis + bob_bit).astype(np.uint8)
        sigma = p.jitter_fwhm_ps / 2.355
        delays = np.asarray(p.channel_delays_ps, dtype=np.float64)
        sig_t = self.arrival_ps(slots) + delays[sig_ch - 1] + rng.normal(0, sigma, len(slots))

        t_lo = float(self.arrival_ps(np.array([k0], dtype=np.int64))[0])
        t_hi = float(self.arrival_ps(np.array([k1], dtype=np.int64))[0])
        dur_s = (t_hi - t_lo) * 1e-12
        noise_cps = BACKGROUND_CPS[p.background] + p.dark_cps * N_DETECTORS
        n_noise = rng.poisson(noise_cps * dur_s)
        noise_t = rng.uniform(t_lo, t_hi, n_noise)
        noise_ch = rng.integers(1, N_DETECTORS + 1, n_noise, dtype=np.uint8)

        sync_k = np.arange(-(-k0 // p.sync_divider), -(-k1 // p.sync_divider), dtype=np.int64)
        sync_k = sync_k[rng.random(len(sync_k)) < p.sync_efficiency] * p.sync_divider
        sync_t = (
            self.arrival_ps(sync_k)
            + p.sync_delay_ps
            + rng.normal(0, p.sync_jitter_fwhm_ps / 2.355, len(sync_k))
        )

        clicks_t = np.concatenate([sig_t, noise_t])
        clicks_ch = np.concatenate([sig_ch, noise_ch])
        n_ap = rng.binomial(len(clicks_t), p.afterpulse_probability)
        pick = rng.integers(0, max(len(clicks_t), 1), n_ap)
        ap_t = clicks_t[pick] + p.dead_time_ps + rng.exponential(200_000.0, n_ap)
        ap_ch = clicks_ch[pick]

        t = np.concatenate([sig_t, noise_t, ap_t, sync_t])
        ch = np.concatenate(
            [sig_ch, noise_ch, ap_ch, np.full(len(sync_k), p.sync_channel, np.uint8)]
        )
        truth = np.concatenate([slots, np.full(n_noise + n_ap, -1, np.int64), sync_k])
        ts = np.rint(t).astype(np.int64)
        # Dead time (non-paralysable, per channel): drop a click closer than the dead
        # time to the previous click of its channel (approximation: previous in input).
        order = np.lexsort((ts, ch))
        ts_o, ch_o = ts[order], ch[order]
        keep_o = np.ones(len(ts_o), dtype=bool)
        keep_o[1:] = (ch_o[1:] != ch_o[:-1]) | (np.diff(ts_o) >= p.dead_time_ps)
        keep_o |= ch_o == p.sync_channel
        kept = order[keep_o]
        final = kept[np.argsort(ts[kept], kind="stable")]
        mid = 0.5 * (t_lo + t_hi) * 1e-12
        return TagChunk(
            timestamps_ps=ts[final],
            channels=ch[final],
            true_slots=truth[final],
            start_s=t_lo * 1e-12,
            mean_range_m=float(np.interp(mid, self._grid_s, self._range_m)),
            mean_loss_db=float(self.loss_db(np.array([mid]))[0]),
        )

    # ------------------------------------------------------------------ station's view

    def predicted_tof(
        self, step_s: float = 0.05
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """What the station predicts from the (imperfect) TLE: (tagger time ps, tof ps) grid."""
        p = self.preset
        grid_s = np.arange(-1.0, self.duration_s + 1.0 + step_s, step_s)
        if p.tle is None:
            tof = np.full(grid_s.shape, float(FIBER_DELAY_PS))
        else:
            range_m, _ = _geometry(p.tle, p.station, self.start_unix_s + grid_s)
            tof = range_m / C_M_S * 1e12
        return np.rint(grid_s * 1e12).astype(np.int64), np.rint(tof).astype(np.int64)
