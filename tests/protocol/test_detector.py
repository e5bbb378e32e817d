"""SCPI detector codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from groundkey_protocol.devices import detector as scpi
from groundkey_protocol.errors import ProtocolError


def test_encode_and_parse_round_trip() -> None:
    cmd = scpi.set_command(scpi.BIAS_VOLTAGE, 25.5)
    assert cmd.encode() == b"BIAS:VOLTAGE 25.5\n"
    assert scpi.parse_command(cmd.encode().rstrip()) == cmd
    assert scpi.set_command(scpi.BIAS_STATE, True).encode() == b"BIAS:STATE ON\n"
    assert scpi.query(scpi.MEASURED_TEMP).encode() == b"REG:MEASURED_TEMP?\n"
    assert scpi.parse_command(b"syst:err?") == scpi.Command(scpi.SYSTEM_ERROR, True)


def test_validation_and_replies() -> None:
    with pytest.raises(ProtocolError, match="outside"):
        scpi.set_command(scpi.TEMP_SET_POINT, -100)
    with pytest.raises(ProtocolError):
        scpi.query("BIAS:FOO")
    assert scpi.parse_error(b'-113,"Undefined header"') == (-113, "Undefined header")
    assert scpi.parse_bool(b"ON")
    assert not scpi.parse_bool(b"0")
    assert scpi.parse_float(b"-49.998\r") == -49.998
    with pytest.raises(ProtocolError):
        scpi.parse_float(b"hot")


def test_line_splitter_handles_partial_and_crlf() -> None:
    splitter = scpi.LineSplitter()
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\r\nde\n\n") == [b"abc", b"de"]
    assert splitter.feed(b"x" * 400) == []  # garbage without terminator is dropped
    assert splitter.feed(b"ok\n") == [b"ok"]


@given(st.binary(max_size=80))
def test_fuzz_parsers_raise_only_protocol_error(data: bytes) -> None:
    for fn in (scpi.parse_command, scpi.parse_float, scpi.parse_bool, scpi.parse_error):
        try:
            fn(data)
        except ProtocolError:
            pass
