"""Optimistic data (Tor proposal 181, docs/protocol.md §7.6) in the circuit state machines, and
the early SOCKS success's rule (proto.early_reply), driven by hand: no sockets, no clocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.errors import LocalProtocolError, RemoteProtocolError
from onionmesh.proto.early_reply import RecentTargets
from onionmesh.proto.endpoint import OPTIMISTIC_CELLS
from onionmesh.proto.events import StreamConnected, StreamDataReceived, StreamEnded
from onionmesh.proto.flow import STREAM_WINDOW
from onionmesh.wire.relay_msg import RELAY_BODY_MAX, Connected, EndReason, RelayCommand, RelayMessage
from tests.helpers.circuit_harness import Chain, built_chain


def held_chain(n_hops: int = 3) -> Chain:
    """A built circuit whose exit answers no BEGIN by itself (the test calls connected())."""
    chain = built_chain(n_hops, exit_policy=lambda e: None)
    chain.client.peer_optimistic = True
    chain.take_client_events()
    return chain


def test_data_behind_begin_reaches_the_destination_after_connected_in_order() -> None:
    chain = held_chain()
    sid = chain.client.begin("example.com", 443, optimistic=True)
    assert chain.client.can_send(sid)  # before CONNECTED
    chain.client.send_data(sid, b"GET / HTTP/1.1\r\n")
    chain.client.send_data(sid, b"Host: example.com\r\n\r\n")
    chain.pump()
    events = chain.take_exit_events()
    assert not [e for e in events if isinstance(e, StreamDataReceived)]  # held, not delivered
    assert chain.exit.streams[sid].held == [b"GET / HTTP/1.1\r\n", b"Host: example.com\r\n\r\n"]
    assert chain.exit.connected(sid, "192.0.2.1") == [b"GET / HTTP/1.1\r\n", b"Host: example.com\r\n\r\n"]
    assert chain.exit.streams[sid].held == []
    chain.pump()
    assert chain.take_client_events() == [StreamConnected(sid, "192.0.2.1")]
    # after CONNECTED the stream is an ordinary one, both ways
    chain.client.send_data(sid, b"more")
    chain.exit.send_data(sid, b"HTTP/1.1 200 OK\r\n")
    chain.pump()
    assert [e.data for e in chain.take_exit_events() if isinstance(e, StreamDataReceived)] == [b"more"]
    assert chain.take_client_events() == [StreamDataReceived(sid, b"HTTP/1.1 200 OK\r\n")]


def test_the_client_sends_at_most_optimistic_cells_before_connected() -> None:
    chain = held_chain(1)
    sid = chain.client.begin("example.com", 443, optimistic=True)
    for _ in range(OPTIMISTIC_CELLS):
        assert chain.client.can_send(sid)
        chain.client.send_data(sid, b"x" * RELAY_BODY_MAX)
    assert not chain.client.can_send(sid)
    with pytest.raises(LocalProtocolError):
        chain.client.send_data(sid, b"one too many")
    chain.pump()
    assert len(chain.exit.connected(sid, None)) == OPTIMISTIC_CELLS
    chain.pump()
    assert chain.client.can_send(sid)  # CONNECTED opened the stream


def test_an_ordinary_begin_still_waits_for_connected() -> None:
    chain = held_chain(1)
    sid = chain.client.begin("example.com", 443)
    assert not chain.client.can_send(sid)


def test_no_optimistic_begin_toward_an_exit_that_would_drop_the_data() -> None:
    chain = built_chain(1, exit_policy=lambda e: None)
    assert not chain.client.peer_optimistic  # learnt from the exit's descriptor (relay=3), not set here
    with pytest.raises(LocalProtocolError, match="optimistic"):
        chain.client.begin("example.com", 443, optimistic=True)
    chain.client.peer_optimistic = True
    with pytest.raises(LocalProtocolError, match="optimistic"):  # an onion service's BEGIN: never
        chain.client.begin(None, 80, optimistic=True)


def test_more_than_optimistic_cells_before_connected_is_a_protocol_violation() -> None:
    chain = held_chain(1)
    sid = chain.client.begin("example.com", 443, optimistic=True)
    chain.client.streams[sid].early_left = OPTIMISTIC_CELLS + 1  # a client that ignores the limit
    for _ in range(OPTIMISTIC_CELLS + 1):
        chain.client.send_data(sid, b"x" * 100)
    with pytest.raises(RemoteProtocolError, match="before CONNECTED"):
        chain.pump()


def test_held_data_is_dropped_when_the_connect_fails() -> None:
    chain = held_chain(2)
    sid = chain.client.begin("example.com", 443, optimistic=True)
    chain.client.send_data(sid, b"never delivered")
    chain.pump()
    chain.exit.end_stream(sid, EndReason.CONNECTREFUSED)
    assert chain.exit.connected(sid, "192.0.2.1") == []  # gone with the stream
    chain.pump()
    assert chain.take_client_events() == [StreamEnded(sid, EndReason.CONNECTREFUSED)]
    assert not [e for e in chain.take_exit_events() if isinstance(e, StreamDataReceived)]


def test_held_data_counts_in_the_stream_window_and_is_credited_only_once_consumed() -> None:
    chain = held_chain(1)
    sid = chain.client.begin("example.com", 443, optimistic=True)
    chain.client.send_data(sid, b"a")
    chain.pump()
    assert chain.exit.streams[sid].flow.deliver == STREAM_WINDOW - 1
    chain.exit.connected(sid, None)
    chain.pump()
    sendmes = [m for m in chain.exit_observed.messages if m.command is RelayCommand.SENDME and m.stream_id]
    assert sendmes == []  # nothing consumed yet: no stream credit back


def test_a_client_holds_no_data_on_a_connecting_stream() -> None:
    """The client side holds nothing: DATA before CONNECTED toward a client is dropped, as before."""
    chain = held_chain(1)
    sid = chain.client.begin("example.com", 443, optimistic=True)
    chain.pump()
    chain.exit.streams[sid].state = chain.exit.streams[sid].state.OPEN  # a confused exit
    chain.exit.send_data(sid, b"too early")
    chain.pump()
    assert chain.take_client_events() == []


# --------------------------------------------------------------------------- proto.early_reply


def test_recent_targets_allow_only_what_this_circuit_connected_to_lately() -> None:
    recent = RecentTargets(max_age=600.0, max_targets=2)
    assert not recent.fresh("example.com", 443, 0.0)
    recent.succeeded("Example.COM", 443, 10.0)
    assert recent.fresh("example.com", 443, 20.0)
    assert not recent.fresh("example.com", 80, 20.0)  # another port
    assert recent.fresh("example.com", 443, 610.0)
    assert not recent.fresh("example.com", 443, 610.5)  # too old: forgotten
    assert len(recent) == 0
    recent.succeeded("a.example", 443, 0.0)
    recent.failed("a.example", 443)  # a connect failed there: the next request waits
    assert not recent.fresh("a.example", 443, 1.0)


def test_recent_targets_clock_going_backwards_is_not_fresh() -> None:
    recent = RecentTargets()
    recent.succeeded("a.example", 443, 100.0)
    assert not recent.fresh("a.example", 443, 50.0)


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 3)), max_size=200))
def test_recent_targets_stay_bounded_and_keep_the_latest(targets: list[tuple[str, int]]) -> None:
    recent = RecentTargets(max_targets=5)
    for t, (host, port) in enumerate(targets):
        recent.succeeded(host, port, float(t))
        assert len(recent) <= 5
        assert recent.fresh(host, port, float(t))


def test_connected_crossing_the_clients_end_is_dropped_not_a_violation() -> None:
    """An application that closes its socket after an early success, before CONNECTED, makes the
    client END a connecting stream; the exit's CONNECTED may already be on its way.  It must
    not destroy the circuit (and every other stream on it); a CONNECTED for a stream the client
    never began still does."""
    chain = held_chain(3)
    other = chain.client.begin("other.example", 443)
    sid = chain.client.begin("example.com", 443, optimistic=True)
    chain.client.send_data(sid, b"GET /")
    chain.pump()
    chain.exit.connected(other, None)
    chain.exit.connected(sid, "192.0.2.1")  # in flight ...
    chain.client.end_stream(sid, EndReason.DONE)  # ... while the client ends the stream
    chain.pump()
    assert chain.take_client_events() == [StreamConnected(other, None)]
    assert chain.client.can_send(other)
    chain.exit._seal(RelayMessage(RelayCommand.CONNECTED, 999, Connected(None, 0).encode()))
    with pytest.raises(RemoteProtocolError, match="CONNECTED"):
        chain.pump()
