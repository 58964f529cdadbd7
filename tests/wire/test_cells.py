"""Tests for onionmesh.wire.cell: fixed-size link cells and the CREATE/CREATED/DESTROY payloads."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.cell import (
    CELL_HEADER_LEN,
    CELL_LEN,
    CELL_PAYLOAD_LEN,
    INITIATOR_CIRC_BIT,
    Cell,
    CellCommand,
    DestroyReason,
    create_payload,
    created_payload,
    destroy_payload,
    parse_create,
    parse_created,
)

KNOWN_COMMANDS = {int(c) for c in CellCommand}
UNKNOWN_COMMANDS = [b for b in range(256) if b not in KNOWN_COMMANDS]


# --------------------------------------------------------------------------- constants


def test_sizes_are_consistent() -> None:
    assert CELL_LEN == 4096
    assert CELL_HEADER_LEN == 5
    assert CELL_PAYLOAD_LEN == CELL_LEN - CELL_HEADER_LEN == 4091


# --------------------------------------------------------------------------- encode / decode


@pytest.mark.parametrize("command", list(CellCommand))
@pytest.mark.parametrize(
    "circ_id", [0, 1, 0x7FFF_FFFF, INITIATOR_CIRC_BIT, INITIATOR_CIRC_BIT | 5, 0xFFFF_FFFF]
)
def test_round_trip_every_command(command: CellCommand, circ_id: int) -> None:
    payload = bytes(range(256)) * 7  # 1792 bytes, shorter than the payload field
    wire = Cell(circ_id, command, payload).encode()
    assert len(wire) == CELL_LEN
    assert wire[:4] == circ_id.to_bytes(4, "big")
    assert wire[4] == command
    cell = Cell.decode(wire)
    assert cell.circ_id == circ_id
    assert cell.command is command
    assert len(cell.payload) == CELL_PAYLOAD_LEN
    assert cell.payload[: len(payload)] == payload
    assert cell.payload[len(payload) :] == bytes(CELL_PAYLOAD_LEN - len(payload))
    assert cell.encode() == wire


def test_empty_payload_is_zero_padded() -> None:
    wire = Cell(7, CellCommand.PADDING).encode()
    assert wire == (7).to_bytes(4, "big") + b"\x00" + bytes(CELL_PAYLOAD_LEN)


def test_full_payload_fits_exactly() -> None:
    payload = b"\xab" * CELL_PAYLOAD_LEN
    wire = Cell(1, CellCommand.RELAY, payload).encode()
    assert len(wire) == CELL_LEN
    assert Cell.decode(wire) == Cell(1, CellCommand.RELAY, payload)


def test_payload_one_byte_too_long_is_refused_locally() -> None:
    with pytest.raises(ValueError):
        Cell(1, CellCommand.RELAY, bytes(CELL_PAYLOAD_LEN + 1)).encode()


def test_decoded_command_is_the_enum() -> None:
    cell = Cell.decode(Cell(3, CellCommand.RELAY_EARLY, b"x").encode())
    assert isinstance(cell.command, CellCommand)
    assert cell.command is CellCommand.RELAY_EARLY


@pytest.mark.parametrize("length", [0, 1, 4, 5, CELL_LEN - 1, CELL_LEN + 1, 2 * CELL_LEN])
def test_wrong_length_is_a_remote_error(length: int) -> None:
    data = bytes([0, 0, 0, 1, CellCommand.RELAY]) + bytes(max(0, length - 5))
    data = data[:length]
    with pytest.raises(RemoteProtocolError, match="wrong length"):
        Cell.decode(data)


@pytest.mark.parametrize("command", UNKNOWN_COMMANDS)
def test_unknown_command_is_a_remote_error(command: int) -> None:
    data = bytes([0, 0, 0, 1, command]) + bytes(CELL_PAYLOAD_LEN)
    with pytest.raises(RemoteProtocolError, match="unknown cell command"):
        Cell.decode(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.large_base_example])
@given(st.binary(min_size=CELL_LEN, max_size=CELL_LEN))
def test_arbitrary_cells_decode_or_raise_remote_error(data: bytes) -> None:
    try:
        cell = Cell.decode(data)
    except RemoteProtocolError:
        assert data[4] not in KNOWN_COMMANDS
        return
    assert data[4] in KNOWN_COMMANDS
    assert cell.encode() == data


@given(st.binary(max_size=3 * CELL_LEN))
def test_arbitrary_lengths_decode_or_raise_remote_error(data: bytes) -> None:
    try:
        Cell.decode(data)
    except RemoteProtocolError:
        pass
    else:
        assert len(data) == CELL_LEN


@given(
    st.integers(0, 0xFFFF_FFFF),
    st.sampled_from(list(CellCommand)),
    st.binary(max_size=CELL_PAYLOAD_LEN),
)
def test_round_trip_generated(circ_id: int, command: CellCommand, payload: bytes) -> None:
    cell = Cell.decode(Cell(circ_id, command, payload).encode())
    assert (cell.circ_id, cell.command) == (circ_id, command)
    assert cell.payload == payload + bytes(CELL_PAYLOAD_LEN - len(payload))


# --------------------------------------------------------------------------- CREATE / CREATED


@pytest.mark.parametrize("hdata", [b"", b"\x01", bytes(range(96)), b"\xff" * 2000])
@pytest.mark.parametrize("htype", [0, 1, 0xFFFF])
def test_create_payload_round_trip(htype: int, hdata: bytes) -> None:
    raw = create_payload(htype, hdata)
    assert raw[:2] == htype.to_bytes(2, "big")
    assert raw[2:4] == len(hdata).to_bytes(2, "big")
    assert parse_create(raw) == (htype, hdata)
    # carried in a cell, the zero padding after the handshake is ignored
    cell = Cell.decode(Cell(9, CellCommand.CREATE, raw).encode())
    assert parse_create(cell.payload) == (htype, hdata)


@pytest.mark.parametrize("hdata", [b"", b"\x00" * 64, bytes(range(200))])
def test_created_payload_round_trip(hdata: bytes) -> None:
    raw = created_payload(hdata)
    assert raw == len(hdata).to_bytes(2, "big") + hdata
    assert parse_created(raw) == hdata
    cell = Cell.decode(Cell(9, CellCommand.CREATED, raw).encode())
    assert parse_created(cell.payload) == hdata


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", b"\x00\x01", b"\x00\x01\x00", b"\x00\x01\x00\x05abcd", b"\x00\x01\xff\xff" + bytes(100)],
)
def test_malformed_create_is_a_remote_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed CREATE"):
        parse_create(payload)


@pytest.mark.parametrize(
    "payload", [b"", b"\x00", b"\x00\x05abcd", b"\xff\xff" + bytes(CELL_PAYLOAD_LEN - 2)]
)
def test_malformed_created_is_a_remote_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed CREATED"):
        parse_created(payload)


def test_create_length_field_cannot_reach_past_the_cell() -> None:
    # a length that would need more bytes than a cell payload holds
    raw = (1).to_bytes(2, "big") + (CELL_PAYLOAD_LEN - 3).to_bytes(2, "big")
    payload = Cell.decode(Cell(1, CellCommand.CREATE, raw).encode()).payload
    with pytest.raises(RemoteProtocolError):
        parse_create(payload)
    raw_ok = (1).to_bytes(2, "big") + (CELL_PAYLOAD_LEN - 4).to_bytes(2, "big")
    payload = Cell.decode(Cell(1, CellCommand.CREATE, raw_ok).encode()).payload
    assert parse_create(payload) == (1, bytes(CELL_PAYLOAD_LEN - 4))


@settings(max_examples=300)
@given(st.binary(max_size=CELL_PAYLOAD_LEN + 16))
def test_arbitrary_create_created_raise_only_remote_errors(data: bytes) -> None:
    for parse in (parse_create, parse_created):
        with contextlib.suppress(RemoteProtocolError):
            parse(data)


@given(st.integers(0, 0xFFFF), st.binary(max_size=CELL_PAYLOAD_LEN - 4))
def test_create_round_trip_generated(htype: int, hdata: bytes) -> None:
    assert parse_create(create_payload(htype, hdata)) == (htype, hdata)
    assert parse_created(created_payload(hdata)) == hdata


# --------------------------------------------------------------------------- DESTROY


@pytest.mark.parametrize("reason", list(DestroyReason))
def test_destroy_payload(reason: DestroyReason) -> None:
    assert destroy_payload(reason) == bytes([reason])
    assert DestroyReason.of(destroy_payload(reason)[0]) is reason


@pytest.mark.parametrize("value", [12, 100, 255])
def test_unknown_destroy_reason_reads_as_none(value: int) -> None:
    assert DestroyReason.of(value) is DestroyReason.NONE
