"""The MQTT publisher against a real mosquitto broker configured with the shipped ACL,
and real ``mosquitto_sub``/``mosquitto_pub`` clients as partner station and attacker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from groundkey_daemon.service_config import MqttConfig
from groundkey_daemon.telemetry_pub import MqttTelemetryPublisher, TelemetryHub
from groundkey_protocol import telemetry as tm
from groundkey_protocol.clock import SimClock, parse_utc
from tests.conftest import require_binary

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "mosquitto"
STATION = "xinglong"
PASSWORDS = {"groundkey": "station-pw", "operator": "operator-pw", "partner": "partner-pw"}
LINE_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A mosquitto on an ephemeral localhost port with the sample ACL and a password file."""

    def __init__(self, workdir: Path, *, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.mosquitto = require_binary("mosquitto", "mosquitto")
        passwd = require_binary("mosquitto_passwd", "mosquitto")
        self.workdir = workdir
        self.port = free_port()
        pw_file = workdir / "passwd"
        for i, (user, password) in enumerate(PASSWORDS.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run([passwd, *create, "-b", str(pw_file), user, password], check=True)
        self.conf = workdir / "mosquitto.conf"
        # the shipped sample config, pointed at this test's files and port
        sample = (CONFIG_DIR / "mosquitto.conf").read_text()
        for old, new in {
            "/etc/mosquitto/groundkey.passwd": str(pw_file),
            "/etc/mosquitto/groundkey.acl": str(CONFIG_DIR / "acl"),
            "listener 1883 127.0.0.1": f"listener {self.port} 127.0.0.1",
            "persistence_location /var/lib/mosquitto/": f"persistence_location {workdir}/",
        }.items():
            assert old in sample, old
            sample = sample.replace(old, new)
        self.conf.write_text(sample + "user root\n")
        self.tls_port = 0
        if tls is not None:
            self.tls_port = free_port()
            ca, cert, key = tls
            with self.conf.open("a") as f:
                f.write(
                    f"listener {self.tls_port} 127.0.0.1\n"
                    f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
                )
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.mosquitto,
            "-c",
            str(self.conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(30):
            while True:
                try:
                    _, writer = await asyncio.open_connection(
                        "127.0.0.1", self.tls_port or self.port
                    )
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its sessions
            await asyncio.wait_for(self.proc.wait(), 30)
        self.proc = None

    def mqtt_config(self, user: str, **overrides: object) -> MqttConfig:
        pw_file = self.workdir / f"{user}.password"
        pw_file.write_text(PASSWORDS[user] + "\n")
        fields: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "username": user,
            "password_file": str(pw_file),
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "publish_timeout_s": 10.0,
        }
        fields.update(overrides)
        return MqttConfig(**fields)  # type: ignore[arg-type]


class Sub:
    """A ``mosquitto_sub -v`` subprocess; lines are ``topic payload``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, broker: Broker, user: str, *topics: str, extra: tuple[str, ...] = (), port: int = 0
    ) -> Sub:
        exe = require_binary("mosquitto_sub", "mosquitto-clients")
        args = [exe, "-p", str(port or broker.port), "-u", user, "-P", PASSWORDS[user], "-v"]
        args += extra
        for t in topics:
            args += ["-t", t]
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        return cls(proc)

    async def line(self) -> tuple[str, str]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), LINE_TIMEOUT_S)
        assert raw, "mosquitto_sub exited"
        topic, _, payload = raw.decode().rstrip("\n").partition(" ")
        return topic, payload

    async def until(self, pred: Callable[[str, str], bool]) -> tuple[str, str]:
        while True:
            topic, payload = await self.line()
            if pred(topic, payload):
                return topic, payload

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


def mosquitto_pub(broker: Broker, user: str, topic: str, message: str, *extra: str) -> int:
    exe = require_binary("mosquitto_pub", "mosquitto-clients")
    return subprocess.run(
        [exe, "-p", str(broker.port), "-u", user, "-P", PASSWORDS[user], "-q", "1",
         "-t", topic, "-m", message, *extra],
        capture_output=True,
        timeout=60,
    ).returncode  # fmt: skip


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    b = Broker(tmp_path)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


@contextlib.asynccontextmanager
async def station(
    broker: Broker, **overrides: object
) -> AsyncIterator[tuple[TelemetryHub, MqttTelemetryPublisher]]:
    pub = MqttTelemetryPublisher(
        broker.mqtt_config("groundkey", **overrides),
        will_topic=f"groundkey/{STATION}/status",
        will_payload=TelemetryHub.will_payload(STATION),
        identifier=f"groundkey-{STATION}",
    )
    clock = SimClock(epoch=parse_utc("2016-12-19T13:00:00Z"))
    hub = TelemetryHub(STATION, clock=clock, sinks=[pub])
    task = asyncio.create_task(pub.run(), name="mqtt")
    try:
        yield hub, pub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def key_event(i: int) -> tm.KeyExchange:
    return tm.KeyExchange(
        station=STATION,
        pass_id="41731-20161219T1302",
        peer="micius",
        block_id=f"00000000-0000-4000-8000-{i:012d}",
        key_ids=[f"k{i}a", f"k{i}b"],
        length_bits=512,
        qber=0.012,
        secret_fraction=0.08,
        eps_sec=1e-9,
        eps_cor=1e-15,
    )


def pass_event(i: int) -> tm.PassEvent:
    return tm.PassEvent(station=STATION, event="tca", pass_id=f"p{i}", satellite="MICIUS")


async def test_partner_mosquitto_sub_receives_key_exchange_events(broker: Broker) -> None:
    async with station(broker) as (hub, pub):
        hub.publish(tm.StationStatus(station=STATION, state="online"))
        sub = await Sub.start(broker, "partner", "groundkey/+/status", "groundkey/+/keyexchange")
        try:
            # the retained status arrives on subscription: the subscription is live
            _, status = await sub.until(lambda t, _: t.endswith("/status"))
            assert tm.decode(status).state == "online"  # type: ignore[union-attr]
            for i in range(3):
                hub.publish(key_event(i))
            events = []
            for _ in range(3):
                topic, payload = await sub.until(lambda t, _: t.endswith("/keyexchange"))
                assert topic == f"groundkey/{STATION}/keyexchange"
                events.append(tm.decode(payload))
        finally:
            await sub.close()
        assert await pub.flush(30)
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.key_ids for e in events] == [["k0a", "k0b"], ["k1a", "k1b"], ["k2a", "k2b"]]  # type: ignore[union-attr]
    assert pub.dropped == 0


_VANISHING_STATION = """
import asyncio, sys
from groundkey_daemon.service_config import MqttConfig
from groundkey_daemon.telemetry_pub import MqttTelemetryPublisher, TelemetryHub
from groundkey_protocol import telemetry as tm
from groundkey_protocol.clock import WallClock

async def main():
    cfg = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), username="groundkey",
                     password_file=sys.argv[2])
    pub = MqttTelemetryPublisher(cfg, will_topic="groundkey/xinglong/status",
                                 will_payload=TelemetryHub.will_payload("xinglong"))
    hub = TelemetryHub("xinglong", clock=WallClock(), sinks=[pub])
    task = asyncio.create_task(pub.run())
    hub.publish(tm.StationStatus(station="xinglong", state="tracking"))
    await pub.flush(60)
    print("ready", flush=True)
    await task

asyncio.run(main())
"""


async def test_will_marks_station_offline_when_the_station_dies(broker: Broker) -> None:
    cfg = broker.mqtt_config("groundkey")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _VANISHING_STATION, str(broker.port), str(cfg.password_file),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    sub = await Sub.start(broker, "partner", f"groundkey/{STATION}/status")
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), LINE_TIMEOUT_S) == b"ready\n"
        _, payload = await sub.until(lambda t, p: json.loads(p)["state"] == "tracking")
        proc.kill()  # no DISCONNECT: the broker publishes the will
        await proc.wait()
        _, payload = await sub.line()
    finally:
        await sub.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    will = tm.decode(payload)
    assert isinstance(will, tm.StationStatus)
    assert (will.state, will.seq) == ("offline", 0)


async def test_partner_cannot_publish_commands_or_spoof_events(broker: Broker) -> None:
    cmd_topic = f"groundkey/{STATION}/command/park"
    # a retained marker tells us when the command subscriber is live
    assert mosquitto_pub(broker, "operator", cmd_topic, "marker-0", "-r") == 0
    cmds = await Sub.start(broker, "groundkey", f"groundkey/{STATION}/command/#")
    async with station(broker) as (hub, _):
        hub.publish(tm.StationStatus(station=STATION, state="online"))
        events = await Sub.start(
            broker, "operator", f"groundkey/{STATION}/status", f"groundkey/{STATION}/keyexchange"
        )
        try:
            assert (await cmds.line())[1] == "marker-0"
            await events.until(lambda t, _: t.endswith("/status"))
            # the partner tries: mosquitto accepts the PUBLISH but the ACL discards it
            mosquitto_pub(broker, "partner", cmd_topic, "evil-park")
            mosquitto_pub(broker, "partner", f"groundkey/{STATION}/keyexchange", '{"evil":1}')
            mosquitto_pub(broker, "partner", f"groundkey/{STATION}/status", "offline", "-r")
            # legitimate messages published afterwards arrive first and alone
            assert mosquitto_pub(broker, "operator", cmd_topic, "marker-1") == 0
            hub.publish(key_event(7))
            assert (await cmds.line())[1] == "marker-1"
            _, payload = await events.until(lambda t, _: t.endswith("/keyexchange"))
            assert tm.decode(payload).seq == 1
        finally:
            await cmds.close()
            await events.close()
    # the retained status was not overwritten by the partner
    check = await Sub.start(broker, "partner", f"groundkey/{STATION}/status")
    try:
        assert json.loads((await check.line())[1])["state"] == "online"
    finally:
        await check.close()


async def test_broker_restart_backlog_catches_up_in_order_and_counts_drops(
    broker: Broker,
) -> None:
    async with station(broker, backlog_messages=5) as (hub, pub):
        hub.publish(tm.StationStatus(station=STATION, state="online"))
        # a persistent QoS 1 session: the broker keeps messages for it across its restart
        sub = await Sub.start(
            broker, "operator", f"groundkey/{STATION}/status", f"groundkey/{STATION}/pass",
            extra=("-c", "-i", "partner-session", "-q", "1"),
        )  # fmt: skip
        try:
            await sub.until(lambda t, _: t.endswith("/status"))
            for i in (1, 2):
                hub.publish(pass_event(i))
            seqs = []
            tracker = tm.SequenceTracker()
            for _ in range(2):
                _, payload = await sub.until(lambda t, _: t.endswith("/pass"))
                msg = tm.decode(payload)
                tracker.feed(msg)
                seqs.append(msg.seq)

            await broker.stop()
            await asyncio.wait_for(pub.wait_connected(False), 30)
            for i in range(3, 11):  # 8 events while the broker is away, backlog holds 5
                hub.publish(pass_event(i))
            assert pub.dropped == 3
            assert len(pub) == 5
            await broker.start()
            assert await pub.flush(60)

            while seqs[-1] < 10:
                _, payload = await sub.until(lambda t, _: t.endswith("/pass"))
                msg = tm.decode(payload)
                if tracker.feed(msg) or msg.seq > seqs[-1]:
                    seqs.append(msg.seq)
        finally:
            await sub.close()
    assert seqs == [1, 2, 6, 7, 8, 9, 10]  # in order; 3..5 dropped, counted, and detected
    assert tracker.missing == 3
    assert pub.connects >= 2


async def test_telemetry_service_with_metrics_and_orderly_stop(broker: Broker) -> None:
    from groundkey_daemon.metrics import Metrics
    from groundkey_daemon.service_config import TelemetryConfig, ZmqPubConfig
    from groundkey_daemon.telemetry_pub import TelemetryService

    config = TelemetryConfig(
        station=STATION,
        zmq=ZmqPubConfig(bind="tcp://127.0.0.1:0"),
        mqtt=broker.mqtt_config("groundkey"),
    )
    metrics = Metrics()
    service = TelemetryService(
        config, clock=SimClock(epoch=parse_utc("2016-12-19T13:00Z")), metrics=metrics
    )
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.mqtt.wait_connected(), 30)
        assert service.zmq.endpoint.startswith("tcp://127.0.0.1:")
        service.hub.publish(tm.StationStatus(station=STATION, state="idle"))
        assert await service.mqtt.flush(30)
        assert b"groundkey_mqtt_connected 1.0" in metrics.render()
        assert await service.stop(timeout_s=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    sub = await Sub.start(broker, "partner", f"groundkey/{STATION}/status")
    try:
        status = tm.decode((await sub.line())[1])
    finally:
        await sub.close()
    assert isinstance(status, tm.StationStatus)
    assert (status.state, status.detail, status.seq) == ("offline", "shutdown", 2)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    openssl = require_binary("openssl", "openssl")
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=gk-ca"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run([openssl, *map(str, cmd)], check=True, capture_output=True, timeout=60)
    return ca, cert, key


async def test_publisher_over_tls_with_password(tmp_path: Path) -> None:
    from groundkey_daemon.service_config import TlsConfig

    ca, cert, key = await asyncio.to_thread(make_certificates, tmp_path)
    tls_broker = Broker(tmp_path, tls=(ca, cert, key))
    await tls_broker.start()
    try:
        config = tls_broker.mqtt_config(
            "groundkey", port=tls_broker.tls_port, tls=TlsConfig(ca_file=str(ca))
        )
        pub = MqttTelemetryPublisher(
            config,
            will_topic=f"groundkey/{STATION}/status",
            will_payload=TelemetryHub.will_payload(STATION),
        )
        hub = TelemetryHub(
            STATION, clock=SimClock(epoch=parse_utc("2016-12-19T13:00Z")), sinks=[pub]
        )
        task = asyncio.create_task(pub.run())
        sub = await Sub.start(
            tls_broker,
            "partner",
            f"groundkey/{STATION}/status",
            f"groundkey/{STATION}/keyexchange",
            extra=("--cafile", str(ca), "-h", "127.0.0.1"),
            port=tls_broker.tls_port,
        )
        try:
            hub.publish(tm.StationStatus(station=STATION, state="online"))
            await sub.until(lambda t, _: t.endswith("/status"))
            hub.publish(key_event(1))
            _, payload = await sub.until(lambda t, _: t.endswith("/keyexchange"))
            assert tm.decode(payload).seq == 1
        finally:
            await sub.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await tls_broker.stop()
