"""The supervisor: one event loop, components in a TaskGroup, restart policies,
signals, sd_notify, ordered idempotent shutdown.

A component is a coroutine factory with a :class:`RestartPolicy`. When its
coroutine raises, the supervisor logs the failure and starts it again after an
exponential backoff; after ``max_restarts`` consecutive failures it gives up, and
if the component is critical the daemon stops with exit code 1 (systemd's
``Restart=on-failure`` takes over). A coroutine that returns normally is done.

Signals: SIGTERM/SIGINT request a stop. The stop first runs the *drain* hooks
(the pass lifecycle finishes or checkpoints its current block) within
``shutdown_timeout_s``, then stops components in reverse order of registration
(their ``stop`` hook, then cancellation), so the key store closes after
everything that writes to it. SIGHUP runs the *reload* hooks (TLEs,
thresholds), one at a time, without touching a pass in progress.

sd_notify: ``READY=1`` once every component is started, ``STATUS=`` on state
changes, ``RELOADING=1``/``READY=1`` around a reload, ``STOPPING=1`` on stop; the
watchdog is pinged only while every progress probe (event-loop lag, device
loops) reports progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from groundkey_daemon.sdnotify import Watchdog, notify

__all__ = ["Component", "DropQueue", "RestartPolicy", "Supervisor"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Restart on failure with exponential backoff; give up after ``max_restarts``."""

    max_restarts: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    #: a run at least this long counts as healthy: the failure count starts over
    healthy_after_s: float = 60.0

    def delay_s(self, failures: int) -> float:
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** max(0, failures - 1)))


@dataclass(slots=True)
class Component:
    """One supervised coroutine (``run``) with an optional orderly ``stop`` hook."""

    name: str
    run: Callable[[], Awaitable[None]]
    policy: RestartPolicy
    critical: bool = True
    stop: Callable[[], Awaitable[object]] | None = None
    failures: int = 0
    restarts: int = 0
    state: str = "new"
    stopped: bool = False
    task: asyncio.Task[None] | None = None


def quiet_transport_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Event-loop exception handler: an OS error of a transport (a serial adapter
    unplugged mid-write) is one warning line, since the driver that owns the transport
    reconnects; everything else goes to the default handler (with its traceback)."""
    exc = context.get("exception")
    if "transport" in context and isinstance(exc, OSError):
        log.warning(
            "%s: %s: %s", context.get("message", "transport error"), type(exc).__name__, exc
        )
        return
    loop.default_exception_handler(context)


class DropQueue(Generic[T]):
    """A bounded queue that never blocks the producer: when full, the new item is
    dropped and counted (``dropped``)."""

    def __init__(self, maxsize: int, *, name: str = "queue") -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.name = name
        self.dropped = 0
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)

    def __repr__(self) -> str:
        return f"DropQueue({self.name!r}, depth={self.depth}, dropped={self.dropped})"

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def maxsize(self) -> int:
        return self._queue.maxsize

    def put_nowait(self, item: T) -> bool:
        """Enqueue; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    async def put(self, item: T) -> None:
        """Enqueue, waiting for room (for producers that may apply back-pressure)."""
        await self._queue.put(item)

    async def get(self) -> T:
        return await self._queue.get()

    def get_nowait(self) -> T:
        return self._queue.get_nowait()


@dataclass(slots=True)
class _Hooks:
    drain: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    reload: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    progress: list[Callable[[], bool]] = field(default_factory=list)


class Supervisor:
    """Runs components until a stop is requested; :meth:`run` returns the exit code."""

    def __init__(
        self,
        *,
        default_policy: RestartPolicy | None = None,
        shutdown_timeout_s: float = 60.0,
        watchdog: Watchdog | None = None,
        heartbeat_s: float = 1.0,
        notify_fn: Callable[[str], object] = notify,
    ) -> None:
        self.default_policy = default_policy or RestartPolicy()
        self.shutdown_timeout_s = shutdown_timeout_s
        self.watchdog = watchdog
        self.heartbeat_s = heartbeat_s
        self.components: list[Component] = []
        self.exit_code = 0
        self.stop_reason = ""
        self.reloads = 0
        self.started_s = time.monotonic()
        self._notify = notify_fn
        self._hooks = _Hooks()
        self._stop: asyncio.Event | None = None
        self._ready = False
        self._shutdown_task: asyncio.Task[None] | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"Supervisor(components={[c.name for c in self.components]})"

    # -- registration ---------------------------------------------------------------

    def add(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        policy: RestartPolicy | None = None,
        critical: bool = True,
        stop: Callable[[], Awaitable[object]] | None = None,
    ) -> Component:
        """Register a component; components stop in reverse order of registration."""
        if any(c.name == name for c in self.components):
            raise ValueError(f"component {name!r} already registered")
        component = Component(name, run, policy or self.default_policy, critical, stop)
        self.components.append(component)
        return component

    def on_drain(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Run first on stop (e.g. finish or checkpoint the current key block)."""
        self._hooks.drain.append(hook)

    def on_reload(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Run on SIGHUP (e.g. reload TLEs and thresholds)."""
        self._hooks.reload.append(hook)

    def add_progress_probe(self, probe: Callable[[], bool]) -> None:
        """The watchdog is pinged only while every probe returns True."""
        self._hooks.progress.append(probe)

    # -- control ----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def status(self, text: str) -> None:
        """Report a one-line status to systemd (``STATUS=``) and the log."""
        log.info("status: %s", text)
        self._notify(f"STATUS={text}")

    def request_stop(self, reason: str = "stop requested", *, exit_code: int = 0) -> None:
        """Idempotent: the first request's reason wins; a failure code is kept."""
        if exit_code and not self.exit_code:
            self.exit_code = exit_code
        if self.stop_reason:
            return
        self.stop_reason = reason
        log.info("stopping: %s", reason)
        if self._stop is not None:
            self._stop.set()

    async def reload(self) -> None:
        """Run the reload hooks (one reload at a time); a failing hook is logged only."""
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            self._notify("RELOADING=1")
            ok = True
            for hook in self._hooks.reload:
                try:
                    await hook()
                except Exception as exc:
                    ok = False
                    log.error("reload failed, keeping the previous settings: %s", exc)
            self.reloads += 1
            self._notify(f"READY=1\nSTATUS={'reloaded' if ok else 'reload failed'}")
            log.info("reload %s", "done" if ok else "failed")

    # -- running ----------------------------------------------------------------------

    async def run(self) -> int:
        """Run every component until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(quiet_transport_errors)
        self._stop = asyncio.Event()
        if self.stop_reason:  # stop requested before run()
            self._stop.set()
        installed: list[signal.Signals] = []
        for sig, handler in (
            (signal.SIGTERM, lambda: self.request_stop("SIGTERM")),
            (signal.SIGINT, lambda: self.request_stop("SIGINT")),
            (signal.SIGHUP, self._spawn_reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handler)
                installed.append(sig)
        try:
            async with asyncio.TaskGroup() as tg:
                for component in self.components:
                    component.task = tg.create_task(
                        self._supervise(component), name=f"component:{component.name}"
                    )
                heartbeat = tg.create_task(self._heartbeat(), name="supervisor:heartbeat")
                self._ready = True
                self._notify("READY=1\nSTATUS=running")
                log.info("ready: %s", ", ".join(c.name for c in self.components))
                await self._stop.wait()
                await self.shutdown()
                heartbeat.cancel()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            for task in list(self._background):
                task.cancel()
        log.info("stopped (%s), exit code %d", self.stop_reason, self.exit_code)
        return self.exit_code

    def _spawn_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="supervisor:reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        """Drain, then stop components in reverse order. Safe to call more than once."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown())
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self) -> None:
        self._notify(f"STOPPING=1\nSTATUS=stopping: {self.stop_reason}")
        for hook in self._hooks.drain:
            try:
                async with asyncio.timeout(self.shutdown_timeout_s):
                    await hook()
            except TimeoutError:
                log.warning("drain did not finish within %.0f s", self.shutdown_timeout_s)
            except Exception as exc:
                log.error("drain failed: %s", exc)
        for component in reversed(self.components):
            await self._stop_component(component)

    async def _stop_component(self, component: Component) -> None:
        if component.stopped:
            return
        component.stopped = True
        final = component.state if component.state in ("given-up", "done") else "stopped"
        component.state = "stopping"
        if component.stop is not None:
            try:
                async with asyncio.timeout(self.shutdown_timeout_s):
                    await component.stop()
            except Exception as exc:
                log.error("stopping %s failed: %s", component.name, exc)
        task = component.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        component.state = final
        log.debug("component %s stopped", component.name)

    async def _supervise(self, component: Component) -> None:
        assert self._stop is not None
        policy = component.policy
        while not self._stop.is_set():
            component.state = "running"
            started = time.monotonic()
            try:
                await component.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started >= policy.healthy_after_s:
                    component.failures = 0
                component.failures += 1
                component.state = "failed"
                log.error(
                    "component %s failed (%d/%d): %s: %s",
                    component.name,
                    component.failures,
                    policy.max_restarts,
                    type(exc).__name__,
                    exc,
                )
                if component.failures > policy.max_restarts:
                    log.error(
                        "component %s: giving up after %d failures",
                        component.name,
                        component.failures,
                    )
                    component.state = "given-up"
                    if component.critical:
                        self.request_stop(f"{component.name} failed", exit_code=1)
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(policy.delay_s(component.failures)):
                        await self._stop.wait()
                if self._stop.is_set():
                    return
                component.restarts += 1
                log.info("restarting component %s", component.name)
                continue
            component.state = "done"
            log.debug("component %s finished", component.name)
            return

    async def _heartbeat(self) -> None:
        """Tell the watchdog about progress, but only while every probe agrees."""
        while True:
            if self.watchdog is not None and all(probe() for probe in self._hooks.progress):
                self.watchdog.progress()
            await asyncio.sleep(self.heartbeat_s)
