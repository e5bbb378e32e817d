"""Bob's side of key distillation, run in worker processes so the event loop never blocks.

One job is one key block: the worker reads the block's raw chunks from the spool,
recovers the satellite clock (:func:`~groundkey_protocol.qkd.sync.recover`),
squashes clicks into detections, and runs :class:`DistillBob` against the
satellite over the authenticated link (:class:`~groundkey_daemon.link.ZmqLinkClient`,
blocking, inside the worker). The result carries the key material back to the
daemon, which stores it and then commits the block at the satellite
(:func:`~groundkey_daemon.link.commit_block`); nothing key-related is logged.

:class:`DistillRunner` owns the process pool (``forkserver``: no fork of a
threaded daemon) and measures the event loop's lag while blocks are being
distilled (``lag_p99_s``), which must stay small.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from groundkey_daemon.link import (
    LinkError,
    LinkSettings,
    LinkTimeout,
    ZmqLinkClient,
    encode_params,
)
from groundkey_daemon.metrics import LoopLagMonitor
from groundkey_daemon.spool import read_chunks
from groundkey_protocol.errors import ProtocolError
from groundkey_protocol.link.messages import BlockAbort, BlockAuth
from groundkey_protocol.link.session import PAD_BYTES, BlockOpen, BlockReady, pad_key_count
from groundkey_protocol.qkd.distill import DistillBob, DistillConfig
from groundkey_protocol.qkd.sifting import Detections, squash_clicks
from groundkey_protocol.qkd.sync import SyncConfig, recover

__all__ = [
    "PAD_CONSUMER",
    "BlockJob",
    "BlockResult",
    "DistillRunner",
    "SyncSettings",
    "TranscriptPads",
    "distill_block",
]

log = logging.getLogger(__name__)

#: key-store consumer that Wegman–Carter pads are reserved (and erased) for; never a client
PAD_CONSUMER = "link-auth"

#: DistillConfig fields the station sends to the satellite in BlockOpen
PARAM_FIELDS = (
    "eps_sec",
    "eps_cor",
    "frame_bits",
    "reconcile",
    "amplify",
    "sample_fraction",
    "max_qber",
)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Clock recovery inputs: the time-of-flight prediction over tagger time."""

    tof_grid_t_ps: npt.NDArray[np.int64]
    tof_grid_ps: npt.NDArray[np.int64]
    sync_channel: int = 5
    slot_period_ps: int = 10_000
    sync_divider: int = 10_000


@dataclass(frozen=True, slots=True)
class TranscriptPads:
    """Key from earlier passes for one block's Wegman–Carter transcript tags."""

    key_ids: tuple[str, ...]
    key_bytes: int
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != PAD_BYTES:
            raise ValueError(f"transcript pads must be {PAD_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class BlockJob:
    """Everything a worker needs for one block (picklable)."""

    pass_id: str
    chunk_paths: tuple[str, ...]
    link: LinkSettings
    params: dict[str, Any]
    block_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: None: the chunks already hold pulse slots instead of timestamps (bench input)
    sync: SyncSettings | None = None
    seed: int | None = None
    #: None: HMAC-only (no earlier key yet); :class:`DistillRunner` fills it from the store
    pads: TranscriptPads | None = None


@dataclass(slots=True)
class BlockResult:
    """How a block ended; ``material`` (packed key) only when ``status == "key"``."""

    block_id: str
    pass_id: str
    status: str
    reason: str = ""
    key_bits: int = 0
    material: bytes = field(default=b"", repr=False)
    detections: int = 0
    sifted_bits: int = 0
    qber: float = 0.0
    disclosed_bits: int = 0
    messages: int = 0
    drift_ppm: float = 0.0
    offset_ps: float = 0.0
    wall_s: float = 0.0
    eps_sec: float = 0.0
    eps_cor: float = 0.0
    #: the satellite was not reachable: keep the raw block and try again later
    retry: bool = False
    #: "wegman-carter" (transcript tags with earlier key) or "hmac" (pre-shared key only)
    auth: str = "hmac"

    @property
    def ok(self) -> bool:
        return self.status == "key"

    @property
    def secret_fraction(self) -> float:
        return self.key_bits / self.sifted_bits if self.sifted_bits else 0.0


def wire_params(params: dict[str, Any]) -> dict[str, Any]:
    """The DistillConfig fields of the ``[distill]`` section (``method`` -> ``reconcile``)."""
    out = {k: params[k] for k in PARAM_FIELDS if k in params}
    if "method" in params:
        out["reconcile"] = params["method"]
    return out


def distill_config(params: dict[str, Any]) -> DistillConfig:
    return DistillConfig(**wire_params(params))


def _detections(job: BlockJob, rng: np.random.Generator, result: BlockResult) -> Detections:
    ts, ch = read_chunks(job.chunk_paths)
    if job.sync is None:
        slots, chans = ts, ch
    else:
        s = job.sync
        beacon = ch == s.sync_channel
        sync = recover(
            ts[~beacon],
            ch[~beacon],
            ts[beacon],
            (s.tof_grid_t_ps, s.tof_grid_ps),
            config=SyncConfig(slot_period_ps=s.slot_period_ps, sync_divider=s.sync_divider),
        )
        result.drift_ppm = float(sync.drift_ppm)
        result.offset_ps = float(sync.offset_ps)
        gate = sync.in_gate
        slots, chans = sync.slots[gate], ch[~beacon][gate]
    keep = (chans >= 1) & (chans <= 4)
    return squash_clicks(slots[keep], (chans[keep] - 1).astype(np.uint8), rng)


def distill_block(job: BlockJob) -> BlockResult:
    """Run one block end to end (in a worker process; blocking)."""
    t0 = time.perf_counter()
    result = BlockResult(job.block_id, job.pass_id, "aborted")
    rng = np.random.default_rng(job.seed)
    config = distill_config(job.params)
    result.eps_sec, result.eps_cor = config.eps_sec, config.eps_cor
    try:
        detections = _detections(job, rng, result)
    except (ProtocolError, OSError, ValueError) as exc:
        result.reason = f"sync failed: {exc}"
        return result
    result.detections = int(detections.slots.size)
    bob = DistillBob(config, detections, rng, block_id=job.block_id, pass_id=job.pass_id)
    pads = job.pads
    result.auth = "wegman-carter" if pads is not None else "hmac"
    if pads is None:
        log.info("block %s: no earlier key for transcript pads: HMAC-only", job.block_id)
    with ZmqLinkClient(job.link) as client:
        session = client.session(job.block_id)
        try:
            opening = BlockOpen(
                block_id=job.block_id,
                pass_id=job.pass_id,
                params=encode_params(wire_params(job.params)),
                pad_keys=list(pads.key_ids) if pads is not None else [],
                pad_key_bytes=pads.key_bytes if pads is not None else 0,
            )
            client.send(session, opening)
            reply = client.receive(session)
            if isinstance(reply, BlockAbort):
                raise LinkError(f"satellite refused the block: {reply.reason}")
            if not isinstance(reply, BlockReady):
                raise LinkError(f"unexpected {type(reply).__name__} instead of BlockReady")
            for message in bob.start():
                client.send(session, message)
            while not bob.done:
                incoming = client.receive(session)
                try:
                    out = bob.receive(incoming)
                except ProtocolError as exc:
                    client.abort(session, "protocol error")
                    raise LinkError(f"protocol error: {exc}") from None
                for message in out:
                    client.send(session, message)
            outcome = bob.outcome
            if outcome is not None and not outcome.ok and "peer aborted" not in outcome.reason:
                client.abort(session, outcome.reason)
            if outcome is not None and outcome.ok and pads is not None:
                # Wegman-Carter over the whole transcript before anyone keeps a key
                client.send(session, session.transcript_tag(pads.material))
                reply = client.receive(session)
                if isinstance(reply, BlockAbort):
                    raise LinkError(f"satellite aborted the block: {reply.reason}")
                if not isinstance(reply, BlockAuth):
                    raise LinkError(f"unexpected {type(reply).__name__} instead of BlockAuth")
                session.check_transcript_tag(pads.material, reply)
        except LinkError as exc:
            log.warning("block %s aborted: %s", job.block_id, exc)
            result.retry = isinstance(exc, LinkTimeout)
            if "authentication failed" in str(exc):
                log.error("block %s: %s: no key from it", job.block_id, exc)
                client.abort(session, "authentication failed")
            result.reason = str(exc)
            _fill(result, bob)
            result.wall_s = time.perf_counter() - t0
            return result
    _fill(result, bob)
    outcome = bob.outcome
    assert outcome is not None
    if outcome.ok and outcome.key is not None:
        result.status = "key"
        result.key_bits = outcome.key.key_bits
        result.material = outcome.key.material
    else:
        result.reason = outcome.reason
    result.wall_s = time.perf_counter() - t0
    return result


def _fill(result: BlockResult, bob: DistillBob) -> None:
    st = bob.stats
    result.sifted_bits = st.sifted_bits
    result.qber = st.qber_estimate
    result.disclosed_bits = st.disclosed_bits
    result.messages = st.messages


def ldpc_warm_frame_bits(frame_bits: int) -> tuple[int, ...]:
    """Frame sizes whose LDPC mother codes the workers build at start: the configured
    size, or with ``frame_bits = 0`` every size of the automatic frame plan."""
    from groundkey_protocol.qkd.ldpc.rate import FRAME_PLAN

    return (frame_bits,) if frame_bits else tuple(sorted({bits for _, bits in FRAME_PLAN}))


def _warm(ldpc_dir: str | None = None, frame_bits: tuple[int, ...] = ()) -> int:
    """Runs in a worker at start: imports done, LDPC codes built (or found) in the cache."""
    if ldpc_dir and frame_bits:
        from groundkey_daemon.ldpc_cache import LdpcCodeCache

        return LdpcCodeCache(ldpc_dir).warm(frame_bits)
    return 0


def _log_warmed(future: concurrent.futures.Future[int]) -> None:
    """Done callback of the background code build: a failure only costs the first
    block the build (the codes are built on first use)."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("LDPC code cache not warmed: %s", exc)
    else:
        log.debug("LDPC code cache warm (%d codes built)", future.result())


def _init_worker(ldpc_dir: str | None) -> None:
    """Worker initializer: LDPC codes come from (and go to) the on-disk cache."""
    if ldpc_dir:
        from groundkey_daemon.ldpc_cache import LdpcCodeCache

        LdpcCodeCache(ldpc_dir).install()


class _PadStore(Protocol):
    key_size_bytes: int

    async def oldest_available(self, n_keys: int, *, exclude_pass: str) -> list[str]: ...

    async def reserve_ids(self, consumer: str, request_id: str, key_ids: Sequence[str]) -> Any: ...

    async def acknowledge(self, consumer: str, request_id: str) -> int: ...


class DistillRunner:
    """A pool of worker processes for :func:`distill_block`, with loop-lag measurement.

    With a key ``store``, each block's Wegman–Carter pads are taken from the oldest
    stored key of earlier passes (reserved for :data:`PAD_CONSUMER` and acknowledged
    at once, so the material is erased and never delivered) before the block
    starts; with no such key the block is HMAC-only. ``ldpc_dir`` holds the
    workers' LDPC code cache; after :meth:`start` the workers build the codes for
    ``warm_frame_bits`` there in the background, so blocks rarely wait for them.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        lag_interval_s: float = 0.01,
        store: _PadStore | None = None,
        ldpc_dir: str | os.PathLike[str] | None = None,
        warm_frame_bits: tuple[int, ...] = (),
    ) -> None:
        self.workers = workers
        self.store = store
        self.ldpc_dir = str(ldpc_dir) if ldpc_dir is not None else None
        self.warm_frame_bits = warm_frame_bits
        self.pads_used = 0
        self.lag = LoopLagMonitor(interval_s=lag_interval_s, window=100_000)
        self.active = 0
        self.blocks_done = 0
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"DistillRunner(workers={self.workers}, active={self.active})"

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(self.ldpc_dir,),
            )
        return self._pool

    async def start(self) -> None:
        """Start the workers now (imports take a while), not at the first block.

        The LDPC codes for ``warm_frame_bits`` are then built in the background, ahead
        of the first block in the workers' queue: readiness does not wait for them (a
        fresh state directory takes ~6 s on a slow 2-core machine, which delayed the
        pre-positioning of a pass starting right after).
        """
        loop = asyncio.get_running_loop()
        executor = self._executor()
        await loop.run_in_executor(executor, _warm)  # the imports
        if self.ldpc_dir and self.warm_frame_bits:
            warming = executor.submit(_warm, self.ldpc_dir, self.warm_frame_bits)
            warming.add_done_callback(_log_warmed)

    async def take_pads(self, block_id: str, pass_id: str) -> TranscriptPads | None:
        """Consume key of earlier passes for ``block_id``'s transcript tags (None: none).

        The oldest available keys not from ``pass_id`` are reserved by ID and
        acknowledged at once (material erased, never delivered to a consumer).
        """
        from groundkey_daemon.keystore import KeyStoreError

        store = self.store
        if store is None:
            return None
        n_keys = pad_key_count(store.key_size_bytes)
        request_id = f"wc/{block_id}"
        for _ in range(3):  # a consumer may take the same keys in between
            key_ids = await store.oldest_available(n_keys, exclude_pass=pass_id)
            if len(key_ids) < n_keys:
                return None
            try:
                reservation = await store.reserve_ids(PAD_CONSUMER, request_id, key_ids)
                break
            except KeyStoreError as exc:
                log.debug("pad keys taken meanwhile (%s); trying again", exc)
        else:
            return None
        await store.acknowledge(PAD_CONSUMER, request_id)  # erased: never delivered
        material = b"".join(k.material for k in reservation.keys)[:PAD_BYTES]
        self.pads_used += 1
        return TranscriptPads(
            tuple(k.key_id for k in reservation.keys), store.key_size_bytes, material
        )

    async def run(self, job: BlockJob) -> BlockResult:
        """Distill one block in a worker; the loop's lag is sampled meanwhile."""
        if job.pads is None and self.store is not None:
            pads = await self.take_pads(job.block_id, job.pass_id)
            if pads is not None:
                job = dataclasses.replace(job, pads=pads)
            else:
                log.warning("block %s: no stored key for Wegman-Carter: HMAC-only", job.block_id)
        loop = asyncio.get_running_loop()
        self.active += 1
        sampler = asyncio.create_task(self.lag.run(), name=f"loop-lag:{job.block_id}")
        try:
            result = await loop.run_in_executor(self._executor(), distill_block, job)
        finally:
            self.active -= 1
            sampler.cancel()
        self.blocks_done += 1
        return result

    @property
    def lag_p99_s(self) -> float:
        return self.lag.p99_s

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
