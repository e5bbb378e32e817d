"""``groundkey demo`` (``make demo``): one simulated key-exchange pass on embedded defaults.

Predicts the next night pass of Micius over Xinglong from the TLE epoch, starts the
simulators (``groundkey-sim`` rotator, detector, time tagger with the micius-2017
downlink, satellite payload computer; subprocesses reached like hardware over TCP,
usbnet and ZeroMQ) on a shared accelerated SimClock, runs ``groundkey run`` against
them for one pass while printing live progress from its ZeroMQ telemetry, then
prints the pass report (also as a PNG), the keys in the local store, and the
commands to fetch one. Everything goes to a demo directory (``demo-out/``).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundkey_daemon.errors import UserError

if TYPE_CHECKING:
    from groundkey_daemon.report import PassRecord
    from groundkey_protocol.orbit import Pass, Tle

#: Simulated time between the clock's start and the daemon's pre-positioning.
LEAD_IN_S = 5.0
#: Pre-positioning lead of the demo station (the mount slews ~26 s from park).
PREPOSITION_S = 40.0
#: Sun elevation at TCA above which a pass is skipped (QKD needs the night).
DARK_SUN_EL_DEG = -12.0
#: Wall seconds between starting the simulators and the clock's epoch (start-up).
STARTUP_S = 5.0
SEED = 2017
SYNC_CHANNEL = 5


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="one simulated key-exchange pass of Micius over Xinglong (what `make demo` runs)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--speed", type=float, default=5.0, help="simulated clock speed")
    parser.add_argument(
        "--min-el", type=float, default=45.0, help="pass above this elevation (deg)"
    )
    parser.add_argument(
        "--slice-s",
        type=float,
        default=0.0,
        help="simulated seconds of downlink after AOS to acquire and distill (0: whole pass)",
    )
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="demo directory")
    parser.add_argument("--mqtt", default="", help="HOST:PORT of an MQTT broker to publish to")
    parser.add_argument("--fetch-port", type=int, default=5560, help="port in the fetch commands")
    parser.add_argument("--timeout", type=float, default=110.0, help="wall seconds for the pass")
    parser.add_argument("--json", action="store_true", help="end with a JSON summary line")
    parser.add_argument("--quiet", action="store_true", help="no progress lines during the pass")
    parser.set_defaults(run=run)


@dataclass
class DemoContext:
    """What the steps share; ``stack`` stops the simulators at the end."""

    args: argparse.Namespace
    stack: contextlib.AsyncExitStack
    out: Callable[[str], None]
    tle: Tle | None = None
    pass_: Pass | None = None
    clock_spec: str = ""
    urls: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    record: PassRecord | None = None
    tracking: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)


Step = tuple[str, Callable[[DemoContext], Awaitable[None]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def step_predict(ctx: DemoContext) -> None:
    from groundkey_daemon.defaults import MICIUS_TLE, TLE_EPOCH, XINGLONG
    from groundkey_daemon.tracking import next_pass
    from groundkey_protocol.clock import format_utc
    from groundkey_protocol.orbit import parse_tle

    (tle,) = parse_tle(MICIUS_TLE)
    pass_, skipped = next_pass(
        tle, XINGLONG, TLE_EPOCH, min_el_deg=ctx.args.min_el, dark_sun_el_deg=DARK_SUN_EL_DEG
    )
    ctx.out(
        f"      {tle.name} (NORAD {tle.norad_id}) over xinglong "
        f"({XINGLONG.lat_deg:.4f}N {XINGLONG.lon_deg:.4f}E {XINGLONG.alt_m:.0f} m), "
        f"from the TLE epoch {format_utc(tle.epoch)}, above {ctx.args.min_el:g} deg"
    )
    for day_pass, sun_el in skipped:
        ctx.out(
            f"      skipped the {day_pass.aos:%Y-%m-%d %H:%M}Z pass: daylight "
            f"(Sun at {sun_el:.0f} deg)"
        )
    ctx.out(
        f"      AOS {pass_.aos:%Y-%m-%d %H:%M:%S}Z az {pass_.aos_az_deg:.1f} | "
        f"TCA {pass_.tca:%H:%M:%S}Z el {pass_.max_el_deg:.1f} | "
        f"LOS {pass_.los:%H:%M:%S}Z az {pass_.los_az_deg:.1f} ({pass_.duration_s:.0f} s)"
    )
    ctx.tle, ctx.pass_ = tle, pass_
    ctx.results["pass"] = pass_.as_json()


async def step_prepare(ctx: DemoContext) -> None:
    await asyncio.to_thread(prepare_directory, ctx)
    ctx.out(f"      {ctx.paths['out']}/: link key, CURVE key pairs (server, demo-consumer), TLE")


def prepare_directory(ctx: DemoContext) -> None:
    """A fresh demo directory: link key, CURVE key pairs, TLE; old state removed."""
    from groundkey_daemon.defaults import MICIUS_TLE
    from groundkey_daemon.delivery import create_key_pair

    out: Path = ctx.args.out
    for name in ("state", "sat-keys", "curve", "consumer", "allow"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("pass-report.png", "pass-report.txt", "daemon.log", "station.toml"):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    link_key = out / "link.key"
    fd = os.open(link_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    (out / "micius.tle").write_text(MICIUS_TLE)
    _, server_secret = create_key_pair(out / "curve", "server")
    consumer_public, _ = create_key_pair(out / "consumer", "demo-consumer")
    (out / "allow").mkdir()
    shutil.copy(consumer_public, out / "allow" / consumer_public.name)
    ctx.paths.update(
        out=out,
        link_key=link_key,
        server_public=out / "curve" / "server.key",
        server_secret=server_secret,
        consumer_secret=out / "consumer" / "demo-consumer.key_secret",
        allow=out / "allow",
        state=out / "state",
        sat_keys=out / "sat-keys",
    )


def simulator_executable() -> str:
    """``groundkey-sim`` next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "groundkey-sim"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("groundkey-sim")
    if found is None:
        raise UserError("groundkey-sim not found next to python or on PATH: pip install -e .")
    return found


async def _spawn(ctx: DemoContext, name: str, *args: str) -> str:
    """Start one simulator; its first stdout line is its endpoint."""
    log = (ctx.paths["out"] / f"sim-{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        simulator_executable(),
        name,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    log.close()

    async def stop() -> None:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    ctx.stack.push_async_callback(stop)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
    except TimeoutError:
        raise UserError(f"groundkey-sim {name} did not report its endpoint in 30 s") from None
    endpoint = line.decode(errors="replace").strip()
    if "://" not in endpoint:
        raise UserError(f"groundkey-sim {name} failed to start (said {endpoint!r})")
    ctx.urls[name] = endpoint
    return endpoint


async def step_simulators(ctx: DemoContext) -> None:
    from groundkey_protocol.clock import format_utc

    assert ctx.pass_ is not None
    args = ctx.args
    epoch = ctx.pass_.aos - dt.timedelta(seconds=PREPOSITION_S + LEAD_IN_S)
    anchor = time.time() + STARTUP_S
    ctx.clock_spec = f"sim:{format_utc(epoch)},speed={args.speed:g},anchor={anchor:.6f}"
    tagger = ["--preset", "micius-2017", "--listen", "tcp://127.0.0.1:0", "--clock",
              ctx.clock_spec, "--seed", str(SEED)]  # fmt: skip
    if args.slice_s > 0:
        tagger += ["--duration", f"{args.slice_s:g}"]
    await asyncio.gather(
        _spawn(ctx, "rotator", "--protocol", "gs232b", "--listen", "tcp://127.0.0.1:0",
               "--max-az", "450", "--clock", ctx.clock_spec, "--slew-rate-deg-s", "12,12"),
        _spawn(ctx, "detector", "--listen", "tcp://127.0.0.1:0", "--tau-s", "0.1"),
        _spawn(ctx, "tagger", *tagger),
        _spawn(ctx, "satellite", "--listen", "tcp://127.0.0.1:0", "--seed", str(SEED),
               "--link-key", str(ctx.paths["link_key"]),
               "--keys-dir", str(ctx.paths["sat_keys"])),
    )  # fmt: skip
    for name in ("rotator", "detector", "tagger", "satellite"):
        ctx.out(f"      groundkey-sim {name:<9} -> {ctx.urls[name]}")
    ctx.out(f"      clock {ctx.clock_spec}")


def daemon_config_text(ctx: DemoContext, *, pub: str, delivery: str) -> str:
    """The embedded station config for this demo (TOML)."""
    from groundkey_daemon.defaults import XINGLONG

    p = ctx.paths
    mqtt = "enabled = false"
    if ctx.args.mqtt:
        host, _, port = ctx.args.mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--mqtt must be HOST:PORT, got {ctx.args.mqtt!r}")
        mqtt = f'enabled = true\nhost = "{host}"\nport = {int(port)}'
    return f"""\
# generated by `groundkey demo`
[station]
name = "xinglong"
lat_deg = {XINGLONG.lat_deg}
lon_deg = {XINGLONG.lon_deg}
alt_m = {XINGLONG.alt_m}
min_el_deg = {ctx.args.min_el:g}
tle_files = ["{(p["out"] / "micius.tle").resolve()}"]

[rotator]
protocol = "gs232b"
url = "{ctx.urls["rotator"]}"
max_az_deg = 450.0
slew_rate_az_deg_s = 12.0
slew_rate_el_deg_s = 12.0

[tracking]
threshold_deg = 1.5
preposition_s = {PREPOSITION_S:g}
max_wall_rate_hz = 50.0

[service]
clock = "{ctx.clock_spec}"
max_passes = 1
status_interval_s = 0.5

[keystore]
state_dir = "{p["state"].resolve()}"
key_size_bytes = 32

[delivery]
enabled = true
bind = "{delivery}"
server_secret_key = "{p["server_secret"].resolve()}"
allow_dir = "{p["allow"].resolve()}"

[telemetry]
station = "xinglong"

[telemetry.mqtt]
{mqtt}

[telemetry.zmq]
bind = "{pub}"

[metrics]
enabled = false

[link_auth]
link_key = "{p["link_key"].resolve()}"

[link]
endpoint = "{ctx.urls["satellite"]}"
timeout_s = 60

[acquisition]
tagger_url = "{ctx.urls["tagger"]}"
detector_url = "{ctx.urls["detector"]}"
tof_model = "tle"
sync_channel = {SYNC_CHANNEL}
# one block per pass: the pass above 45 deg gives ~1 M detections, and blocks much
# smaller than that have no positive finite-key length (later blocks of a pass do sync)
min_block_detections = 5000000
"""


async def step_daemon(ctx: DemoContext) -> None:
    import zmq
    import zmq.asyncio

    from groundkey_daemon.progress import TelemetryProgress
    from groundkey_daemon.report import PassRecord

    p = ctx.paths
    pub = f"tcp://127.0.0.1:{free_port()}"
    delivery = f"tcp://127.0.0.1:{free_port()}"
    config = p["out"] / "station.toml"
    config.write_text(daemon_config_text(ctx, pub=pub, delivery=delivery))
    ctx.out(f"      groundkey run --config {config} (log: {p['out'] / 'daemon.log'})")
    ctx.out(f"      telemetry {pub}, key delivery {delivery}")
    assert ctx.pass_ is not None
    window = (ctx.pass_.aos.timestamp(), ctx.pass_.los.timestamp())
    record = PassRecord(sync_channel=SYNC_CHANNEL, pass_window_s=window)
    ctx.record = record
    progress = TelemetryProgress(write=ctx.out, quiet=ctx.args.quiet, pass_window_s=window)
    zctx = zmq.asyncio.Context()
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub)
    log_file = (p["out"] / "daemon.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groundkey_daemon.cli", "-v", "run", "--config", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
        start_new_session=True,
    )  # fmt: skip
    log_file.close()

    async def listen() -> None:
        while True:
            parts = await sub.recv_multipart()
            try:
                message = json.loads(parts[-1])
            except ValueError:
                continue
            record.add(message)
            progress.feed(message)

    listener = asyncio.create_task(listen())
    try:
        code = await asyncio.wait_for(proc.wait(), ctx.args.timeout)
    except TimeoutError:
        raise UserError(
            f"the pass did not finish in {ctx.args.timeout:g} s; see {p['out'] / 'daemon.log'}"
        ) from None
    finally:
        if proc.returncode is None:  # timed out or interrupted: end the whole service
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        else:
            await asyncio.sleep(0.2)  # the last telemetry messages
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        sub.close()
        zctx.term()
    log = (p["out"] / "daemon.log").read_text(errors="replace")
    if code != 0:
        tail = "\n".join(log.splitlines()[-15:])
        raise UserError(f"groundkey run exited with {code}:\n{tail}")
    ctx.tracking = parse_tracking_summary(log)
    ctx.results["tracking"] = ctx.tracking
    outcomes = re.findall(r"lifecycle: pass \S+: (completed|aborted)(.*)", log)
    outcome = "".join(outcomes[-1]) if outcomes else "unknown (see the log)"
    ctx.results["outcome"] = outcomes[-1][0] if outcomes else "unknown"
    ctx.out(f"      pass outcome: {outcome}")
    ctx.out(f"      groundkey run exited 0 after {progress.messages} telemetry messages")


def parse_tracking_summary(log: str) -> dict[str, Any]:
    """The daemon's ``tracking done: {...}`` log line as a dict (``{}`` if absent)."""
    match = re.search(r"tracking done: (\{.*\})", log)
    if match is None:
        return {}
    text = re.sub(r"\bnan\b", "None", match.group(1))
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): (math.nan if v is None else v) for k, v in value.items()}


async def step_report(ctx: DemoContext) -> None:
    from groundkey_daemon.report import report_lines, tracking_lines, write_png

    assert ctx.record is not None
    assert ctx.pass_ is not None
    assert ctx.tle is not None
    args = ctx.args
    slice_note = (
        f"acquired and distilled a representative slice: the first {args.slice_s:g} s of the "
        f"pass above {args.min_el:g} deg (micius-2017 downlink, clock x{args.speed:g})"
        if args.slice_s > 0
        else f"acquired and distilled the whole pass above {args.min_el:g} deg"
    )
    lines = ["tracking:"] + [f"  {line}" for line in tracking_lines(ctx.tracking)]
    lines += ["key exchange:"] + [
        f"  {line}" for line in report_lines(ctx.record, slice_note=slice_note)
    ]
    ctx.record.predicted_el = predicted_elevation(ctx.tle, ctx.pass_)
    text_path = ctx.paths["out"] / "pass-report.txt"
    text_path.write_text("\n".join(lines) + "\n")
    png = await asyncio.to_thread(
        write_png,
        ctx.record,
        ctx.paths["out"] / "pass-report.png",
        title=f"Micius over Xinglong, pass {ctx.record.pass_id or ctx.pass_.aos.isoformat()}",
    )
    for line in lines:
        ctx.out(f"      {line}")
    ctx.out(f"      report: {text_path}, plot: {png}")
    r = ctx.record
    ctx.results["report"] = {
        "blocks": len(r.blocks),
        "sifted_bits": r.sifted_bits,
        "secret_bits": r.secret_bits,
        "qber": r.mean_qber if r.blocks else None,
        "text": str(text_path),
        "png": str(png),
    }


def predicted_elevation(tle: Tle, pass_: Pass, step_s: float = 2.0) -> list[tuple[float, float]]:
    """The satellite's elevation from AOS to LOS (for the plot)."""
    import numpy as np

    from groundkey_daemon.defaults import XINGLONG
    from groundkey_protocol.orbit import look_angles

    times = np.arange(pass_.aos.timestamp(), pass_.los.timestamp() + step_s, step_s)
    angles = look_angles(tle, XINGLONG, times)
    return [(float(t), float(e)) for t, e in zip(times, angles.el_deg, strict=True)]


def _groundkey_command() -> str:
    if shutil.which("groundkey"):
        return "groundkey"
    exe = Path(sys.executable).parent / "groundkey"
    with contextlib.suppress(ValueError):
        return str(exe.relative_to(Path.cwd()))
    return str(exe)


def store_keys(state_dir: Path) -> list[dict[str, Any]]:
    """Metadata of the keys in a demo key store (IDs, lengths, states; never material)."""
    db = state_dir / "keys.sqlite3"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT k.key_id, k.block_id, k.idx, k.length_bytes, k.state FROM keys k "
            "JOIN blocks b ON b.block_id = k.block_id ORDER BY b.created_s, k.idx"
        ).fetchall()
    finally:
        conn.close()
    return [
        {"key_id": r[0], "block_id": r[1], "idx": r[2], "length_bytes": r[3], "state": r[4]}
        for r in rows
    ]


def ends_agree(state_dir: Path, sat_keys: Path) -> tuple[int, int]:
    """(blocks identical at both ends, blocks in the local store). Compares in memory only."""
    db = state_dir / "keys.sqlite3"
    if not db.exists():
        return 0, 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        blocks = [r[0] for r in conn.execute("SELECT block_id FROM blocks")]
        same = 0
        for block_id in blocks:
            ours = b"".join(
                r[0]
                for r in conn.execute(
                    "SELECT material FROM keys WHERE block_id = ? AND material IS NOT NULL "
                    "ORDER BY idx",
                    (block_id,),
                )
            )
            theirs_path = sat_keys / f"{block_id}.key"
            if ours and theirs_path.exists() and theirs_path.read_bytes()[: len(ours)] == ours:
                same += 1
    finally:
        conn.close()
    return same, len(blocks)


async def step_keys(ctx: DemoContext) -> None:
    p = ctx.paths
    keys = await asyncio.to_thread(store_keys, p["state"])
    same, n_blocks = await asyncio.to_thread(ends_agree, p["state"], p["sat_keys"])
    by_block: dict[str, list[dict[str, Any]]] = {}
    for key in keys:
        by_block.setdefault(key["block_id"], []).append(key)
    ctx.out(f"      {len(keys)} key(s) in {p['state'] / 'keys.sqlite3'} ({n_blocks} block(s)):")
    for block_id, block_keys in by_block.items():
        total = sum(k["length_bytes"] for k in block_keys)
        ctx.out(f"      block {block_id}: {len(block_keys)} x 32 bytes ({total} bytes)")
        for key in block_keys[:3]:
            ctx.out(f"        {key['key_id']}  {key['length_bytes']} bytes  {key['state']}")
        if len(block_keys) > 3:
            ctx.out(f"        ... {len(block_keys) - 3} more")
    ctx.out(f"      both ends agree: {same} of {n_blocks} block(s) identical at the satellite")
    gk = _groundkey_command()
    endpoint = f"tcp://127.0.0.1:{ctx.args.fetch_port}"
    serve = (
        f"{gk} keys serve --state-dir {p['state']} --bind {endpoint} "
        f"--server-key {p['server_secret']} --allow-dir {p['allow']}"
    )
    get = (
        f"{gk} keys get --endpoint {endpoint} --server-key {p['server_public']} "
        f"--client-key {p['consumer_secret']} --bytes 32"
    )
    ctx.out("      to fetch a key: start a delivery server on the demo's key store,")
    ctx.out(f"        {serve} &")
    ctx.out("      then, as the demo consumer (the key is erased here once acknowledged):")
    ctx.out(f"        {get}")
    ctx.results["keys"] = {
        "count": len(keys),
        "blocks": n_blocks,
        "agree": same,
        "ids": [k["key_id"] for k in keys],
        "serve": serve,
        "get": get,
    }


STEPS: list[Step] = [
    ("predict the next night pass", step_predict),
    ("prepare the demo directory", step_prepare),
    ("start the simulators", step_simulators),
    ("run the daemon for one pass", step_daemon),
    ("pass report", step_report),
    ("keys in the local store", step_keys),
]


async def run_demo(args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        ctx = DemoContext(args=args, stack=stack, out=out)
        for number, (title, step) in enumerate(STEPS, start=1):
            out(f"[{number}/{len(STEPS)}] {title}")
            t0 = time.monotonic()
            await step(ctx)
            ctx.results.setdefault("wall_s", {})[title] = round(time.monotonic() - t0, 2)
        return ctx.results


def run(args: argparse.Namespace) -> int:
    if not args.speed > 0:
        raise UserError(f"--speed must be positive, got {args.speed:g}")
    if not 0 <= args.min_el < 80:
        raise UserError(f"--min-el must be in [0, 80), got {args.min_el:g}")

    def out(line: str) -> None:
        print(line, flush=True)

    results = asyncio.run(run_demo(args, out))
    ok = results.get("outcome") == "completed" and results.get("keys", {}).get("count", 0) > 0
    if not ok:
        out(f"no key from this pass (see {args.out / 'daemon.log'})")
    if args.json:
        print(json.dumps(results))
    return 0 if ok else 1
