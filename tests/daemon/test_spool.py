"""The durable raw-chunk spool: what was appended survives a restart, blocks keep
their state, corrupt files are detected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groundkey_daemon.spool import Spool, SpoolError, read_chunk, read_chunks


def chunk(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 10**12, n)).astype(np.int64)
    return ts, rng.integers(1, 6, n).astype(np.uint8)


def test_chunks_and_blocks_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    a, b, c = chunk(1000, 1), chunk(0, 2), chunk(500, 3)
    names = [spool.append("p1", *x) for x in (a, b, c)]
    assert names == ["chunk-00000001.gkc", "chunk-00000002.gkc", "chunk-00000003.gkc"]
    ref = spool.seal_block("p1", names[:2], {"start_unix_s": 1.5})
    assert (tmp_path / "spool" / "p1").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "spool" / "p1" / names[0]).stat().st_mode & 0o777 == 0o600

    again = Spool(tmp_path / "spool")  # a new process after a crash
    assert again.pending_blocks() == [ref]
    assert again.unsealed_chunks("p1") == [names[2]]
    assert again.append("p1", *a) == "chunk-00000004.gkc"
    ts, ch = read_chunks(again.chunk_paths(ref))
    np.testing.assert_array_equal(ts, a[0])
    np.testing.assert_array_equal(ch, a[1])
    done = again.mark(ref, "done", block_id="abc")
    assert done.meta == {"start_unix_s": 1.5, "block_id": "abc"}
    assert Spool(tmp_path / "spool").pending_blocks() == []
    assert [r.state for r in Spool(tmp_path / "spool").blocks("p1")] == ["done"]
    again.remove_pass("p1")
    assert again.blocks() == []


def test_corrupt_or_truncated_chunks_are_detected(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    name = spool.append("p2", *chunk(100, 4))
    path = tmp_path / "p2" / name
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(SpoolError, match="corrupt"):
        read_chunk(path)
    path.write_bytes(b"GK")
    with pytest.raises(SpoolError, match="truncated"):
        read_chunk(path)


def test_pass_ids_cannot_escape_the_spool(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad pass id"):
        Spool(tmp_path).append("../etc", *chunk(1, 5))
