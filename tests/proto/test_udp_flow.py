"""proto.udp_flow and the UDP half of the circuit machines (CONNECT_UDP, CONNECTED_UDP, DATAGRAM),
driven by hand through a real 3-hop chain of state machines (tests/helpers/circuit_harness)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.errors import LocalProtocolError, RemoteProtocolError
from onionmesh.proto.events import DatagramReceived, StreamConnected, UdpConnectRequested
from onionmesh.proto.flow import CWND_INIT
from onionmesh.proto.udp_flow import DatagramQueue, DatagramRate, FlowTable
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage
from onionmesh.wire.udp_msg import DATAGRAM_MAX
from tests.helpers.circuit_harness import built_chain


# --- the queue, the rate, the table ---------------------------------------------------------------
@given(st.lists(st.one_of(st.binary(min_size=1, max_size=3000), st.none()), max_size=300))
def test_queue_never_passes_its_caps_and_counts_every_drop(ops: list[bytes | None]) -> None:
    q = DatagramQueue(max_items=16, max_bytes=8000)
    pushed = accepted = popped = 0
    for op in ops:
        if op is None:
            if q:
                q.pop()
                popped += 1
        else:
            pushed += 1
            accepted += q.push(op)
        assert len(q) <= 16 and q.bytes <= 8000
    assert accepted + q.dropped == pushed and len(q) == accepted - popped


@given(st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200))
def test_rate_allows_at_most_burst_plus_rate_times_time(gaps: list[float]) -> None:
    rate = DatagramRate(rate=100, burst=10, now=0.0)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += rate.allow(now)
    assert allowed <= 10 + 100 * now + 1e-6
    assert allowed + rate.dropped == len(gaps)


def test_flow_table_idle_expiry_and_cap() -> None:
    table = FlowTable(idle_timeout=10.0, max_flows=2)
    table.add(("a", 1), 1, now=0.0)
    table.add(("b", 2), 2, now=5.0)
    assert table.full()
    with pytest.raises(ValueError):
        table.add(("c", 3), 3, now=5.0)
    assert [f.stream_id for f in table.expired(now=12.0)] == [1]
    assert table.get(("a", 1)) is None and table.by_id(2) is not None and not table.full()


# --- the circuit machines -------------------------------------------------------------------------
def _open_flow():
    chain = built_chain(3)
    sid = chain.client.connect_udp("dns.example", 53)
    chain.pump()
    (event,) = [e for e in chain.take_exit_events() if isinstance(e, UdpConnectRequested)]
    assert (event.stream_id, event.begin.host, event.begin.port) == (sid, "dns.example", 53)
    chain.exit.connected_udp(sid, "192.0.2.53")
    chain.pump()
    assert StreamConnected(sid, "192.0.2.53") in chain.take_client_events()
    return chain, sid


def test_datagrams_cross_the_circuit_both_ways_one_per_message() -> None:
    chain, sid = _open_flow()
    for payload in (b"q" * 1200, b"x", b"m" * DATAGRAM_MAX):
        assert chain.client.send_datagram(sid, payload)
        chain.pump()
        assert DatagramReceived(sid, payload) in chain.take_exit_events()
        assert chain.exit.send_datagram(sid, payload[::-1])
        chain.pump()
        assert DatagramReceived(sid, payload[::-1]) in chain.take_client_events()
    with pytest.raises(LocalProtocolError):
        chain.client.send_datagram(sid, b"y" * (DATAGRAM_MAX + 1))


def test_datagrams_count_in_the_circuit_window_and_are_refused_not_queued_past_it() -> None:
    """With no SENDME coming back (nothing pumped), exactly the circuit window goes out; then
    send_datagram says False and nothing is queued in the machine (the caller drops or queues)."""
    chain, sid = _open_flow()
    sent = 0
    while chain.client.send_datagram(sid, b"d" * 1200):
        sent += 1
        assert sent <= CWND_INIT
    assert sent == CWND_INIT
    assert len(chain.client.cells_to_send()) == CWND_INIT
    chain2, sid2 = _open_flow()
    for _ in range(10 * CWND_INIT):  # with the SENDMEs flowing, a flood never stalls
        assert chain2.client.send_datagram(sid2, b"d" * 1200)
        chain2.pump()


def test_datagram_only_on_udp_flows_and_data_never_on_them() -> None:
    chain, sid = _open_flow()
    tcp = chain.client.begin("example.com", 80)
    chain.pump()
    assert chain.client.send_datagram(tcp, b"x") is False  # not a UDP flow
    chain.client._seal(RelayMessage(RelayCommand.DATA, sid, b"data on a UDP flow"))
    chain.pump()
    assert not [e for e in chain.take_exit_events() if getattr(e, "stream_id", None) == sid]


def test_connected_for_a_udp_flow_is_a_violation() -> None:
    chain = built_chain(3)
    sid = chain.client.connect_udp("192.0.2.1", 53)
    chain.pump()
    chain.exit.streams[sid].udp = False  # an exit that answers CONNECTED, not CONNECTED_UDP
    chain.exit.connected(sid, "192.0.2.1")
    with pytest.raises(RemoteProtocolError):
        chain.pump()


def test_empty_datagram_from_a_peer_is_a_violation() -> None:
    chain, sid = _open_flow()
    chain.exit._seal(RelayMessage(RelayCommand.DATAGRAM, sid, b""))
    with pytest.raises(RemoteProtocolError):
        chain.pump()
