"""On-disk LDPC code cache: round trip, atomic files, bad files rebuilt, loader hook;
and the reconcile sweep behind ``groundkey bench reconcile --plot``."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from groundkey_daemon.ldpc_cache import LdpcCodeCache
from groundkey_protocol.qkd.ldpc import codes
from groundkey_protocol.qkd.ldpc.construction import build_code


@pytest.fixture
def clean_code_table() -> Iterator[None]:
    codes.set_code_loader(None)
    codes._codes.clear()
    codes._decoders.clear()
    yield
    codes.set_code_loader(None)
    codes._codes.clear()
    codes._decoders.clear()


def test_round_trip_is_the_generated_code(tmp_path: Path) -> None:
    cache = LdpcCodeCache(tmp_path / "state" / "ldpc")
    assert not (tmp_path / "state").exists()  # constructor does no I/O
    code = cache.load_or_build(0.7, 10_000)
    path = cache.path_for(0.7, 10_000)
    assert path.is_file()
    assert cache.builds == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    again = LdpcCodeCache(path.parent).load_or_build(0.7, 10_000)
    assert np.array_equal(again.base, code.base)
    assert again.z == code.z
    assert np.array_equal(again.base, build_code(0.7, 10_000).base)
    assert np.load(path, allow_pickle=False).dtype == np.int32
    assert stat.S_ISREG(path.stat().st_mode)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", None],  # None: a valid .npy of the wrong shape
)
def test_bad_files_are_rebuilt_and_replaced(tmp_path: Path, content: bytes | None) -> None:
    cache = LdpcCodeCache(tmp_path)
    path = cache.path_for(0.5, 2_000)
    if content is None:
        np.save(path, np.zeros((3, 3), dtype=np.int32))
    else:
        path.write_bytes(content)
    code = cache.load_or_build(0.5, 2_000)
    assert cache.builds == 1
    assert cache.hits == 0
    assert np.array_equal(code.base, build_code(0.5, 2_000).base)
    assert np.array_equal(np.load(path), code.base)
    cache.load_or_build(0.5, 2_000)
    assert cache.hits == 1


def test_unwritable_directory_still_returns_codes(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = LdpcCodeCache(blocker / "ldpc")
    code = cache.load_or_build(0.6, 2_000)
    assert code.n == 2_000
    assert cache.builds == 1


def test_installed_loader_feeds_the_protocol_roles(tmp_path: Path, clean_code_table: None) -> None:
    from groundkey_protocol.qkd.ldpc import LdpcAlice, LdpcBob
    from groundkey_protocol.qkd.reconcile import ReconcileParams, run_pair

    cache = LdpcCodeCache(tmp_path)
    assert cache.warm([4_500], rates=(0.7,)) == 1
    cache.install()
    rng = np.random.default_rng(1)
    alice_bits = rng.integers(0, 2, (3, 4_500), dtype=np.uint8)
    bob_bits = alice_bits ^ (rng.random(alice_bits.shape) < 0.03).astype(np.uint8)
    params = ReconcileParams(method="ldpc", qber=0.03, seed=2, block_id="c")
    bob = LdpcBob(bob_bits, params)
    run_pair(LdpcAlice(alice_bits, params), bob)
    assert np.array_equal(bob.corrected_bits, alice_bits)
    assert cache.builds >= 1
    assert len(list(tmp_path.glob("*.npy"))) == cache.builds


def test_reconcile_sweep_plot(tmp_path: Path) -> None:
    from groundkey_daemon.bench.ldpc import plot_sweep, reconcile_sweep

    points = reconcile_sweep(["ldpc", "ldpc-blind"], [0.02, 0.05], frames=2, frame_bits=2_000)
    assert {(p.method, p.qber) for p in points} == {
        (m, q) for m in ("ldpc", "ldpc-blind") for q in (0.02, 0.05)
    }
    assert all(1.0 < p.efficiency < 3.0 and p.messages <= 3 for p in points)
    assert {p.frame_bits for p in points} == {2_000}
    # frame_bits 0: the daemon's operating points (LDPC's frame plan, 10^5 for Cascade)
    (auto,) = reconcile_sweep(["ldpc-blind"], [0.05], frames=1, frame_bits=0)
    assert auto.frame_bits == 90_000
    assert auto.fer == 0.0
    assert auto.efficiency == pytest.approx(1.12, abs=0.01)
    out = tmp_path / "sweep.png"
    plot_sweep(points, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_reconcile_cli_writes_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from groundkey_daemon.cli import main

    out = tmp_path / "reconcile.png"
    argv = ["bench", "reconcile", "--plot", str(out), "--frames", "1", "--frame-bits", "2000"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "ldpc-blind" in text
    assert "qber  8.0 %" in text
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["bench", "--plot", str(out)]) == 2  # --plot belongs to the sweep
    assert "reconcile" in capsys.readouterr().err
