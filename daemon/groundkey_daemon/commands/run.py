"""``groundkey run --config FILE``: the station service (what systemd runs).

Validates the config up front (exit 2 with the field named), opens the key
store, starts key delivery, telemetry, metrics and the worker pool, then hands
everything to the :class:`Supervisor`: READY=1 once running, SIGHUP reloads TLEs
and thresholds, SIGTERM finishes or checkpoints the current block and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import time
from pathlib import Path
from typing import Any

from groundkey_daemon.config import Config, load_config

log = logging.getLogger("groundkey.run")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "run",
        help="run the station service (scheduler, passes, key store, delivery, telemetry)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--config", required=True, help="TOML config file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, check_paths=True)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` dumps every stack to stderr
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return asyncio.run(Service(config, Path(args.config)).run())


class Service:
    """The assembled daemon: components registered with a supervisor."""

    def __init__(self, config: Config, path: Path) -> None:
        self.config = config
        self.path = path

    def __repr__(self) -> str:
        return f"Service({str(self.path)!r})"

    async def run(self) -> int:
        from groundkey_daemon.delivery import DeliveryServer
        from groundkey_daemon.distill_runner import DistillRunner, ldpc_warm_frame_bits
        from groundkey_daemon.keystore import KeyStore
        from groundkey_daemon.lifecycle import Lifecycle
        from groundkey_daemon.link import load_link_key
        from groundkey_daemon.metrics import LoopLagMonitor, Metrics, MetricsServer
        from groundkey_daemon.sdnotify import Watchdog
        from groundkey_daemon.service_config import resolve_credential
        from groundkey_daemon.supervisor import RestartPolicy, Supervisor
        from groundkey_daemon.telemetry_pub import TelemetryService
        from groundkey_protocol import telemetry as tm

        cfg = self.config
        svc = cfg.service
        clock = cfg.clock()
        started = time.monotonic()
        policy = RestartPolicy(
            max_restarts=svc.max_restarts,
            backoff_s=svc.restart_backoff_s,
            backoff_max_s=svc.restart_backoff_max_s,
        )
        watchdog = Watchdog()
        sup = Supervisor(
            default_policy=policy, shutdown_timeout_s=svc.shutdown_timeout_s, watchdog=watchdog
        )
        metrics = Metrics()
        telemetry = TelemetryService(cfg.telemetry, clock=clock, metrics=metrics)
        hub = telemetry.hub
        store = KeyStore(cfg.keystore.state_dir, key_size_bytes=cfg.keystore.key_size_bytes)
        await store.open()
        # Wegman-Carter pads come from the store; LDPC codes from <state>/ldpc in the workers
        runner = DistillRunner(
            workers=cfg.distill.workers,
            store=store if cfg.link.transcript_auth else None,
            ldpc_dir=Path(cfg.keystore.state_dir) / "ldpc",
            warm_frame_bits=ldpc_warm_frame_bits(cfg.distill.frame_bits)
            if cfg.distill.method.startswith("ldpc")
            else (),
        )
        link_key = load_link_key(cfg.link_auth.link_key) if cfg.link.endpoint else None
        lag = LoopLagMonitor(
            interval_s=cfg.metrics.loop_lag_interval_s,
            window=cfg.metrics.loop_lag_window,
            metrics=metrics,
        )

        async def forever() -> None:
            await asyncio.Event().wait()

        # Registration order = start order; shutdown runs in reverse, so the key
        # store closes last and telemetry announces "offline" after the passes end.
        sup.add("keystore", forever, stop=store.close)
        sup.add("telemetry", telemetry.run, stop=telemetry.stop, critical=False)
        if cfg.metrics.enabled:
            server = MetricsServer(metrics, host=cfg.metrics.host, port=cfg.metrics.port)
            await server.start()
            sup.add("metrics", forever, stop=server.close, critical=False)
        if cfg.delivery.enabled:
            delivery = DeliveryServer(
                store,
                bind=cfg.delivery.bind,
                server_secret_key_file=resolve_credential(cfg.delivery.server_secret_key),
                allow_dir=cfg.delivery.allow_dir,
                max_request_bytes=cfg.delivery.max_request_bytes,
                metrics=metrics,
            )
            await delivery.start()
            sup.add("delivery", delivery.serve, stop=delivery.close)
            sup.add(
                "delivery-expiry",
                lambda: delivery.expire_loop(cfg.keystore.reservation_ttl_s),
                critical=False,
            )
        sup.add("loop-lag", lag.run, critical=False)
        sup.add("watchdog", watchdog.run, critical=False)
        sup.add("distill-workers", forever, stop=runner.close)
        lifecycle = Lifecycle(
            cfg,
            clock=clock,
            store=store,
            runner=runner,
            hub=hub,
            metrics=metrics,
            link_key=link_key,
            on_status=sup.status,
            on_finished=lambda why: sup.request_stop(why),
        )
        sup.add("lifecycle", lifecycle.run)

        async def status_loop() -> None:
            while True:
                hub.publish(
                    tm.StationStatus(
                        station=hub.station,
                        state="online" if lifecycle.state in ("idle", "stopped") else "tracking",
                        uptime_s=time.monotonic() - started,
                        detail=lifecycle.state,
                    )
                )
                available = await store.available_bytes()
                metrics.key_available_bits.set(8 * available)
                await asyncio.sleep(svc.status_interval_s)

        sup.add("status", status_loop, critical=False)
        sup.on_drain(lifecycle.drain)
        sup.add_progress_probe(lambda: lag.healthy(0.5))
        sup.add_progress_probe(lifecycle.healthy)

        async def reload() -> None:
            new = await asyncio.to_thread(load_config, self.path, check_paths=True)
            await lifecycle.reload(new)
            if cfg.delivery.enabled:
                delivery.reload_allow_list()
            self.config = new

        sup.on_reload(reload)
        if cfg.link.endpoint:
            await runner.start()
        try:
            return await sup.run()
        finally:
            await runner.close()
            await store.close()
