"""Debian's real Hamlib 4.5.4 against our emulators and our rotctld driver/server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from groundkey_drivers.errors import DeviceRejected, LimitError
from groundkey_drivers.rotator.rotctld import Rotctld
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits
from groundkey_sim.rotator import SimRotator, device_codec_factory, serve_pty, serve_tcp
from tests.conftest import require_binary

# (Hamlib model, our protocol, position resolution of the protocol in degrees)
MODELS = [
    (601, "gs232a", 1.0),
    (603, "gs232b", 1.0),
    (901, "rot2prog", 0.1),
    (903, "md01", 0.1),
    (202, "easycomm2", 0.1),
]


async def rotctl(*args: str, timeout_s: float = 30.0) -> list[str]:
    """Run Hamlib's rotctl with ``args``; its stdout lines (fails on non-zero exit)."""
    exe = require_binary("rotctl", "libhamlib-utils")
    proc = await asyncio.create_subprocess_exec(
        exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"rotctl {args} -> {proc.returncode}: {err.decode()[-500:]}"
    return [line for line in out.decode().splitlines() if line.strip()]


def fast_mount() -> SimRotator:
    return SimRotator(slew_rate_deg_s=(3.0, 3.0), accel_deg_s2=(6.0, 6.0))


@pytest.mark.parametrize(("model", "protocol", "resolution_deg"), MODELS)
async def test_rotctl_reads_and_sets_emulated_controller_on_pty(
    model: int, protocol: str, resolution_deg: float
) -> None:
    mount = fast_mount()
    mount.teleport(AzEl(123.4, 45.6))
    async with await serve_pty(protocol, mount=mount) as server:
        lines = await rotctl("-m", str(model), "-r", server.endpoint, "-s", "9600", "p")
        az, el = float(lines[0]), float(lines[1])
        assert az == pytest.approx(123.4, abs=resolution_deg / 2 + 1e-6)
        assert el == pytest.approx(45.6, abs=resolution_deg / 2 + 1e-6)

        await rotctl("-m", str(model), "-r", server.endpoint, "-s", "9600", "P", "200", "30")
        assert mount.target == AzEl(200.0, 30.0)


@pytest.mark.parametrize("style", ["hardware", "nospace"])
async def test_rotctl_gs232b_accepts_real_hardware_answer_flavours(style: str) -> None:
    """``AZ=181  EL=008\\r`` (two spaces, no LF) and ``AZ=070EL=000``: Hamlib reads both."""
    mount = fast_mount()
    mount.teleport(AzEl(181.0, 8.0))
    factory = device_codec_factory("gs232b", gs232b_style=style)  # type: ignore[arg-type]
    async with await serve_pty("gs232b", mount=mount, codec_factory=factory) as server:
        lines = await rotctl("-m", "603", "-r", server.endpoint, "-s", "9600", "p")
    assert [float(v) for v in lines[:2]] == [181.0, 8.0]


async def test_rotctl_speaks_gs232b_over_tcp_to_emulator() -> None:
    mount = fast_mount()
    mount.teleport(AzEl(10.0, 20.0))
    async with await serve_tcp("gs232b", mount=mount) as server:
        hostport = server.endpoint.removeprefix("tcp://")
        lines = await rotctl("-m", "603", "-r", hostport, "p", "P", "90", "30")
    assert [float(v) for v in lines[:2]] == [10.0, 20.0]
    assert mount.target == AzEl(90.0, 30.0)


async def test_hamlib_network_client_drives_our_rotctld_server() -> None:
    """``rotctl -m 2`` sends ``\\dump_state`` on open, then ``P``/``p``/``S``."""
    mount = fast_mount()
    mount.teleport(AzEl(33.3, 44.4))
    async with await serve_tcp("rotctld", mount=mount) as server:
        hostport = server.endpoint.removeprefix("tcp://")
        lines = await rotctl("-m", "2", "-r", hostport, "p", "P", "90", "30")
        assert [float(v) for v in lines[:2]] == pytest.approx([33.3, 44.4], abs=0.006)
        assert mount.target == AzEl(90.0, 30.0)
        await rotctl("-m", "2", "-r", hostport, "S")
        assert not mount.moving


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def real_rotctld(*backend: str) -> AsyncIterator[int]:
    """Debian's rotctld on a free port, ``backend`` args (default: the dummy, -m 1)."""
    exe = require_binary("rotctld", "libhamlib-utils")
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        exe, *(backend or ("-m", "1")), "-T", "127.0.0.1", "-t", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(15):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                break
        yield port
    finally:
        proc.terminate()
        await proc.wait()


async def test_our_rotctld_driver_drives_real_rotctld_dummy() -> None:
    async with real_rotctld() as port:
        wide = RotatorLimits(min_az_deg=-180.0, max_az_deg=540.0, max_el_deg=90.0)
        async with Rotctld(f"tcp://127.0.0.1:{port}", name="hamlib-dummy", limits=wide) as rot:
            assert await rot.backend_limits() == RotatorLimits(-180.0, 450.0, 0.0, 90.0)
            start = await rot.position()
            assert isinstance(start.az_deg, float)
            await rot.point(AzEl(6.0, 3.0))
            async with asyncio.timeout(60):  # the dummy backend slews at a few deg/s
                while True:
                    if await rot.position() == AzEl(6.0, 3.0):
                        break
                    await asyncio.sleep(0.2)
            with pytest.raises(DeviceRejected) as rejected:
                await rot.point(AzEl(500.0, 10.0))  # inside our limits, outside Hamlib's
            assert "hamlib-dummy" in str(rejected.value)
            assert not isinstance(rejected.value, LimitError)
            await rot.stop()
            await rot.park()


async def test_real_rotctld_fronting_our_gs232b_emulator_reports_silence_as_rprt_5() -> None:
    """Driver -> real rotctld -> our emulated GS-232B on a pty; a silent controller makes
    Hamlib retry C2 and answer RPRT -5 (ETIMEOUT), which the driver raises as rejected."""
    mount = fast_mount()
    mount.teleport(AzEl(181.0, 8.0))
    async with (
        await serve_pty("gs232b", mount=mount) as server,
        real_rotctld("-m", "603", "-r", server.endpoint, "-s", "9600") as port,
        Rotctld(f"tcp://127.0.0.1:{port}", name="via-rotctld", timeout_s=20) as rot,
    ):
        assert await rot.position() == AzEl(181.0, 8.0)
        await rot.point(AzEl(200.0, 20.0))
        await rot.position()  # handled in order
        assert mount.target == AzEl(200.0, 20.0)
        server.inject("silence")
        with pytest.raises(DeviceRejected) as rejected:
            await rot.position()
        assert "-5" in str(rejected.value)
        server.clear("silence")
        assert (await rot.position()).az_deg >= 181.0
