"""The pass lifecycle: schedule -> preposition -> track -> arm -> acquire -> sync ->
distill -> store -> publish -> park/disarm.

:class:`Lifecycle` is one supervised component. Its scheduler predicts passes
from the TLE files (above ``station.min_el_deg``), announces each once
(``PassEvent scheduled``), sleeps on the configured :class:`Clock` until the
pre-positioning time and runs the pass:

- *track* (when ``[rotator] url`` is set): the :class:`Tracker` pre-positions,
  tracks AOS -> LOS and parks;
- *acquire* (when ``[acquisition] tagger_url`` is set): at AOS the detectors are
  armed, the time tagger streams chunks through a bounded :class:`DropQueue`
  (drops counted) into the durable :class:`Spool`; every
  ``min_block_detections`` detections (and at LOS) the chunks are sealed into a
  key block; at LOS the tagger stops and the detectors are disarmed;
- *sync + distill* (when ``[link] endpoint`` is set): each sealed block goes to
  the :class:`DistillRunner` (a worker process recovers the clock and runs Bob
  against the satellite over the authenticated link);
- *store + publish*: a key is stored durably (:class:`KeyStore`) and only then
  announced (telemetry key-exchange event, metrics) and committed at the
  satellite (two-phase: a block stays ``stored`` in the spool until the
  satellite confirms, and the commit is repeated after a restart).

Every state change is logged and published (``StationStatus`` with the state in
``detail``; ``PassEvent`` for scheduled/aos/los/completed/aborted). After a crash,
chunks spooled but not yet in a block are sealed (with their acquisition session's
metadata) and every unfinished block is distilled or committed again, in the
background, so that the station still joins a pass in progress. Lost tagger frames
and dropped chunks are reported as the pass's degradation reasons. A reload
(SIGHUP) swaps TLEs and thresholds for the *next* pass; the pass in progress keeps
its plan. A drain (SIGTERM) stops acquiring, disarms the detectors, parks the mount
(waiting until it is there), finishes the blocks in flight (or leaves them pending
in the spool for the next start) and ends the pass as ``aborted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from groundkey_daemon.config import Config
from groundkey_daemon.daemon_config import DaemonConfig
from groundkey_daemon.distill_runner import BlockJob, BlockResult, DistillRunner, SyncSettings
from groundkey_daemon.keystore import KeyBlock, KeyStore, key_ids_for
from groundkey_daemon.link import LinkError, LinkSettings, commit_block
from groundkey_daemon.metrics import Metrics
from groundkey_daemon.spool import BlockRef, Spool
from groundkey_daemon.supervisor import DropQueue
from groundkey_daemon.telemetry_pub import TelemetryHub, announce_key_block
from groundkey_protocol import telemetry as tm
from groundkey_protocol.clock import Clock, format_utc
from groundkey_protocol.orbit import Pass, Station, Tle, look_angles, parse_tle, predict_passes

__all__ = ["Lifecycle", "PassPlan", "load_tles"]

log = logging.getLogger(__name__)
C_M_S = 299_792_458.0
TOF_STEP_S = 0.05
#: wall seconds a tagger's reported start may lie outside our START call (clock skew)
MAX_START_SKEW_S = 0.5
#: at most this many queued tag chunks are written as one spool chunk (one fsync)
_SPOOL_BATCH_CHUNKS = 64


@dataclass(frozen=True, slots=True)
class PassPlan:
    """One predicted pass of one satellite."""

    pass_id: str
    tle: Tle
    pass_: Pass


def load_tles(config: DaemonConfig) -> list[Tle]:
    """The TLEs of ``station.satellite`` (or all) from the configured files."""
    tles: list[Tle] = []
    for name in config.station.tle_files:
        tles.extend(parse_tle(Path(name).read_text(encoding="utf-8")))
    wanted = config.station.satellite.strip()
    if wanted:
        return [t for t in tles if wanted in (t.name, str(t.norad_id))]
    return tles[:1]


def pass_id_for(tle: Tle, p: Pass) -> str:
    return f"{tle.norad_id}-{p.aos.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"


def tof_grid(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The station's time-of-flight prediction over tagger time (from block metadata)."""
    duration_s = float(meta["duration_s"])
    grid_s = np.arange(-1.0, duration_s + 1.0 + TOF_STEP_S, TOF_STEP_S)
    if meta["tof_model"] == "fixed":
        tof_ps = np.full(grid_s.shape, float(meta["fixed_tof_ps"]))
    else:
        tle = parse_tle(f"{meta['tle'][0]}\n{meta['tle'][1]}\n")[0]
        lat, lon, alt = meta["station"]
        la = look_angles(tle, Station(lat, lon, alt), float(meta["start_unix_s"]) + grid_s)
        tof_ps = np.asarray(la.range_m) / C_M_S * 1e12
    return np.rint(grid_s * 1e12).astype(np.int64), np.rint(tof_ps).astype(np.int64)


@dataclass(slots=True)
class PassReport:
    """What a pass produced (no key material)."""

    pass_id: str
    state: str = "scheduled"
    reasons: list[str] = field(default_factory=list)
    chunks: int = 0
    tags: int = 0
    dropped_chunks: int = 0
    blocks: int = 0
    key_blocks: int = 0
    key_bits: int = 0
    results: list[BlockResult] = field(default_factory=list)


class _RateWindow:
    """Per-channel count rates over tagger time, reported about once per wall second."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._counts = np.zeros(256, dtype=np.int64)
        self._first_ps: int | None = None
        self._last_ps = 0
        self._next_wall = time.monotonic()

    def add(self, ts: np.ndarray, ch: np.ndarray) -> tuple[float, dict[str, float]] | None:
        if ts.size:
            self._counts += np.bincount(ch, minlength=256)[:256]
            if self._first_ps is None:
                self._first_ps = int(ts[0])
            self._last_ps = int(ts[-1])
        now = time.monotonic()
        if now < self._next_wall or self._first_ps is None or self._last_ps <= self._first_ps:
            return None
        span_s = (self._last_ps - self._first_ps) * 1e-12
        rates = {str(c): float(self._counts[c] / span_s) for c in np.flatnonzero(self._counts)}
        self._counts[:] = 0
        self._first_ps = None
        self._next_wall = now + self.every_s
        return span_s, rates


def _another_block_fits(
    detections: int, first_ps: int, last_ps: int, start_s: float, los_s: float, block: int
) -> bool:
    """Would the rest of the pass (tag times ``first_ps``..``last_ps`` held ``detections``;
    tagger time 0 is ``start_s``) yield ``block`` more detections at the same rate?"""
    span_s = (last_ps - first_ps) * 1e-12
    left_s = los_s - (start_s + last_ps * 1e-12)
    if span_s <= 0.0:
        return True
    return detections / span_s * left_s >= block


class Lifecycle:
    """Schedules passes and runs each through the states above."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        clock: Clock,
        store: KeyStore,
        runner: DistillRunner,
        hub: TelemetryHub | None = None,
        metrics: Metrics | None = None,
        link_key: bytes | None = None,
        on_status: Callable[[str], None] | None = None,
        on_finished: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.runner = runner
        self.hub = hub
        self.metrics = metrics
        self.link_key = link_key
        self.on_status = on_status
        self.on_finished = on_finished
        self.spool = Spool(config.spool_dir)
        self.tles = load_tles(config)
        self.state = "idle"
        self.current: PassReport | None = None
        self.reports: list[PassReport] = []
        self.passes_run = 0
        self._announced: set[str] = set()
        self._done: set[str] = set()
        self._wake = asyncio.Event()
        self._draining = False
        self._acquire_idle = asyncio.Event()
        self._acquire_idle.set()
        self._recovery: asyncio.Task[None] | None = None
        self._track_idle = asyncio.Event()
        self._track_idle.set()
        self._stop_acquire = asyncio.Event()
        self._blocks: set[asyncio.Task[None]] = set()
        self._distill_slots = asyncio.Semaphore(config.distill.workers)
        self._last_progress = time.monotonic()
        # tag chunks from the tagger to the spool writer; None ends an acquisition
        self.queue: DropQueue[tuple[np.ndarray, np.ndarray] | None] = DropQueue(
            config.acquisition.queue_chunks, name="tag_chunks"
        )
        if metrics is not None:
            q = self.queue
            metrics.track_queue("tag_chunks", lambda: q.dropped, lambda: q.depth)

    def __repr__(self) -> str:
        return f"Lifecycle(state={self.state!r}, passes_run={self.passes_run})"

    # -- health, reload, drain -------------------------------------------------------

    def progress(self) -> None:
        self._last_progress = time.monotonic()

    def healthy(self, stale_s: float = 60.0) -> bool:
        """True while the scheduler and device loops keep making progress."""
        return time.monotonic() - self._last_progress < stale_s

    async def reload(self, config: DaemonConfig) -> None:
        """New TLEs and thresholds for the next pass (raises, keeping the old, on error)."""
        tles = await asyncio.to_thread(load_tles, config)
        if not tles:
            raise ValueError("no TLE for the configured satellite")
        self.config = config
        self.tles = tles
        log.info(
            "reloaded %d TLE(s) (epoch %s), min elevation %.1f deg%s",
            len(tles),
            format_utc(tles[0].epoch),
            config.station.min_el_deg,
            "; the pass in progress keeps its plan" if self.current else "",
        )
        self._wake.set()

    async def drain(self) -> None:
        """Stop acquiring, park the mount and disarm the detectors; finish the blocks in
        flight (unfinished ones stay spooled)."""
        self._draining = True
        self._stop_acquire.set()
        self._wake.set()
        await self._acquire_idle.wait()
        await self._track_idle.wait()  # the mount is parked before the service stops
        if self._recovery is not None:
            await asyncio.gather(self._recovery, return_exceptions=True)
        while self._blocks:
            await asyncio.gather(*list(self._blocks), return_exceptions=True)

    # -- events ----------------------------------------------------------------------

    def _event(self, report: PassReport | None, state: str, detail: str = "") -> None:
        self.state = state
        self.progress()
        pass_id = report.pass_id if report else "-"
        if report is not None:
            report.state = state
        text = f"pass {pass_id}: {state}" + (f" ({detail})" if detail else "")
        log.info("%s", text)
        if self.on_status is not None:
            self.on_status(text)
        if self.hub is not None:
            station_state: tm.StationState = (
                "distilling"
                if state in ("sync", "distill", "store", "publish")
                else "tracking"
                if report is not None and state not in ("completed", "aborted")
                else "idle"
            )
            self.hub.publish(
                tm.StationStatus(station=self.hub.station, state=station_state, detail=text)
            )

    def _pass_event(self, plan: PassPlan, event: tm.PassPhase, reason: str = "") -> None:
        log.info("pass %s: %s%s", plan.pass_id, event, f" ({reason})" if reason else "")
        if self.hub is None:
            return
        p = plan.pass_
        self.hub.publish(
            tm.PassEvent(
                station=self.hub.station,
                event=event,
                pass_id=plan.pass_id,
                satellite=plan.tle.name or str(plan.tle.norad_id),
                norad_id=plan.tle.norad_id,
                aos=format_utc(p.aos),
                tca=format_utc(p.tca),
                los=format_utc(p.los),
                max_el_deg=p.max_el_deg,
                reason=reason,
            )
        )

    # -- scheduling ------------------------------------------------------------------

    def next_plan(self) -> PassPlan | None:
        """The next pass not yet run whose LOS is still ahead."""
        now_s = self.clock.now_s()
        start = dt.datetime.fromtimestamp(now_s - 3600.0, dt.UTC)
        st = self.config.station
        station = Station(st.lat_deg, st.lon_deg, st.alt_m)
        plans = []
        for tle in self.tles:
            for p in predict_passes(
                tle, station, start, self.config.service.plan_hours + 1.0, st.min_el_deg
            ):
                pid = pass_id_for(tle, p)
                if p.los.timestamp() <= now_s or pid in self._done:
                    continue
                if self.config.service.skip_started and p.aos.timestamp() < now_s:
                    continue
                plans.append(PassPlan(pid, tle, p))
        return min(plans, key=lambda plan: plan.pass_.aos, default=None)

    async def _sleep_until(self, when_s: float, *, wake: bool = True) -> bool:
        """Sleep on the clock until ``when_s``; False when woken (reload/drain) first."""
        while True:
            self.progress()
            delay = self.clock.wall_delay_until_s(when_s)
            if delay <= 0:
                return True
            if wake and self._wake.is_set():
                self._wake.clear()
                return False
            if self._draining:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, 1.0)):
                    await (self._wake.wait() if wake else asyncio.sleep(1))

    async def run(self) -> None:
        """The scheduler loop (a supervised component)."""
        # Blocks a crash left behind are finished in the background: a slow or absent
        # link must not make the station miss the pass in progress.
        if self._recovery is None:  # once: a restarted component must not re-run blocks
            refs = await asyncio.to_thread(self._seal_orphans)
            self._recovery = asyncio.create_task(self.recover(refs), name="lifecycle:recover")
        try:
            await self._schedule()
        except asyncio.CancelledError:
            self._recovery.cancel()
            raise

    async def _schedule(self) -> None:
        while not self._draining:
            self.progress()
            plan = self.next_plan()
            if plan is None:
                self._event(None, "idle", "no pass in the planning window")
                await self._sleep_until(self.clock.now_s() + 3600.0)
                continue
            if plan.pass_id not in self._announced:
                self._announced.add(plan.pass_id)
                self._pass_event(plan, "scheduled")
            lead_s = self.config.tracking.preposition_s
            if not await self._sleep_until(plan.pass_.aos.timestamp() - lead_s):
                continue
            report = await self.run_pass(plan)
            self._done.add(plan.pass_id)
            self.passes_run += 1
            self.reports.append(report)
            limit = self.config.service.max_passes
            if limit and self.passes_run >= limit and self.on_finished is not None:
                self.on_finished(f"{self.passes_run} pass(es) done")
                break
        self.state = "stopped"

    # -- one pass --------------------------------------------------------------------

    async def run_pass(self, plan: PassPlan) -> PassReport:
        report = PassReport(plan.pass_id)
        self.current = report
        self._stop_acquire.clear()
        config = self.config  # a reload meanwhile applies to the next pass
        try:
            if not config.service.passes:
                self._event(report, "skipped", "passes disabled")
                return report
            self._event(report, "preposition")
            tasks = []
            async with asyncio.TaskGroup() as tg:
                if config.rotator.url:
                    tasks.append(tg.create_task(self._guard(report, "track", self._track(plan))))
                if config.acquisition.tagger_url:
                    tasks.append(
                        tg.create_task(self._guard(report, "acquire", self._acquire(plan, report)))
                    )
                if not tasks:
                    tg.create_task(self._follow(plan, report))
            while self._blocks:
                await asyncio.gather(*list(self._blocks), return_exceptions=True)
            if self._draining:
                report.reasons.append("interrupted: the service is stopping")
            outcome: tm.PassPhase = (
                "completed"
                if not self._draining and (report.key_blocks or not report.reasons)
                else "aborted"
            )
            self._event(report, outcome, "; ".join(report.reasons))
            self._pass_event(plan, outcome, "; ".join(report.reasons))
            # an interrupted pass keeps its raw data (it may be resumed after a restart)
            if (
                not self._draining
                and self.spool.blocks(plan.pass_id)
                and not any(b.state != "done" for b in self.spool.blocks(plan.pass_id))
            ):
                await asyncio.to_thread(self.spool.remove_pass, plan.pass_id)
            return report
        finally:
            report.state = "done"
            self.current = None
            self.state = "idle"

    async def _guard(self, report: PassReport, what: str, coro: Any) -> None:
        """A failing step degrades the pass (reason reported) instead of killing it."""
        try:
            await coro
        except Exception as exc:
            reason = f"{what} failed: {type(exc).__name__}: {exc}"
            log.error("pass %s: %s", report.pass_id, reason)
            report.reasons.append(reason)

    async def _follow(self, plan: PassPlan, report: PassReport) -> None:
        """No devices configured: just follow the pass on the clock."""
        if await self._sleep_until(plan.pass_.aos.timestamp(), wake=False):
            self._pass_event(plan, "aos")
            self._event(report, "track")
        await self._sleep_until(plan.pass_.los.timestamp(), wake=False)
        self._pass_event(plan, "los")

    async def _track(self, plan: PassPlan) -> None:
        from groundkey_daemon.tracking import (
            Tracker,
            TrackingSettings,
            TrackSample,
            rotator_from_config,
        )

        cfg = self.config
        legacy = Config(station=cfg.station, rotator=cfg.rotator, tracking=cfg.tracking)
        rotator = rotator_from_config(legacy)
        st = cfg.station
        station = Station(st.lat_deg, st.lon_deg, st.alt_m)
        last = [0.0]

        def on_sample(sample: TrackSample) -> None:
            self.progress()
            now = time.monotonic()
            if self.hub is None or sample.reported is None or now - last[0] < 1.0:
                return
            last[0] = now
            error = sample.error_deg
            self.hub.publish(
                tm.Pointing(
                    station=self.hub.station,
                    az_deg=float(sample.reported.az_deg),
                    el_deg=float(sample.reported.el_deg),
                    target_az_deg=float(sample.satellite.az_deg),
                    target_el_deg=float(sample.satellite.el_deg),
                    error_deg=None if math.isnan(error) else float(error),
                    norad_id=plan.tle.norad_id,
                )
            )

        self._track_idle.clear()
        try:
            async with rotator:
                tracker = Tracker(
                    rotator=rotator,
                    tle=plan.tle,
                    station=station,
                    pass_=plan.pass_,
                    clock=self.clock,
                    settings=TrackingSettings.from_config(legacy),
                    on_sample=on_sample,
                )
                run = asyncio.ensure_future(tracker.run())
                stop = asyncio.ensure_future(self._stop_acquire.wait())
                try:
                    await asyncio.wait((run, stop), return_when=asyncio.FIRST_COMPLETED)
                    if not run.done():
                        # stopping mid-pass (SIGTERM): park now rather than track to LOS
                        if self.current is not None:
                            self._event(self.current, "park", "stopping")
                        tracker.abort("the service is stopping")
                    stats = await run
                finally:
                    stop.cancel()
                    run.cancel()  # only if we are cancelled ourselves
            log.info("pass %s: tracking done: %s", plan.pass_id, stats.summary())
            if self.current is not None and not stats.aborted:
                self._event(self.current, "park")
        finally:
            self._track_idle.set()

    async def _acquire(self, plan: PassPlan, report: PassReport) -> None:
        self._acquire_idle.clear()
        try:
            await self._acquire_pass(plan, report)
        finally:
            self._acquire_idle.set()

    async def _acquire_pass(self, plan: PassPlan, report: PassReport) -> None:
        from groundkey_drivers.detector import open_detector
        from groundkey_drivers.timetagger.base import open_tagger

        cfg = self.config
        acq = cfg.acquisition
        if not await self._sleep_until(plan.pass_.aos.timestamp(), wake=False):
            return
        self._pass_event(plan, "aos")
        self._event(report, "track")
        detector = open_detector(acq.detector_url) if acq.detector_url else None
        try:
            if detector is not None:
                self._event(report, "arm")
                await detector.open()
                await detector.wait_settled()
                await detector.arm()
            tagger = open_tagger(acq.tagger_url)
            async with tagger:
                before_s = self.clock.now_s()
                await tagger.start()
                # tagger time 0 is the instant the device reports (its time base may
                # have started well before start() returned); our clock only if unknown
                start_unix_s = self._tagger_start_s(tagger.start_unix_s, before_s)
                los_s = plan.pass_.los.timestamp()
                meta = {
                    "start_unix_s": start_unix_s,
                    "duration_s": los_s - start_unix_s + 5.0,
                    "tof_model": acq.tof_model,
                    "fixed_tof_ps": acq.fixed_tof_ps,
                    "tle": [plan.tle.line1, plan.tle.line2],
                    "station": [cfg.station.lat_deg, cfg.station.lon_deg, cfg.station.alt_m],
                }
                await asyncio.to_thread(self.spool.begin_session, plan.pass_id, meta)
                self._event(report, "acquire")
                writer = asyncio.create_task(self._spool_writer(plan, report, meta))
                try:
                    rates = _RateWindow()
                    async for batch in tagger.batches():
                        self.progress()
                        published = rates.add(batch.timestamps_ps, batch.channels)
                        if published is not None and self.hub is not None:
                            window_s, rates_hz = published
                            self.hub.publish(
                                tm.CountRates(
                                    station=self.hub.station, rates_hz=rates_hz, window_s=window_s
                                )
                            )
                        if batch.timestamps_ps.size and not self.queue.put_nowait(
                            (batch.timestamps_ps, batch.channels)
                        ):
                            report.dropped_chunks += 1
                        if self._stop_acquire.is_set() or self.clock.now_s() >= los_s:
                            break
                finally:
                    with contextlib.suppress(Exception):
                        await tagger.stop()
                    await self._end_spool_writer(writer)
            self._pass_event(plan, "los")
            if report.dropped_chunks:
                report.reasons.append(f"{report.dropped_chunks} tag chunk(s) dropped")
            lost = tagger.stats
            if lost.lost_frames or lost.dropped_transfers or lost.missed_events:
                reason = (
                    f"time tagger lost {lost.lost_frames} frame(s), "
                    f"{lost.dropped_transfers} transfer(s), {lost.missed_events} event(s)"
                )
                log.warning("pass %s: %s", plan.pass_id, reason)
                report.reasons.append(reason)
        finally:
            if detector is not None:
                self._event(report, "disarm")
                with contextlib.suppress(Exception):
                    await detector.disarm()
                await detector.close()

    def _tagger_start_s(self, reported_s: float | None, before_s: float) -> float:
        """The instant tagger time 0 stands for: as the device reported it, unless it
        does not report it or its clock disagrees with ours (the instant must lie between
        our clock before START, ``before_s``, and now); else our clock now."""
        now_s = self.clock.now_s()
        if reported_s is None:
            return now_s
        slack_s = MAX_START_SKEW_S * max(1.0, self.clock.speed)
        if not before_s - slack_s <= reported_s <= now_s + slack_s:
            log.warning(
                "tagger reports its time base started %.1f s before START: clocks disagree;"
                " using ours",
                before_s - reported_s,
            )
            return now_s
        log.info("tagger time base started %.3f s before start() returned", now_s - reported_s)
        return reported_s

    async def _end_spool_writer(self, writer: asyncio.Task[None]) -> None:
        """Queue the end marker (waiting for room: it is never dropped) and wait for the
        writer; if the writer failed instead, clear what it left so the next pass
        starts empty, and raise its error."""
        end = asyncio.ensure_future(self.queue.put(None))
        try:
            await asyncio.wait((end, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            end.cancel()
            if writer.done():
                while self.queue.depth:
                    self.queue.get_nowait()
        await writer

    async def _spool_writer(self, plan: PassPlan, report: PassReport, meta: dict[str, Any]) -> None:
        """Chunks -> durable spool -> sealed blocks -> distillation tasks.

        Whatever the tagger queued while the previous write was syncing goes to disk
        as one spool chunk (one fsync), so a fast tagger (or a sped-up clock) raises
        the batch size instead of overflowing the queue.

        A block is sealed once it holds ``min_block_detections``, unless what is left
        of the pass at the block's detection rate would not fill another one: then the
        tail joins this block rather than ending as a block too small for a key.
        """
        acq = self.config.acquisition
        los_s = plan.pass_.los.timestamp()
        start_s = float(meta["start_unix_s"])
        names: list[str] = []
        detections = 0
        first_ps: int | None = None
        done = False
        while not done:
            batch: list[tuple[np.ndarray, np.ndarray]] = []
            item = await self.queue.get()
            while True:
                if item is None:  # the end of the acquisition
                    done = True
                    break
                batch.append(item)
                if not self.queue.depth or len(batch) >= _SPOOL_BATCH_CHUNKS:
                    break
                item = self.queue.get_nowait()
            if not batch:
                continue
            ts = np.concatenate([b[0] for b in batch])
            ch = np.concatenate([b[1] for b in batch])
            name = await asyncio.to_thread(self.spool.append, plan.pass_id, ts, ch)
            names.append(name)
            report.chunks += len(batch)
            report.tags += int(ts.size)
            detections += int((ch != acq.sync_channel).sum())
            first_ps = int(ts[0]) if first_ps is None else first_ps
            if detections >= acq.min_block_detections and _another_block_fits(
                detections, first_ps, int(ts[-1]), start_s, los_s, acq.min_block_detections
            ):
                await self._seal(plan, report, names, meta)
                names, detections, first_ps = [], 0, None
        if names:
            await self._seal(plan, report, names, meta)

    async def _seal(
        self, plan: PassPlan, report: PassReport, names: list[str], meta: dict[str, Any]
    ) -> None:
        ref = await asyncio.to_thread(self.spool.seal_block, plan.pass_id, list(names), meta)
        report.blocks += 1
        if self.config.link.endpoint and self.link_key is not None:
            self._spawn_block(ref, report)

    def _spawn_block(self, ref: BlockRef, report: PassReport | None) -> None:
        task = asyncio.get_running_loop().create_task(self._distill(ref, report))
        self._blocks.add(task)
        task.add_done_callback(self._blocks.discard)

    def _link_settings(self) -> LinkSettings:
        cfg = self.config
        assert self.link_key is not None
        return LinkSettings(
            cfg.link.endpoint,
            self.link_key,
            local=cfg.link.local,
            peer=cfg.link.peer,
            timeout_s=cfg.link.timeout_s,
            window=cfg.link.replay_window,
        )

    def _job(self, ref: BlockRef) -> BlockJob:
        cfg = self.config
        acq, d = cfg.acquisition, cfg.distill
        assert self.link_key is not None
        t_ps, tof_ps = tof_grid(ref.meta)
        params = msgspec.structs.asdict(d)
        return BlockJob(
            pass_id=ref.pass_id,
            chunk_paths=tuple(self.spool.chunk_paths(ref)),
            link=self._link_settings(),
            params=params,
            sync=SyncSettings(
                t_ps,
                tof_ps,
                sync_channel=acq.sync_channel,
                slot_period_ps=acq.slot_period_ps,
                sync_divider=acq.sync_divider,
            ),
        )

    async def _distill(self, ref: BlockRef, report: PassReport | None) -> None:
        async with self._distill_slots:
            job = self._job(ref)
            ref = await asyncio.to_thread(self.spool.mark, ref, "distilling", block_id=job.block_id)
            self._event(report, "sync", f"block {ref.index}")
            self._event(report, "distill", f"block {job.block_id}")
            try:
                async with asyncio.timeout(self.config.distill.timeout_s):
                    result = await self.runner.run(job)
            except Exception as exc:
                log.error("block %s: distillation failed: %s", job.block_id, exc)
                result = BlockResult(job.block_id, ref.pass_id, "aborted", reason=str(exc))
            if report is not None:
                report.results.append(result)
            if result.ok:
                await self._store(result, report)
                ref = await asyncio.to_thread(self.spool.mark, ref, "stored", status="key")
                await self._commit(ref, job.block_id)
                return
            if result.retry:
                log.warning("block %s: %s; raw data kept for a retry", job.block_id, result.reason)
                if report is not None:
                    report.reasons.append(f"block {ref.index}: link unavailable, kept for retry")
                await asyncio.to_thread(self.spool.mark, ref, "pending", block_id="")
                return
            log.warning("block %s: no key: %s", job.block_id, result.reason)
            if self.metrics is not None:
                self.metrics.key_blocks.labels(outcome="aborted").inc()
            if report is not None:
                report.reasons.append(f"block {ref.index}: {result.reason}")
            await asyncio.to_thread(
                self.spool.mark, ref, "done", status=result.status, reason=result.reason
            )

    async def _commit(self, ref: BlockRef, block_id: str) -> bool:
        """Second phase at the satellite; the block stays "stored" (retried) on failure."""
        try:
            await asyncio.to_thread(commit_block, self._link_settings(), block_id)
        except (LinkError, OSError) as exc:
            log.warning("block %s: commit not confirmed yet (%s); retried later", block_id, exc)
            return False
        await asyncio.to_thread(self.spool.mark, ref, "done")
        log.info("block %s committed at the satellite", block_id)
        return True

    async def _store(self, result: BlockResult, report: PassReport | None) -> None:
        self._event(report, "store", f"block {result.block_id}")
        block = KeyBlock(
            block_id=result.block_id,
            pass_id=result.pass_id,
            peer=self.config.link.peer,
            material=result.material[: result.key_bits // 8],
            qber=result.qber,
            eps_sec=result.eps_sec,
            eps_cor=result.eps_cor,
            secret_fraction=result.secret_fraction,
        )
        ids = await self.store.store(block)
        if report is not None:
            report.key_blocks += 1
            report.key_bits += block.length_bits
        self._event(report, "publish", f"block {result.block_id}: {len(ids)} key(s)")
        if self.hub is not None:
            announce_key_block(
                self.hub, block, ids, key_bytes=self.store.key_size_bytes, metrics=self.metrics
            )

    def _seal_orphans(self) -> list[BlockRef]:
        """Seal the chunks a crash left outside any block; then every block (blocking:
        run in a thread, before acquisition starts)."""
        roots = (
            sorted(p.name for p in self.spool.root.iterdir()) if self.spool.root.is_dir() else []
        )
        for pass_id in roots:
            for names, meta in self.spool.orphans(pass_id):
                ref = self.spool.seal_block(pass_id, names, meta)
                log.info(
                    "pass %s: %d chunk(s) spooled before the restart sealed as block %d",
                    pass_id,
                    len(names),
                    ref.index,
                )
        return self.spool.blocks()

    async def recover(self, refs: list[BlockRef] | None = None) -> None:
        """Blocks a crash left in the spool (``refs``: as listed at start-up): stored ones
        are committed and marked done, the others distilled again."""
        if refs is None:
            refs = await asyncio.to_thread(self.spool.blocks)
        for ref in refs:
            if ref.state == "done":
                continue
            linked = bool(self.config.link.endpoint and self.link_key is not None)
            old = ref.meta.get("block_id")
            if old:
                states = await self.store.key_states(key_ids_for(str(old), 1))
                if states:
                    log.info("block %s was stored before the restart", old)
                    ref = await asyncio.to_thread(self.spool.mark, ref, "stored", status="key")
                    if linked:
                        await self._commit(ref, str(old))
                    continue
            if not linked:
                continue
            log.info("pass %s block %d: distilling after a restart", ref.pass_id, ref.index)
            self._spawn_block(ref, None)
        while self._blocks:
            await asyncio.gather(*list(self._blocks), return_exceptions=True)
