"""Downlink presets. ``micius-2017`` follows REFERENCES §3 (Liao et al. 2017)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from groundkey_protocol.errors import ProtocolError

# Background counts per second for the whole telescope (1 m, 100 µrad FOV, 1 nm filter).
BACKGROUND_CPS = {"new-moon": 10.0, "full-moon": 60.0, "urban": 600.0, "day": 3.0e6}

MICIUS_TLE = (
    "MICIUS (QUESS)\n"
    "1 41731U 16051A   16353.90152003  .00000364  00000-0  17957-4 0  9993\n"
    "2 41731  97.3699 267.4500 0013200 178.5836 246.0824 15.23915303 19063\n"
)
XINGLONG = (40.3959, 117.5775, 893.0)
# Culmination of the Micius pass over Xinglong used by Liao et al.-like demos (645 km).
MICIUS_TCA = "2016-12-19T16:52:13Z"


@dataclass(frozen=True, slots=True)
class LinkPreset:
    name: str
    rate_hz: float = 100e6
    intensities: tuple[float, float, float] = (0.8, 0.1, 0.0)
    # Pass geometry; None -> constant loss (fiber bench).
    tle: str | None = MICIUS_TLE
    station: tuple[float, float, float] = XINGLONG
    start: str = "2016-12-19T16:49:58Z"  # range 1200 km, TCA - 135 s
    duration_s: float = 274.0
    constant_loss_db: float = 30.0
    tx_aperture_m: float = 0.30
    divergence_rad: float = 10e-6
    pointing_jitter_rad: float = 1.5e-6
    rx_aperture_m: float = 1.0
    optics_efficiency: float = 0.16
    zenith_transmittance: float = 0.90
    excess_loss_db: float = 3.1  # fixed extra loss (calibrated to the 645 km point)
    low_el_excess_db: float = 4.5  # grows as exp((airmass - 3) / 0.38)
    scintillation_sigma: float = 0.3  # std of log-irradiance, 1 ms blocks
    detector_efficiency: float = 0.5
    background: str = "new-moon"
    dark_cps: float = 25.0
    dead_time_ps: int = 40_000
    afterpulse_probability: float = 0.005
    jitter_fwhm_ps: float = 400.0
    misalignment: float = 0.012
    channel_delays_ps: tuple[int, int, int, int] = (1200, 1500, 900, 1100)
    # Satellite clock relative to its nominal epoch, unknown to the station.
    clock_offset_ps: int = 7_300_000
    clock_drift_ppm: float = 12.0
    along_track_error_s: float = 0.05  # TLE error: true satellite runs ahead this much
    # Sync beacon: one bright pulse every sync_divider slots on sync_channel.
    sync_divider: int = 10_000
    sync_channel: int = 5
    sync_efficiency: float = 0.95
    sync_jitter_fwhm_ps: float = 100.0
    sync_delay_ps: int = 3000

    @property
    def slot_period_ps(self) -> int:
        return round(1e12 / self.rate_hz)

    def replace(self, **changes: object) -> LinkPreset:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


PRESETS: dict[str, LinkPreset] = {
    "micius-2017": LinkPreset("micius-2017"),
    "bench-fiber": LinkPreset(
        "bench-fiber",
        tle=None,
        duration_s=60.0,
        constant_loss_db=17.0,
        scintillation_sigma=0.0,
        background="new-moon",
        clock_offset_ps=2_100_000,
        clock_drift_ppm=-3.0,
        along_track_error_s=0.0,
    ),
}


def preset(name: str) -> LinkPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ProtocolError(f"unknown downlink preset {name!r} (know {sorted(PRESETS)})") from None
