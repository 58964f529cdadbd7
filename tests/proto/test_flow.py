"""Unit tests for onionmesh.proto.flow: circuit windows with authenticated SENDMEs, stream windows."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.errors import RemoteProtocolError
from onionmesh.proto.flow import (
    CIRC_INCREMENT,
    CIRC_WINDOW,
    STREAM_INCREMENT,
    STREAM_WINDOW,
    CircuitFlow,
    StreamFlow,
)
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, SENDME_NONCE_LEN


def digest(i: int) -> bytes:
    return i.to_bytes(16, "big")


def test_constants() -> None:
    assert (CIRC_WINDOW, CIRC_INCREMENT, STREAM_WINDOW, STREAM_INCREMENT) == (1000, 100, 500, 50)
    assert CIRC_WINDOW % CIRC_INCREMENT == 0
    assert STREAM_WINDOW % STREAM_INCREMENT == 0


# --------------------------------------------------------------------------- CircuitFlow: sending


def test_circuit_package_window() -> None:
    flow = CircuitFlow()
    assert (flow.package, flow.deliver) == (CIRC_WINDOW, CIRC_WINDOW)
    for i in range(1, CIRC_WINDOW + 1):
        assert flow.can_send()
        flow.on_data_sent(digest(i))
    assert flow.package == 0
    assert not flow.can_send()
    # digests of cells 100, 200, ... are expected back, in order
    for k in range(1, CIRC_WINDOW // CIRC_INCREMENT + 1):
        flow.on_sendme(digest(k * CIRC_INCREMENT))
        assert flow.package == k * CIRC_INCREMENT
        assert flow.can_send()
    assert flow.package == CIRC_WINDOW


def test_circuit_sendme_needs_the_right_digest() -> None:
    flow = CircuitFlow()
    for i in range(1, 2 * CIRC_INCREMENT + 1):
        flow.on_data_sent(digest(i))
    with pytest.raises(RemoteProtocolError, match="does not authenticate"):
        flow.on_sendme(digest(CIRC_INCREMENT + 1))
    assert flow.package == CIRC_WINDOW - 2 * CIRC_INCREMENT  # no credit for a forgery


def test_circuit_sendmes_are_checked_in_order() -> None:
    flow = CircuitFlow()
    for i in range(1, 2 * CIRC_INCREMENT + 1):
        flow.on_data_sent(digest(i))
    with pytest.raises(RemoteProtocolError):
        flow.on_sendme(digest(2 * CIRC_INCREMENT))  # the second one first


def test_circuit_sendme_before_100_cells_is_unexpected() -> None:
    flow = CircuitFlow()
    with pytest.raises(RemoteProtocolError, match="unexpected circuit SENDME"):
        flow.on_sendme(b"")
    for i in range(1, CIRC_INCREMENT):
        flow.on_data_sent(digest(i))
    with pytest.raises(RemoteProtocolError, match="unexpected"):
        flow.on_sendme(digest(CIRC_INCREMENT - 1))


def test_circuit_sendme_cannot_be_replayed() -> None:
    flow = CircuitFlow()
    for i in range(1, CIRC_INCREMENT + 1):
        flow.on_data_sent(digest(i))
    flow.on_sendme(digest(CIRC_INCREMENT))
    with pytest.raises(RemoteProtocolError):
        flow.on_sendme(digest(CIRC_INCREMENT))
    assert flow.package == CIRC_WINDOW


@pytest.mark.parametrize("bad", [b"", b"\x00" * 15, b"\x00" * 17, b"\x00" * 32])
def test_circuit_sendme_digest_of_the_wrong_length(bad: bytes) -> None:
    flow = CircuitFlow()
    for i in range(1, CIRC_INCREMENT + 1):
        flow.on_data_sent(bytes(16) if i == CIRC_INCREMENT else digest(i))
    with pytest.raises(RemoteProtocolError):
        flow.on_sendme(bad)


# --------------------------------------------------------------------------- CircuitFlow: receiving


def test_circuit_deliver_window_asks_for_a_sendme_every_100_cells() -> None:
    flow = CircuitFlow()
    due = []
    for i in range(1, 1001):
        out = flow.on_data_received(digest(i))
        if out is not None:
            due.append((i, out))
        assert CIRC_WINDOW - CIRC_INCREMENT < flow.deliver <= CIRC_WINDOW
    assert due == [(k, digest(k)) for k in range(100, 1001, 100)]
    assert flow.deliver == CIRC_WINDOW


def test_circuit_deliver_window_overflow() -> None:
    flow = CircuitFlow()
    flow.deliver = 0  # a window already used up (the state a stricter receiver could reach)
    with pytest.raises(RemoteProtocolError, match="exceeded the circuit window"):
        flow.on_data_received(digest(1))


# --------------------------------------------------------------------------- StreamFlow


def test_stream_package_window() -> None:
    flow = StreamFlow()
    assert (flow.package, flow.deliver) == (STREAM_WINDOW, STREAM_WINDOW)
    flow.package = 0
    assert not flow.can_send()
    for k in range(1, STREAM_WINDOW // STREAM_INCREMENT + 1):
        flow.on_sendme()
        assert flow.package == k * STREAM_INCREMENT
    assert flow.can_send()


def test_stream_sendme_beyond_the_window() -> None:
    flow = StreamFlow()
    with pytest.raises(RemoteProtocolError, match="beyond the window"):
        flow.on_sendme()
    flow = StreamFlow()
    flow.package -= STREAM_INCREMENT - 1
    with pytest.raises(RemoteProtocolError):
        flow.on_sendme()


def test_stream_deliver_window_overflow() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_WINDOW):
        flow.on_data_received()
    assert flow.deliver == 0
    with pytest.raises(RemoteProtocolError, match="exceeded the stream window"):
        flow.on_data_received()


def test_stream_sendme_waits_until_the_application_catches_up() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_INCREMENT):
        flow.on_data_received()
    assert flow.deliver == STREAM_WINDOW - STREAM_INCREMENT
    assert flow.on_data_consumed(STREAM_INCREMENT - 10) is False  # 10 unconsumed: wait
    assert flow.on_data_consumed(1) is True  # 9 unconsumed: give credit
    assert flow.deliver == STREAM_WINDOW
    assert flow.on_data_consumed(0) is False


def test_stream_sendme_not_due_before_50_cells() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_INCREMENT - 1):
        flow.on_data_received()
        assert flow.on_data_consumed(1) is False
    flow.on_data_received()
    assert flow.on_data_consumed(1) is True


def test_stream_full_window_returns_in_increments() -> None:
    flow = StreamFlow()
    for _ in range(STREAM_WINDOW):
        flow.on_data_received()
    sendmes = 0
    cells = STREAM_WINDOW
    while flow.on_data_consumed(cells):
        cells = 0
        sendmes += 1
    assert sendmes == STREAM_WINDOW // STREAM_INCREMENT
    assert flow.deliver == STREAM_WINDOW


def test_stream_consumption_never_goes_negative() -> None:
    flow = StreamFlow()
    assert flow.on_data_consumed(1000) is False
    assert flow._unacked == 0


# --------------------------------------------------------------------------- two ends together


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["send", "deliver", "sendme"]), max_size=3000), st.integers(0, 2**32))
def test_circuit_flow_between_two_ends(ops: list[str], salt: int) -> None:
    """A sender that respects its window never overruns an honest receiver, and every SENDME verifies."""
    sender, receiver = CircuitFlow(), CircuitFlow()
    data: deque[bytes] = deque()
    sendmes: deque[bytes] = deque()
    n = 0
    for op in ops:
        if op == "send" and sender.can_send():
            n += 1
            d = digest(n ^ salt)
            sender.on_data_sent(d)
            data.append(d)
        elif op == "deliver" and data:
            back = receiver.on_data_received(data.popleft())
            if back is not None:
                sendmes.append(back)
        elif op == "sendme" and sendmes:
            sender.on_sendme(sendmes.popleft())
        assert sender.package >= 0
        # conservation: credit held + cells in flight + credit in flight == the receiver's window
        assert sender.package + len(data) + CIRC_INCREMENT * len(sendmes) == receiver.deliver


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["send", "deliver", "consume", "sendme"]), max_size=3000))
def test_stream_flow_between_two_ends(ops: list[str]) -> None:
    sender, receiver = StreamFlow(), StreamFlow()
    in_flight = 0
    unconsumed = 0
    sendmes = 0
    for op in ops:
        if op == "send" and sender.can_send():
            sender.package -= 1  # what CircuitEndpoint.send_data does
            in_flight += 1
        elif op == "deliver" and in_flight:
            in_flight -= 1
            receiver.on_data_received()
            unconsumed += 1
        elif op == "consume" and unconsumed:
            take = min(unconsumed, 7)
            unconsumed -= take
            cells = take
            while receiver.on_data_consumed(cells):
                cells = 0
                sendmes += 1
        elif op == "sendme" and sendmes:
            sendmes -= 1
            sender.on_sendme()
        assert 0 <= sender.package <= STREAM_WINDOW
        assert 0 <= receiver.deliver <= STREAM_WINDOW
        assert sender.package + in_flight + STREAM_INCREMENT * sendmes == receiver.deliver


def test_every_hundredth_data_cell_carries_an_unpredictable_nonce() -> None:
    """The DATA cells whose digest a SENDME echoes carry 16 random bytes the receiver cannot guess."""
    from tests.proto.circuit_harness import built_chain

    chain = built_chain(3)
    sid = chain.client.begin("example.org", 80)
    chain.pump()
    chain.take_client_events()
    sizes = []
    for _ in range(CIRC_INCREMENT):
        sizes.append(chain.client.send_data(sid, b"x" * RELAY_BODY_MAX))
        chain.pump()
    assert sizes[:-1] == [RELAY_BODY_MAX] * (CIRC_INCREMENT - 1)
    assert sizes[-1] == RELAY_BODY_MAX - SENDME_NONCE_LEN
