"""Crash safety: the whole service (daemon and its distillation workers) is SIGKILLed at
eleven distinct points of one accelerated pass and of the key delivery that follows, and
restarted each time, as systemd's ``Restart=on-failure`` would. Afterwards no key is lost,
duplicated or delivered twice, and both ends of the link agree on every stored key.

The points are identified from the daemon's own sd_notify STATUS messages and log lines
and from its durable spool (no test hooks in the service). Events follow each other within
milliseconds, so a kill lands at, or just after, the event that triggered it.

1. acquiring: a raw tag chunk is spooled            (pass in progress, link down)
2. acquiring: a block of chunks is sealed           (pass in progress, link down)
3. a block is kept for a retry (link unavailable)   (pass in progress)
   ... the pass ends; the link comes back ...
4. recovering: distilling a spooled block after a restart
5. sync / distill of a recovered block (worker process mid-distillation)
6. store (the key block is written)
7. publish (key-exchange event)
8. the block is committed at the satellite
9. delivery: keys reserved for a consumer, not yet acknowledged
10. delivery: acknowledged (material erased)
11. delivery: a second reservation in flight, then a graceful stop
"""

from __future__ import annotations

import base64
import json
import signal
import time
from pathlib import Path

from groundkey_daemon.keystore import key_ids_for
from groundkey_daemon.spool import Spool
from tests.system.harness import Consumers, Rig
from tests.system.test_service import free_port

PASS_ID = "41731-20161219T164843Z"


def _wait(pred: object, what: str, rig: Rig, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    assert callable(pred)
    while not pred():
        assert rig.daemon is not None
        assert rig.daemon.poll() is None, f"daemon exited waiting for {what}\n{rig.log}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{rig.log}"
        time.sleep(0.01)


def _keys(result: object) -> dict[str, bytes]:
    doc = json.loads(str(getattr(result, "stdout", "")).strip().splitlines()[-1])
    return {k["key_ID"]: base64.b64decode(k["key"]) for k in doc["keys"]}


def test_sigkill_at_eleven_points_loses_duplicates_and_redelivers_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, speed=30.0, tagger_s=5.0)
    consumers = Consumers(tmp_path)
    dead_link = f"tcp://127.0.0.1:{free_port()}"
    spool = Spool(tmp_path / "state" / "spool")
    pass_dir = tmp_path / "state" / "spool" / PASS_ID
    points: list[str] = []

    def configure(link: str) -> None:
        rig.write_config(min_block_detections=600_000, delivery=consumers.config())
        text = rig.config.read_text()
        text = text.replace(f'endpoint = "{rig.sat_url}"\ntimeout_s = 60', f'endpoint = "{link}"')
        timeout_s = 1.0 if link == dead_link else 60.0
        rig.config.write_text(text.replace("[link]\n", f"[link]\ntimeout_s = {timeout_s}\n"))

    def kill(point: str) -> int:
        points.append(point)
        rig.crash()
        mark = rig.start()
        rig.wait("READY=1", since=mark)
        return mark

    delivered: dict[str, bytes] = {}
    try:
        # -- the pass, with the satellite link down: blocks stay spooled ----------------
        configure(dead_link)
        mark = rig.start()
        rig.wait("READY=1", since=mark)
        rig.wait(": acquire", since=mark)
        _wait(lambda: any(pass_dir.glob("chunk-*.gkc")), "a spooled chunk", rig)
        mark = kill("acquire: chunk spooled")
        sealed = len(list(pass_dir.glob("block-*.json")))
        rig.wait(": acquire", since=mark)
        _wait(lambda: len(list(pass_dir.glob("block-*.json"))) > sealed, "a sealed block", rig)
        kill("acquire: block sealed")
        retries = rig.log.count("kept for a retry")
        rig.wait_log("kept for a retry", retries + 1)
        kill("block kept for retry")
        assert rig.finish() == 0, rig.log  # the pass ends (max_passes = 1)
        assert ": park" in rig.log
        pending = [b for b in spool.blocks(PASS_ID) if b.state != "done"]
        assert pending, rig.log

        # -- the link is back: recovery at start-up, killed at every step ----------------
        configure(rig.sat_url)
        mark = rig.start()
        rig.wait("READY=1", since=mark)
        for needle, point in [
            ("distilling after a restart", "recovery: distilling after a restart"),
            (": distill (block", "recovery: mid-distillation"),
            (": store (block", "store"),
            (": publish (block", "publish"),
            ("committed at the satellite", "committed at the satellite"),
        ]:
            if needle.startswith(":"):
                rig.wait(needle, since=mark)
            else:
                rig.wait_log(needle, rig.log.count(needle) + 1)
            mark = kill(point)

        def settled() -> bool:
            return all(b.state == "done" for b in spool.blocks())

        _wait(settled, "every spooled block done", rig)
        stored = rig.station_keys()
        assert stored, rig.log
        n_keys = sum(n // 8 // 32 for _, n, _ in stored.values())

        # -- delivery: reserve, crash, retry the same request, ack, crash ---------------
        first = consumers.get(64, request_id="req-1", ack=False)
        assert first.returncode == 0, first.stderr
        got = _keys(first)
        kill("delivery: reserved, not acknowledged")
        again = consumers.get(64, request_id="req-1")  # the same request after the crash
        assert again.returncode == 0, again.stderr
        assert _keys(again) == got  # the same keys, to the same consumer, once
        delivered.update(got)
        kill("delivery: acknowledged")
        retry = consumers.get(64, request_id="req-1")
        assert retry.returncode != 0 or not set(_keys(retry)) - set(got)
        rest = consumers.get(32 * (n_keys - len(delivered)), request_id="req-2", ack=False)
        assert rest.returncode == 0, rest.stderr
        second = _keys(rest)
        assert not set(second) & set(delivered), "a key was delivered twice"
        kill("delivery: second reservation in flight")
        final = consumers.get(32 * len(second), request_id="req-2")
        assert final.returncode == 0, final.stderr
        assert _keys(final) == second
        delivered.update(second)
        assert rig.daemon is not None
        rig.daemon.send_signal(signal.SIGTERM)
        assert rig.finish() == 0, rig.log
    finally:
        rig.close()

    log = rig.log
    assert len(points) >= 10, points
    # the chunks spooled before the first kill were sealed into a block, not forgotten
    assert "chunk(s) spooled before the restart sealed as block" in log
    assert log.count("supervisor: ready") == len(points) + 2
    assert "Traceback" not in log.replace("=== SIGKILL ===", ""), log
    # both ends agree on every block: the same blocks, no duplicates, the same bits
    stored = rig.station_keys()
    alice = rig.satellite_keys()
    assert set(alice) == set(stored), (sorted(alice), sorted(stored), log)
    all_ids: list[str] = []
    for block_id, (qber, length_bits, _) in stored.items():
        assert 0.005 < qber < 0.03
        n = length_bits // 8 // 32
        ids = key_ids_for(block_id, n)
        all_ids += ids
        for i, key_id in enumerate(ids):
            # every key was delivered exactly once, with the satellite's bits
            assert delivered.get(key_id) == alice[block_id][32 * i : 32 * (i + 1)], key_id
    assert len(all_ids) == len(set(all_ids)) == len(delivered)  # nothing lost or duplicated
    assert all(material == b"" for _, _, material in stored.values())  # erased after the ack


def test_spool_orphans_are_grouped_by_acquisition_session(tmp_path: Path) -> None:
    """Chunks a crash left outside any block come back with their own session's metadata
    (each acquisition run restarts the tagger's time base); sealed chunks do not."""
    import numpy as np

    spool = Spool(tmp_path)
    ts, ch = np.arange(5, dtype=np.int64), np.ones(5, dtype=np.uint8)
    spool.begin_session(PASS_ID, {"start_unix_s": 1.0})
    first = [spool.append(PASS_ID, ts, ch) for _ in range(3)]
    spool.seal_block(PASS_ID, first[:2], {"start_unix_s": 1.0})
    restarted = Spool(tmp_path)  # a new process: numbering continues from the files
    restarted.begin_session(PASS_ID, {"start_unix_s": 2.0})
    second = [restarted.append(PASS_ID, ts, ch) for _ in range(2)]
    assert restarted.orphans(PASS_ID) == [
        ([first[2]], {"start_unix_s": 1.0}),
        (second, {"start_unix_s": 2.0}),
    ]
    restarted.seal_block(PASS_ID, second, {"start_unix_s": 2.0})
    assert [names for names, _ in restarted.orphans(PASS_ID)] == [[first[2]]]
