"""Exact wire bytes of every rotator codec (REFERENCES §1, checked against Hamlib 4.5.4)."""

from __future__ import annotations

import pytest

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
    Azimuth,
    Blank,
    DumpState,
    Elevation,
    Extended,
    GetAzimuth,
    GetElevation,
    GetPosition,
    Ok,
    Park,
    Position,
    Prompt,
    Quit,
    Rejected,
    Request,
    RotatorLimits,
    SetPosition,
    SetSpeed,
    State,
    Stop,
    Unknown,
)
from groundkey_protocol.devices.rotctld import RotctldClient, RotctldDevice
from groundkey_protocol.errors import ProtocolError
from groundkey_sim.rotator import SimRotator


def mount_at(az: float, el: float, limits: RotatorLimits | None = None) -> SimRotator:
    mount = SimRotator(limits=limits)
    mount.teleport(AzEl(az, el))
    return mount


# --- SPID Rot2Prog / MD-01 -----------------------------------------------------------


def test_rot2prog_set_frame_matches_reference() -> None:
    client = Rot2ProgClient(resolution=(2, 2))
    request = client.encode(SetPosition(AzEl(123.5, 77.0)))
    assert request.data == bytes.fromhex("57 30 39 36 37 02 30 38 37 34 02 2F 20")
    assert request.expects_reply is False  # the original Rot2Prog does not answer a set
    assert MD01Client(resolution=(2, 2)).encode(SetPosition(AzEl(123.5, 77.0))).expects_reply


def test_rot2prog_status_and_stop_frames() -> None:
    client = Rot2ProgClient()
    assert client.encode(GetPosition()) == Request(bytes.fromhex("57" + "00" * 10 + "1F20"), True)
    assert client.encode(Stop()).data == bytes.fromhex("57" + "00" * 10 + "0F20")


def test_rot2prog_learns_resolution_from_status_before_set() -> None:
    client = Rot2ProgClient()
    with pytest.raises(ProtocolError, match="resolution"):
        client.encode(SetPosition(AzEl(10.0, 10.0)))
    # az 123.5 el 77.0 with PH=PV=4: raw digits of 4835 and 4370
    frame = bytes([0x57, 4, 8, 3, 5, 4, 4, 3, 7, 0, 4, 0x20])
    assert client.feed(frame[:5]) == []
    assert client.feed(frame[5:]) == [Position(AzEl(123.5, 77.0), (4, 4))]
    assert client.resolution == (4, 4)
    data = client.encode(SetPosition(AzEl(-10.0, 5.5))).data
    assert data == bytes([0x57, *b"1400", 4, *b"1462", 4, 0x2F, 0x20])


def test_rot2prog_client_resyncs_after_garbage() -> None:
    client = Rot2ProgClient()
    frame = bytes([0x57, 4, 8, 3, 5, 2, 4, 3, 7, 0, 2, 0x20])
    junk = bytes([0x57, 0xFF, 0x57, 1, 2, 0x20, 0x99])
    assert client.feed(junk + frame + junk[:3]) == [Position(AzEl(123.5, 77.0), (2, 2))]


def test_rot2prog_and_md01_devices_differ_on_set() -> None:
    set_frame = bytes.fromhex("57 30 39 36 37 02 30 38 37 34 02 2F 20")
    for device, answers in ((Rot2ProgDevice(), False), (MD01Device(), True)):
        mount = mount_at(10.0, 20.0)
        [command] = device.feed(set_frame)
        assert command == SetPosition(AzEl(123.5, 77.0))
        reply = device.respond(command, mount)
        assert mount.target == AzEl(123.5, 77.0)
        if answers:
            assert reply == bytes([0x57, 3, 7, 0, 0, 2, 3, 8, 0, 0, 2, 0x20])
        else:
            assert reply == b""


def test_rot2prog_device_answers_status_with_nonzero_resolution() -> None:
    device = Rot2ProgDevice(resolution=(2, 2))
    mount = mount_at(359.9, 0.0)
    [command] = device.feed(bytes.fromhex("57" + "00" * 10 + "1F20"))
    assert device.respond(command, mount) == bytes([0x57, 7, 1, 9, 9, 2, 3, 6, 0, 0, 2, 0x20])


# --- Yaesu GS-232A / GS-232B -----------------------------------------------------------


def test_gs232_client_commands() -> None:
    for client in (GS232AClient(), GS232BClient()):
        assert client.encode(SetPosition(AzEl(90.0, 30.0))) == Request(b"W090 030\r", False)
        assert client.encode(SetPosition(AzEl(-10.0, 5.0))).data == b"W350 005\r"
        assert client.encode(GetPosition()) == Request(b"C2\r", True)
        assert client.encode(Stop()).data == b"S\r"
        assert client.encode(SetSpeed(3)).data == b"X3\r"


def test_gs232a_device_answers_plus_format() -> None:
    device, mount = GS232ADevice(), mount_at(180.0, 45.0)
    assert device.feed(b"C2\rW090 030\rS\r") == [
        GetPosition(),
        SetPosition(AzEl(90.0, 30.0)),
        Stop(),
    ]
    assert device.respond(GetPosition(), mount) == b"+0180+0045\r\n"
    assert device.respond(SetPosition(AzEl(90.0, 30.0)), mount) == b""
    assert device.respond(Unknown("Q"), mount) == b"?>\r\n"
    assert GS232AClient().feed(b"+0180+0045\r\n") == [Position(AzEl(180.0, 45.0))]


def test_gs232b_lone_cr_is_answered_with_prompt_and_ignored_by_client() -> None:
    device, mount = GS232BDevice(), mount_at(0.0, 0.0)
    commands = device.feed(b"W090 030\r")
    commands += device.feed(b"\r")  # Hamlib's extra lone CR, 50 ms later
    assert commands == [SetPosition(AzEl(90.0, 30.0)), Blank()]
    answer = b"".join(device.respond(c, mount) for c in commands)
    assert answer == b"?>\r"
    assert GS232BClient().feed(answer) == [Prompt()]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ([b"AZ=181  EL=008\r"], [Position(AzEl(181.0, 8.0))]),
        ([b"AZ=181 EL=008\r", b"\n"], [Position(AzEl(181.0, 8.0))]),
        ([b"AZ=18", b"1 EL=0", b"08\r\n"], [Position(AzEl(181.0, 8.0))]),
        ([b"AZ=070EL=000\r\n"], [Position(AzEl(70.0, 0.0))]),
        ([b"AZ=229\r\n"], [Azimuth(229.0)]),
        ([b"EL=045\r\n"], [Elevation(45.0)]),
        ([b"?>\r"], [Prompt()]),
        ([b"?ERR\r\n"], [Rejected(-9, "?ERR")]),
        ([b"\xfe\x81AZ=010 EL=020\r\n"], [Position(AzEl(10.0, 20.0))]),
        ([b"junk\r\nAZ=010 EL=020\r\n"], [Position(AzEl(10.0, 20.0))]),
    ],
)
def test_gs232b_client_parses_real_hardware_quirks(
    wire: list[bytes], expected: list[object]
) -> None:
    client = GS232BClient()
    replies = [r for chunk in wire for r in client.feed(chunk)]
    assert replies == expected


@pytest.mark.parametrize(
    ("style", "wire"),
    [
        ("crlf", b"AZ=181 EL=008\r\n"),
        ("hardware", b"AZ=181  EL=008\r"),
        ("nospace", b"AZ=181EL=008\r\n"),
        ("azonly", b"AZ=181\r\n"),
    ],
)
def test_gs232b_device_answer_styles(style: str, wire: bytes) -> None:
    device = GS232BDevice(style)  # type: ignore[arg-type]
    assert device.respond(GetPosition(), mount_at(181.2, 7.6)) == wire


def test_gs232_device_single_axis_queries() -> None:
    device, mount = GS232BDevice(), mount_at(12.0, 34.0)
    assert device.feed(b"C\rB\rX2\r") == [GetAzimuth(), GetElevation(), SetSpeed(2)]
    assert device.respond(GetAzimuth(), mount) == b"AZ=012\r\n"
    assert device.respond(GetElevation(), mount) == b"EL=034\r\n"


# --- EasyComm II -------------------------------------------------------------------


def test_easycomm_client_commands_hamlib_454_and_46() -> None:
    client = EasyComm2Client()
    assert client.encode(SetPosition(AzEl(90.0, 30.0))) == Request(b"AZ90.0 EL30.0\n", False)
    assert client.encode(GetPosition()) == Request(b"AZ EL \n", True)
    assert client.encode(Stop()).data == b"SA SE \n"
    assert client.encode(GetAzimuth()).data == b"AZ\n"
    assert client.encode(GetElevation()).data == b"EL\n"
    assert client.feed(b"AZ90.0 EL30.0\n") == [Position(AzEl(90.0, 30.0))]
    assert client.feed(b"AZ12.5\nEL7.0\n") == [Azimuth(12.5), Elevation(7.0)]


def test_easycomm_device_ignores_stray_semicolon_and_answers_both_query_styles() -> None:
    device, mount = EasyComm2Device(), mount_at(90.0, 30.0)
    assert device.feed(b";AZ EL \n;\nAZ\nEL\nAZ10.5 EL20.0\nSA SE \nVE\n") == [
        GetPosition(),
        GetAzimuth(),
        GetElevation(),
        SetPosition(AzEl(10.5, 20.0)),
        Stop(),
        Unknown("VE", known=True),
    ]
    assert device.respond(GetPosition(), mount) == b"AZ90.0 EL30.0\n"
    assert device.respond(GetAzimuth(), mount) == b"AZ90.0\n"
    assert device.respond(GetElevation(), mount) == b"EL30.0\n"
    assert device.respond(SetPosition(AzEl(10.5, 20.0)), mount) == b""
    assert mount.target == AzEl(10.5, 20.0)


# --- rotctld ------------------------------------------------------------------------

HAMLIB_LIMITS = RotatorLimits(-180.0, 450.0, 0.0, 90.0)
DUMP_STATE = (
    b"1\n1\nmin_az=-180.000000\nmax_az=450.000000\nmin_el=0.000000\n"
    b"max_el=90.000000\nsouth_zero=0\nrot_type=AzEl\ndone\n"
)


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"p\n", b"7.22\n7.22\n"),
        (b"\\get_pos\n", b"7.22\n7.22\n"),
        (b"P 90 30\n", b"RPRT 0\n"),
        (b"+p\n", b"get_pos:\nAzimuth: 7.22\nElevation: 7.22\nRPRT 0\n"),
        (b"+P 91 31\n", b"set_pos: 91 31\nRPRT 0\n"),
        (b";p\n", b"get_pos:;Azimuth: 7.22;Elevation: 7.22;RPRT 0\n"),
        (b"S\n", b"RPRT 0\n"),
        (b"+S\n", b"stop:\nRPRT 0\n"),
        (b"K\n", b"RPRT 0\n"),
        (b"+K\n", b"park:\nRPRT 0\n"),
        (b"\\dump_state\n", DUMP_STATE),
        (b"P 500 10\n", b"RPRT -1\n"),
        (b"P 90\n", b"RPRT -1\n"),
        (b"xyz\n", b"RPRT -4\n"),
        (b"M 2 5\n", b"RPRT -11\n"),
        (b"q\n", b""),
    ],
)
def test_rotctld_server_transcript(line: bytes, answer: bytes) -> None:
    device = RotctldDevice()
    [command] = device.feed(line)
    assert device.respond(command, mount_at(7.22, 7.22, HAMLIB_LIMITS)) == answer


def test_rotctld_server_can_be_as_silent_as_real_rotctld() -> None:
    device = RotctldDevice(silent_unknown=True)
    [command] = device.feed(b"xyz\n")
    assert device.respond(command, mount_at(0.0, 0.0)) == b""


def test_rotctld_server_parses_quit_and_extended() -> None:
    assert RotctldDevice().feed(b"q\n+\\get_pos\n") == [Quit(), Extended(GetPosition(), "\n")]


def test_rotctld_client_transcript() -> None:
    client = RotctldClient()
    assert client.encode(DumpState()) == Request(b"\\dump_state\n", True)
    assert client.encode(GetPosition()) == Request(b"p\n", True)
    assert client.encode(SetPosition(AzEl(90.0, 30.0))).data == b"P 90.000000 30.000000\n"
    assert client.encode(Stop()).data == b"S\n"
    assert client.encode(Park()).data == b"K\n"
    assert client.encode(Extended(GetPosition())).data == b"+p\n"
    assert client.encode(GetPosition()).data == b"p\n"
    assert client.encode(Quit()) == Request(b"q\n", False)
    wire = DUMP_STATE + b"0.00\n45.50\nRPRT 0\nRPRT -1\nRPRT 0\n"
    wire += b"get_pos:\nAzimuth: 7.22\nElevation: 7.22\nRPRT 0\nRPRT -5\n"
    replies = [r for i in range(len(wire)) for r in client.feed(wire[i : i + 1])]
    assert replies == [
        State(HAMLIB_LIMITS),
        Position(AzEl(0.0, 45.5)),
        Ok(),
        Rejected(-1, "RPRT -1"),
        Ok(),
        Position(AzEl(7.22, 7.22)),
        Rejected(-5, "RPRT -5"),
    ]
