"""The bridge wire formats: DESCRIPTOR cells and the DHT_RPC / DHT_ANSWER bodies (property tests)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.directory.descriptor import MAX_DESCRIPTOR_LEN
from onionmesh.errors import RemoteProtocolError
from onionmesh.wire import bridge_cells
from onionmesh.wire.bridge_cells import DescriptorAssembler, descriptor_payloads
from onionmesh.wire.cell import CELL_PAYLOAD_LEN, Cell, CellCommand
from onionmesh.wire.chunked import CHUNK_MAX
from onionmesh.wire.dht_rpc import (
    MAX_ANSWER,
    MAX_REQUEST,
    AnswerAssembler,
    DhtAnswer,
    DhtRpc,
    DhtStatus,
    answer_bodies,
)
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, RelayCommand, RelayMessage

ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@given(st.binary(min_size=1, max_size=MAX_DESCRIPTOR_LEN))
def test_descriptor_cells_round_trip(raw: bytes) -> None:
    assembler = DescriptorAssembler()
    payloads = descriptor_payloads(raw)
    results = []
    for payload in payloads:
        cell = Cell.decode(Cell(0, CellCommand.DESCRIPTOR, payload).encode())  # as the link delivers it
        assert len(cell.payload) == CELL_PAYLOAD_LEN
        results.append(assembler.feed(cell.payload))
    assert results[-1] == raw and all(r is None for r in results[:-1])


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=CELL_PAYLOAD_LEN), max_size=4))
def test_arbitrary_descriptor_cells_raise_only_remote_errors(payloads: list[bytes]) -> None:
    assembler = DescriptorAssembler()
    for payload in payloads:
        try:
            out = assembler.feed(payload.ljust(CELL_PAYLOAD_LEN, b"\0"))
        except RemoteProtocolError:
            return
        assert out is None or len(out) <= MAX_DESCRIPTOR_LEN


def test_a_descriptor_too_long_is_refused() -> None:
    assembler = DescriptorAssembler()
    more = descriptor_payloads(b"x" * min(bridge_cells.CHUNK_MAX, MAX_DESCRIPTOR_LEN))[0]
    more = bytes([1]) + more[1:]
    assembler.feed(more.ljust(CELL_PAYLOAD_LEN, b"\0"))
    with pytest.raises(RemoteProtocolError, match="too long"):
        assembler.feed(more.ljust(CELL_PAYLOAD_LEN, b"\0"))


@given(ips, st.integers(1, 0xFFFF), st.binary(max_size=MAX_REQUEST))
def test_dht_rpc_round_trips_inside_a_relay_message(host: str, port: int, request: bytes) -> None:
    rpc = DhtRpc(host, port, request)
    body = rpc.encode()
    assert len(body) <= RELAY_BODY_MAX
    msg = RelayMessage.decode_plain(RelayMessage(RelayCommand.DHT_RPC, 7, body).encode_plain())
    assert DhtRpc.decode(msg.body) == rpc


def test_dht_rpc_refuses_names_and_port_zero() -> None:
    with pytest.raises(ValueError):
        DhtRpc("example.org", 4000, b"").encode()
    with pytest.raises(ValueError):
        DhtRpc("10.0.0.1", 0, b"").encode()
    hostname = bytes([1, 11]) + b"example.org" + (4000).to_bytes(2, "big") + b"\0\0"
    with pytest.raises(RemoteProtocolError):
        DhtRpc.decode(hostname)


@settings(max_examples=500)
@given(st.binary(max_size=RELAY_BODY_MAX))
def test_arbitrary_bodies_raise_only_remote_errors(body: bytes) -> None:
    for codec in (DhtRpc, DhtAnswer):
        with contextlib.suppress(RemoteProtocolError):
            codec.decode(body)


@given(st.binary(max_size=MAX_ANSWER), st.integers(1, 0xFFFF))
def test_answers_round_trip_in_chunks(answer: bytes, rid: int) -> None:
    assembler = AnswerAssembler()
    bodies = answer_bodies(DhtStatus.OK, answer)
    assert all(len(b) <= RELAY_BODY_MAX for b in bodies)
    out = [assembler.feed(rid, DhtAnswer.decode(b)) for b in bodies]
    assert out[-1] == (DhtStatus.OK, answer) and all(o is None for o in out[:-1])


def test_error_answers_carry_no_data_and_sizes_are_bounded() -> None:
    for status in (DhtStatus.TIMEOUT, DhtStatus.REFUSED, DhtStatus.RATE_LIMITED):
        (body,) = answer_bodies(status)
        assert AnswerAssembler().feed(1, DhtAnswer.decode(body)) == (status, b"")
    with pytest.raises(ValueError):
        answer_bodies(DhtStatus.OK, bytes(MAX_ANSWER + 1))
    assembler = AnswerAssembler()
    chunk = DhtAnswer(DhtStatus.OK, True, bytes(CHUNK_MAX))
    with pytest.raises(RemoteProtocolError, match="too long"):
        for _ in range(MAX_ANSWER // CHUNK_MAX + 2):
            assembler.feed(3, chunk)


def test_an_answer_that_is_not_ok_carries_no_chunk() -> None:
    """docs/protocol.md §15.4: TIMEOUT, REFUSED, RATE_LIMITED have "no chunk, no more" (as DIR_DATA)."""
    for status in (DhtStatus.TIMEOUT, DhtStatus.REFUSED, DhtStatus.RATE_LIMITED):
        assert DhtAnswer.decode(bytes([status, 0, 0, 0])) == DhtAnswer(status)
        for body in (bytes([status, 0, 0, 1]) + b"x", bytes([status, 1, 0, 0])):
            with pytest.raises(RemoteProtocolError, match="malformed DHT_ANSWER"):
                DhtAnswer.decode(body)
