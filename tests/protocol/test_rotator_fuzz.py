"""Property-based fuzzing of every rotator codec, both sides."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundkey_protocol.devices.easycomm import EasyComm2Client, EasyComm2Device
from groundkey_protocol.devices.gs232 import (
    GS232AClient,
    GS232ADevice,
    GS232BClient,
    GS232BDevice,
)
from groundkey_protocol.devices.rot2prog import (
    MD01Client,
    MD01Device,
    Rot2ProgClient,
    Rot2ProgDevice,
)
from groundkey_protocol.devices.rotator import (
    AzEl,
    ClientCodec,
    DeviceCodec,
    GetPosition,
    Position,
    RotatorLimits,
    SetPosition,
    Stop,
)
from groundkey_protocol.devices.rotctld import RotctldClient, RotctldDevice
from groundkey_protocol.errors import ProtocolError
from groundkey_sim.rotator import SimRotator

# protocol -> (client factory, device factory, set quantum, reply quantum, az range)
CODECS: dict[
    str,
    tuple[Callable[[], ClientCodec], Callable[[], DeviceCodec], float, float, tuple[float, float]],
] = {
    "gs232a": (GS232AClient, GS232ADevice, 0.5, 0.5, (0.0, 450.0)),
    "gs232b": (GS232BClient, GS232BDevice, 0.5, 0.5, (0.0, 450.0)),
    "rot2prog": (lambda: Rot2ProgClient((2, 2)), Rot2ProgDevice, 0.5, 0.05, (-180.0, 540.0)),
    "md01": (lambda: MD01Client((10, 10)), MD01Device, 0.1, 0.05, (-180.0, 540.0)),
    "easycomm2": (EasyComm2Client, EasyComm2Device, 0.05, 0.05, (0.0, 360.0)),
    "rotctld": (RotctldClient, RotctldDevice, 1e-6, 0.005, (-180.0, 540.0)),
}
FUZZ = settings(max_examples=200, deadline=None)
chunks = st.lists(st.binary(max_size=64), max_size=12)
noise = st.binary(max_size=8).map(lambda b: bytes(0x80 | x for x in b))


@pytest.mark.parametrize("protocol", sorted(CODECS))
@FUZZ
@given(data=chunks)
def test_client_feed_arbitrary_bytes_raises_only_protocol_error(
    protocol: str, data: list[bytes]
) -> None:
    client = CODECS[protocol][0]()
    client.encode(GetPosition())  # so that rotctld expects something
    for chunk in data:
        try:
            client.feed(chunk)
        except ProtocolError:
            pass


@pytest.mark.parametrize("protocol", sorted(CODECS))
@FUZZ
@given(data=chunks)
def test_device_feed_arbitrary_bytes_raises_only_protocol_error(
    protocol: str, data: list[bytes]
) -> None:
    device = CODECS[protocol][1]()
    for chunk in data:
        try:
            device.feed(chunk)
        except ProtocolError:
            pass


@pytest.mark.parametrize("protocol", sorted(CODECS))
@FUZZ
@given(
    az_frac=st.floats(0.0, 1.0),
    el=st.floats(0.0, 90.0),
    junk=noise,
    split=st.integers(0, 40),
)
def test_client_encode_device_decode_round_trip(
    protocol: str, az_frac: float, el: float, junk: bytes, split: int
) -> None:
    client_factory, device_factory, quantum, _, (lo, hi) = CODECS[protocol]
    target = AzEl(lo + az_frac * (hi - lo), el)
    client, device = client_factory(), device_factory()
    wire = junk
    for command in (GetPosition(), SetPosition(target), Stop()):
        wire += client.encode(command).data
    commands = device.feed(wire[:split]) + device.feed(wire[split:])
    assert commands[0] == GetPosition()
    assert isinstance(commands[1], SetPosition)
    assert commands[1].target.az_deg == pytest.approx(target.az_deg, abs=quantum + 1e-9)
    assert commands[1].target.el_deg == pytest.approx(target.el_deg, abs=quantum + 1e-9)
    assert commands[2] == Stop()


@pytest.mark.parametrize("protocol", sorted(CODECS))
@FUZZ
@given(
    az_frac=st.floats(0.0, 1.0),
    el=st.floats(0.0, 90.0),
    junk=noise,
    split=st.integers(0, 30),
)
def test_device_encode_client_decode_round_trip(
    protocol: str, az_frac: float, el: float, junk: bytes, split: int
) -> None:
    client_factory, device_factory, _, quantum, (lo, hi) = CODECS[protocol]
    lo = max(lo, 0.0)  # GS-232 answers carry no sign
    position = AzEl(lo + az_frac * (hi - lo), el)
    client, device = client_factory(), device_factory()
    client.encode(GetPosition())
    wire = junk + device.encode(Position(position))
    replies = client.feed(wire[:split]) + client.feed(wire[split:])
    assert len(replies) == 1
    reply = replies[0]
    assert isinstance(reply, Position)
    assert reply.position.az_deg == pytest.approx(position.az_deg, abs=quantum + 1e-9)
    assert reply.position.el_deg == pytest.approx(position.el_deg, abs=quantum + 1e-9)


_GS232 = [b"C2\r", b"W090 030\r", b"\r", b"C\r", b"B\r", b"S\r", b"X2\r", b"W999 999\r"]
_SPID = [
    bytes.fromhex("57" + "00" * 10 + "1F20"),
    bytes.fromhex("57" + "00" * 10 + "0F20"),
    bytes.fromhex("57 30 39 36 37 02 30 38 37 34 02 2F 20"),
    bytes.fromhex("57 39 39 39 39 01 30 30 30 30 01 2F 20"),
]
TOKENS = {
    "gs232a": _GS232,
    "gs232b": _GS232,
    "rot2prog": _SPID,
    "md01": _SPID,
    "easycomm2": [b"AZ EL \n", b"AZ\n", b"EL\n", b"AZ-10.5 EL200\n", b"SA SE \n", b";", b"VE\n"],
    "rotctld": [
        b"p\n",
        b"+p\n",
        b"P 1e308 -5\n",
        b"\\dump_state\n",
        b"q\n",
        b";\\set_pos 1 2\n",
        b"P nan inf\n",
        b"|K\n",
        b"_\n",
    ],
}


@pytest.mark.parametrize("protocol", sorted(CODECS))
@FUZZ
@given(
    data=st.data(),
    az=st.floats(-180.0, 540.0),
    el=st.floats(-90.0, 180.0),
)
def test_device_respond_to_arbitrary_input_never_crashes(
    protocol: str, data: st.DataObject, az: float, el: float
) -> None:
    """Whatever a client sends (valid commands among junk), the emulated controller
    answers or stays silent."""
    pieces = st.one_of(st.binary(max_size=32), st.sampled_from(TOKENS[protocol]))
    chunks_drawn = data.draw(st.lists(pieces, max_size=12))
    device = CODECS[protocol][1]()
    mount = SimRotator(limits=RotatorLimits(-180.0, 540.0, -90.0, 180.0))
    mount.teleport(AzEl(az, el))
    for chunk in chunks_drawn:
        try:
            for command in device.feed(chunk):
                assert isinstance(device.respond(command, mount), bytes)
        except ProtocolError:
            pass
