"""Tests for onionmesh.proto.client_circuit / relay_circuit / endpoint, wired together in memory.

Hop numbering in test names is 1-based (hop 1 = the guard, next to the client); list indices
into `chain.hops` / `chain.observed` are 0-based.
"""

from __future__ import annotations

import pytest

from onionmesh.crypto import ntor
from onionmesh.errors import LocalProtocolError, RemoteProtocolError
from onionmesh.proto.client_circuit import MAX_HOPS, CircuitState
from onionmesh.proto.endpoint import MAX_STREAMS_PER_CIRCUIT
from onionmesh.proto.events import (
    BeginRequested,
    CircuitExtended,
    ExtendRequested,
    ResolveRequested,
    SendWindowOpened,
    StreamConnected,
    StreamDataReceived,
    StreamEnded,
    StreamResolved,
)
from onionmesh.proto.flow import (
    CWND_INIT,
    SENDME_INC,
    STREAM_INCREMENT,
    STREAM_WINDOW,
    STREAM_WINDOW_MAX,
    encode_stream_credit,
)
from onionmesh.rng import SeededRng
from onionmesh.wire.cell import CELL_PAYLOAD_LEN, MAX_RELAY_EARLY, Cell, CellCommand, created_payload
from onionmesh.wire.relay_msg import (
    RELAY_BODY_MAX,
    Begin,
    BeginFlags,
    Connected,
    EndReason,
    Extend,
    RelayCommand,
    RelayMessage,
    ResolvedType,
    Sendme,
)
from tests.helpers.circuit_harness import (
    Chain,
    ExitAnswer,
    built_chain,
    make_relays,
)

SECRET_HOST = "very-secret-destination.example"


def data_events(events: list[object], sid: int | None = None) -> list[bytes]:
    return [
        e.data for e in events if isinstance(e, StreamDataReceived) and (sid is None or e.stream_id == sid)
    ]


def open_stream(chain: Chain, host: str = "example.com", port: int = 443) -> int:
    sid = chain.client.begin(host, port)
    chain.pump()
    events = chain.take_client_events()
    assert any(isinstance(e, StreamConnected) and e.stream_id == sid for e in events), events
    return sid


def flip(payload: bytes, byte: int = 100, mask: int = 0x01) -> bytes:
    out = bytearray(payload)
    out[byte] ^= mask
    return bytes(out)


# --------------------------------------------------------------------------- building


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_build(n: int) -> None:
    relays = make_relays(n)
    chain = Chain(relays)
    chain.build(relays)
    assert chain.take_client_events() == [CircuitExtended(i) for i in range(1, n + 1)]
    assert chain.client.state is CircuitState.OPEN
    assert [h.identity_pk for h in chain.client.hops] == [r.identity.public for r in relays]
    assert [h.has_next for h in chain.hops] == [True] * (n - 1) + [False]
    assert not any(h.extending for h in chain.hops)
    assert chain.client._relay_early_sent == n - 1
    for i, obs in enumerate(chain.observed[:-1]):
        assert [m.command for m in obs.messages] == [RelayCommand.EXTEND]
        assert [type(e) for e in obs.events] == [ExtendRequested]
        assert obs.events[0].extend.identity_pk == relays[i + 1].identity.public
        assert obs.forward_in[-1][0] is CellCommand.RELAY_EARLY
    assert chain.observed[-1].messages == []


def test_ninth_hop_is_refused() -> None:
    relays = make_relays(MAX_HOPS + 1)
    chain = Chain(relays)
    chain.build(relays[:MAX_HOPS])
    assert len(chain.client.hops) == MAX_HOPS == 8
    with pytest.raises(LocalProtocolError, match="maximum length"):
        chain.client.extend(relays[8].identity.public, relays[8].onion.public, (relays[8].address,))
    assert chain.client.cells_to_send() == []
    assert chain.client.state is CircuitState.OPEN
    # the 8-hop circuit still carries streams
    sid = open_stream(chain)
    chain.client.send_data(sid, b"through eight hops")
    chain.pump()
    assert data_events(chain.take_exit_events(), sid) == [b"through eight hops"]


def test_local_misuse_while_building() -> None:
    relays = make_relays(3)
    chain = Chain(relays)
    with pytest.raises(LocalProtocolError):
        chain.client.begin("example.com", 80)
    with pytest.raises(LocalProtocolError):
        chain.client.extend(relays[1].identity.public, relays[1].onion.public, (relays[1].address,))
    chain.client.create(relays[0].identity.public, relays[0].onion.public)
    with pytest.raises(LocalProtocolError):
        chain.client.create(relays[0].identity.public, relays[0].onion.public)
    chain.pump()
    chain.client.extend(relays[1].identity.public, relays[1].onion.public, (relays[1].address,))
    with pytest.raises(LocalProtocolError):  # one extension at a time
        chain.client.extend(relays[2].identity.public, relays[2].onion.public, (relays[2].address,))
    with pytest.raises(LocalProtocolError):
        chain.client.resolve("example.com")
    chain.pump()
    assert len(chain.client.hops) == 2


def test_created_with_a_bad_handshake_is_refused() -> None:
    relays = make_relays(2)
    chain = Chain(relays)
    chain.client.create(relays[0].identity.public, relays[0].onion.public)
    chain.client.cells_to_send()
    with pytest.raises(RemoteProtocolError):
        chain.client.handle_cell(
            Cell(chain.client.circ_id, CellCommand.CREATED, created_payload(SeededRng(1).random_bytes(64)))
        )


def test_unexpected_cells_at_the_client() -> None:
    chain = built_chain(2)
    with pytest.raises(RemoteProtocolError, match="unexpected CREATED"):
        chain.client.handle_cell(Cell(chain.client.circ_id, CellCommand.CREATED, created_payload(bytes(64))))
    with pytest.raises(RemoteProtocolError):
        chain.client.handle_cell(Cell(chain.client.circ_id, CellCommand.RELAY_EARLY, bytes(CELL_PAYLOAD_LEN)))
    with pytest.raises(RemoteProtocolError, match="recognized by no hop"):
        chain.client.handle_cell(Cell(chain.client.circ_id, CellCommand.RELAY, bytes(CELL_PAYLOAD_LEN)))


def test_spontaneous_extended_is_refused() -> None:
    chain = built_chain(2)
    chain.exit.extended(bytes(64))
    with pytest.raises(RemoteProtocolError, match="unexpected EXTENDED"):
        chain.pump()


def test_failed_extension_surfaces_at_the_client() -> None:
    """The last hop answers EXTEND with TRUNCATED: the client cannot use the circuit any more."""
    relays = make_relays(3)
    chain = Chain(relays)
    chain.build(relays[:2])
    chain.client.extend(relays[2].identity.public, relays[2].onion.public, (relays[2].address,))
    for cell in chain.client.cells_to_send():
        chain.hops[0].handle_forward(cell.command, cell.payload)
    for command, payload in chain.hops[0].take_forward():
        chain.hops[1].handle_forward(command, payload)
    assert [type(e) for e in chain.hops[1].take_events()] == [ExtendRequested]
    chain.hops[1].extend_failed(6)
    with pytest.raises(RemoteProtocolError, match="TRUNCATED"):
        chain.pump()


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("n", [1, 3, 8])
def test_stream_lifecycle(n: int) -> None:
    chain = built_chain(n)
    chain.take_client_events()
    sid = chain.client.begin(SECRET_HOST, 443)
    assert not chain.client.can_send(sid)  # still connecting
    with pytest.raises(LocalProtocolError):
        chain.client.send_data(sid, b"too early")
    chain.pump()
    assert chain.take_exit_events() == [BeginRequested(sid, Begin(SECRET_HOST, 443, BeginFlags.IPV6_OK))]
    assert chain.take_client_events() == [StreamConnected(sid, "192.0.2.80")]
    assert chain.client.can_send(sid)

    chain.client.send_data(sid, b"GET / HTTP/1.0\r\n\r\n")
    chain.client.send_data(sid, b"x" * RELAY_BODY_MAX)
    chain.pump()
    assert data_events(chain.take_exit_events(), sid) == [b"GET / HTTP/1.0\r\n\r\n", b"x" * RELAY_BODY_MAX]
    chain.exit.send_data(sid, b"HTTP/1.0 200 OK\r\n")
    chain.exit.send_data(sid, b"body")
    chain.pump()
    assert chain.take_client_events() == [
        StreamDataReceived(sid, b"HTTP/1.0 200 OK\r\n"),
        StreamDataReceived(sid, b"body"),
    ]
    assert chain.client.streams[sid].bytes_out == 18 + RELAY_BODY_MAX
    assert chain.client.streams[sid].bytes_in == 21

    chain.exit.end_stream(sid, EndReason.DONE)
    chain.pump()
    assert chain.take_client_events() == [StreamEnded(sid, EndReason.DONE)]
    assert sid not in chain.client.streams and sid not in chain.exit.streams
    assert not chain.client.can_send(sid)


def test_client_ends_a_stream() -> None:
    chain = built_chain(3)
    sid = open_stream(chain)
    chain.take_exit_events()
    chain.client.end_stream(sid, EndReason.DONE)
    chain.client.end_stream(sid, EndReason.DONE)  # twice is harmless
    chain.pump()
    assert chain.take_exit_events() == [StreamEnded(sid, EndReason.DONE)]
    assert [m.command for m in chain.exit_observed.messages].count(RelayCommand.END) == 1
    assert sid not in chain.exit.streams


def test_data_for_a_closed_stream_is_dropped() -> None:
    chain = built_chain(2)
    sid = open_stream(chain)
    chain.client.end_stream(sid)
    chain.exit.send_data(sid, b"late")  # crosses the END on the wire
    chain.pump()
    assert data_events(chain.take_client_events()) == []


def test_send_data_size_limits() -> None:
    chain = built_chain(1)
    sid = open_stream(chain)
    with pytest.raises(LocalProtocolError):
        chain.client.send_data(sid, b"")
    with pytest.raises(LocalProtocolError):
        chain.client.send_data(sid, b"x" * (RELAY_BODY_MAX + 1))
    with pytest.raises(LocalProtocolError):
        chain.client.send_data(sid + 1, b"no such stream")


def test_many_streams_multiplexed() -> None:
    chain = built_chain(3)
    sids = [chain.client.begin(f"host{i}.example", 1000 + i) for i in range(40)]
    assert len(set(sids)) == 40
    chain.pump()
    connected = [e.stream_id for e in chain.take_client_events() if isinstance(e, StreamConnected)]
    assert sorted(connected) == sorted(sids)
    begins = {e.stream_id: e.begin for e in chain.take_exit_events() if isinstance(e, BeginRequested)}
    assert {sid: (b.host, b.port) for sid, b in begins.items()} == {
        sid: (f"host{i}.example", 1000 + i) for i, sid in enumerate(sids)
    }
    for round_ in range(5):
        for i, sid in enumerate(reversed(sids)):
            chain.client.send_data(sid, b"c%d.%d;" % (sid, round_))
            chain.exit.send_data(sids[i], b"e%d.%d;" % (sids[i], round_))
        chain.pump()
    exit_events = chain.take_exit_events()
    client_events = chain.take_client_events()
    for sid in sids:
        assert b"".join(data_events(exit_events, sid)) == b"".join(b"c%d.%d;" % (sid, r) for r in range(5))
        assert b"".join(data_events(client_events, sid)) == b"".join(b"e%d.%d;" % (sid, r) for r in range(5))


def test_stream_ids_wrap_and_skip_ids_in_use() -> None:
    chain = built_chain(1)
    a, b = open_stream(chain), open_stream(chain)
    assert (a, b) == (1, 2)
    chain.client.end_stream(a)
    chain.pump()
    chain.client._next_stream_id = 0xFFFF
    assert open_stream(chain) == 0xFFFF  # the largest id; 0 is never a stream
    assert open_stream(chain) == 1  # freed by the END
    assert open_stream(chain) == 3  # 2 is still in use


def test_exit_refuses_by_policy() -> None:
    def policy(event: BeginRequested) -> ExitAnswer:
        if event.begin.port == 25:
            return ExitAnswer(refuse=EndReason.EXITPOLICY)
        return ExitAnswer(connect_address="2001:db8::80")

    chain = built_chain(3, exit_policy=policy)
    chain.take_client_events()
    smtp = chain.client.begin("mail.example", 25)
    web = chain.client.begin("www.example", 80)
    chain.pump()
    assert chain.take_client_events() == [
        StreamEnded(smtp, EndReason.EXITPOLICY),
        StreamConnected(web, "2001:db8::80"),
    ]
    assert smtp not in chain.client.streams
    assert not chain.client.can_send(smtp)
    assert chain.client.can_send(web)


def test_exit_answers_connected_only_once() -> None:
    chain = built_chain(1, exit_policy=lambda e: None)
    sid = chain.client.begin("example.com", 80)
    chain.pump()
    chain.exit.connected(sid, "192.0.2.1")
    chain.exit.connected(sid, "192.0.2.1")  # ignored: the stream is no longer connecting
    chain.pump()
    assert chain.take_client_events()[-1] == StreamConnected(sid, "192.0.2.1")
    # a forged second CONNECTED is a protocol error at the client
    chain.exit._seal(RelayMessage(RelayCommand.CONNECTED, sid, Connected("192.0.2.1").encode()))
    with pytest.raises(RemoteProtocolError, match="CONNECTED"):
        chain.pump()


def test_resolve() -> None:
    chain = built_chain(3)
    chain.take_client_events()
    sid = chain.client.resolve("names.example")
    chain.pump()
    assert chain.take_exit_events() == [ResolveRequested(sid, "names.example")]
    assert chain.take_client_events() == [
        StreamResolved(
            sid, ((ResolvedType.IPV4, "192.0.2.53", 300), (ResolvedType.IPV6, "2001:db8::53", 300))
        )
    ]
    assert sid not in chain.client.streams and sid not in chain.exit.streams


def test_resolve_refused() -> None:
    chain = built_chain(2, resolver=lambda e: EndReason.RESOLVEFAILED)
    chain.take_client_events()
    sid = chain.client.resolve("nxdomain.example")
    chain.pump()
    assert chain.take_client_events() == [StreamEnded(sid, EndReason.RESOLVEFAILED)]
    assert sid not in chain.client.streams
    assert sid not in chain.client._resolving


def test_unsolicited_resolved_is_refused() -> None:
    chain = built_chain(1, exit_policy=lambda e: None)
    sid = chain.client.begin("example.com", 80)
    chain.pump()
    chain.exit.resolved(sid, ((ResolvedType.IPV4, "192.0.2.1", 1),))  # a BEGIN, not a RESOLVE
    with pytest.raises(RemoteProtocolError, match="RESOLVED"):
        chain.pump()


def test_mark_closed() -> None:
    chain = built_chain(2)
    a, b = open_stream(chain), open_stream(chain)
    chain.client.mark_closed()
    assert chain.client.state is CircuitState.CLOSED
    assert sorted(chain.take_client_events(), key=lambda e: e.stream_id) == [
        StreamEnded(a, EndReason.DESTROY),
        StreamEnded(b, EndReason.DESTROY),
    ]
    chain.exit.send_data(a, b"after close")
    chain.pump()  # ignored by a closed circuit
    assert chain.take_client_events() == []


def test_exit_stream_limit_answers_resourcelimit() -> None:
    chain = built_chain(1)
    sids = [chain.client.begin(f"h{i}.example", 80) for i in range(MAX_STREAMS_PER_CIRCUIT)]
    chain.pump()
    assert len(chain.exit.streams) == MAX_STREAMS_PER_CIRCUIT
    chain.client.streams.pop(sids[0])  # forget one locally, so the client may ask for one more
    chain.take_client_events()
    extra = chain.client.begin("one-too-many.example", 80)
    chain.pump()
    assert chain.take_client_events() == [StreamEnded(extra, EndReason.RESOURCELIMIT)]


def test_client_stream_limit_is_a_local_error() -> None:
    chain = built_chain(1)
    for i in range(MAX_STREAMS_PER_CIRCUIT):
        chain.client.begin(f"h{i}.example", 80)
    with pytest.raises(LocalProtocolError):
        chain.client.begin("one-too-many.example", 80)


# --------------------------------------------------------------------------- flow control


def test_circuit_window_closes_after_exactly_cwnd_cells() -> None:
    """With no clock (no RTTs) congestion control keeps the window at CWND_INIT."""
    chain = built_chain(3)
    a, b, c = open_stream(chain), open_stream(chain), open_stream(chain)
    chain.take_exit_events()
    plan = [(a, 20), (b, 20), (c, CWND_INIT - 40)]
    sent = 0
    for sid, count in plan:
        for _ in range(count):
            assert chain.client.can_send(sid)
            chain.client.send_data(sid, b"%d" % sent)
            sent += 1
    assert sent == CWND_INIT == 64
    assert chain.client.flow.package == 0
    assert chain.client.streams[c].flow.package == STREAM_WINDOW - (
        CWND_INIT - 40
    )  # the stream could go on ...
    assert not any(chain.client.can_send(s) for s in (a, b, c))  # ... the circuit cannot
    with pytest.raises(LocalProtocolError):
        chain.client.send_data(c, b"one more")
    assert len(chain.client._out) == CWND_INIT

    chain.pump()  # deliver; the exit answers with one authenticated SENDME per SENDME_INC cells
    exit_events = chain.take_exit_events()
    assert len(data_events(exit_events)) == CWND_INIT
    client_events = chain.take_client_events()
    assert client_events == [SendWindowOpened(0)] * (CWND_INIT // SENDME_INC)
    assert chain.client.flow.package == CWND_INIT
    assert chain.client.can_send(c)
    assert [m.command for m in chain.exit_observed.messages].count(RelayCommand.DATA) == CWND_INIT


def test_exit_circuit_window_and_client_sendmes() -> None:
    chain = built_chain(2)
    sids = [open_stream(chain) for _ in range(3)]
    n = 0
    for sid in sids:
        while chain.exit.can_send(sid) and n < CWND_INIT:
            chain.exit.send_data(sid, b"d")
            n += 1
    assert n == CWND_INIT
    assert not any(chain.exit.can_send(s) for s in sids)
    chain.pump()
    assert len(data_events(chain.take_client_events())) == CWND_INIT
    assert chain.exit.flow.package == CWND_INIT
    assert chain.take_exit_events().count(SendWindowOpened(0)) == CWND_INIT // SENDME_INC


def test_long_transfer_with_prompt_acknowledgements() -> None:
    chain = built_chain(3)
    sids = [open_stream(chain) for _ in range(2)]
    chain.take_exit_events()
    total = 0
    for round_ in range(30):
        for sid in sids:
            for _ in range(25):
                chain.client.send_data(sid, b"%d-%d" % (sid, round_))
                total += 1
        chain.pump()
        for sid in sids:
            chain.exit.data_consumed(sid, 25)
        chain.pump()
    assert total == 1500 > CWND_INIT
    assert len(data_events(chain.take_exit_events())) == 1500
    assert all(chain.client.can_send(s) for s in sids)


def test_forged_circuit_sendme_digest() -> None:
    chain = built_chain(3)
    sid = open_stream(chain)
    for _ in range(SENDME_INC):
        chain.client.send_data(sid, b"x")
    # before the data arrives, the exit (or anyone who can make the client accept a cell from it)
    # claims to have received the 100th cell
    chain.exit._seal(RelayMessage(RelayCommand.SENDME, 0, Sendme(1, bytes(16)).encode()))
    with pytest.raises(RemoteProtocolError, match="does not authenticate"):
        chain.pump()


def test_unexpected_circuit_sendme() -> None:
    chain = built_chain(1)
    open_stream(chain)
    chain.exit._seal(RelayMessage(RelayCommand.SENDME, 0, Sendme(1, bytes(16)).encode()))
    with pytest.raises(RemoteProtocolError, match="unexpected circuit SENDME"):
        chain.pump()


def _spy_on_exit_seal(chain: Chain) -> list[RelayMessage]:
    sealed: list[RelayMessage] = []
    original = chain.exit._seal

    def spy(msg: RelayMessage) -> bytes:
        sealed.append(msg)
        return original(msg)

    chain.exit._seal = spy  # type: ignore[method-assign]
    return sealed


@pytest.mark.parametrize("outstanding", [False, True])
def test_replayed_circuit_sendme(outstanding: bool) -> None:
    chain = built_chain(2)
    sid = open_stream(chain)
    sealed = _spy_on_exit_seal(chain)
    for _ in range(SENDME_INC):
        chain.client.send_data(sid, b"x")
    chain.pump()
    (genuine,) = [m for m in sealed if m.command is RelayCommand.SENDME]
    assert len(Sendme.decode(genuine.body).digest) == 16
    assert chain.take_client_events() == [SendWindowOpened(0)]
    if outstanding:  # the client waits for the SENDME of cell 200: the old digest is not it
        for _ in range(SENDME_INC):
            chain.client.send_data(sid, b"y")
    chain.exit._seal(genuine)  # the same SENDME once more, injected before any new data arrives
    expected = "does not authenticate" if outstanding else "unexpected circuit SENDME"
    with pytest.raises(RemoteProtocolError, match=expected):
        chain.pump()


def test_stream_window_closes_independently() -> None:
    chain = built_chain(3)
    a, b = open_stream(chain), open_stream(chain)
    chain.take_exit_events()
    for i in range(STREAM_WINDOW):
        assert chain.client.can_send(a)
        chain.client.send_data(a, b"a")
        if i % 50 == 49:
            chain.pump()  # circuit SENDMEs come back, the circuit window never closes
    assert chain.client.streams[a].flow.package == 0
    assert not chain.client.can_send(a)
    assert chain.client.can_send(b)
    assert chain.client.flow.can_send()
    with pytest.raises(LocalProtocolError):
        chain.client.send_data(a, b"over")
    chain.client.send_data(b, b"b still flows")
    chain.pump()
    assert len(data_events(chain.take_exit_events(), a)) == STREAM_WINDOW
    assert chain.exit.streams[a].flow.deliver == 0

    chain.take_client_events()
    chain.exit.data_consumed(a, STREAM_WINDOW - 10)  # the application lags by 10 cells: no credit yet
    chain.pump()
    assert chain.take_client_events() == []
    chain.exit.data_consumed(a, 1)  # caught up to within 10 cells: the whole window comes back
    chain.pump()
    assert chain.take_client_events() == [SendWindowOpened(a)] * (STREAM_WINDOW // STREAM_INCREMENT)
    assert chain.client.streams[a].flow.package == STREAM_WINDOW
    stream_sendmes = [
        m for m in chain.exit_observed.messages if m.command is RelayCommand.SENDME and m.stream_id == a
    ]
    assert stream_sendmes == []  # SENDMEs go exit -> client; the exit itself received none
    assert chain.client.can_send(a)


def test_client_consumption_sends_stream_sendmes_to_the_exit() -> None:
    chain = built_chain(2)
    sid = open_stream(chain)
    for i in range(STREAM_WINDOW):
        chain.exit.send_data(sid, b"z")
        if i % 32 == 31:
            chain.pump()  # circuit SENDMEs keep the circuit window open
    assert not chain.exit.can_send(sid)
    chain.pump()
    assert len(data_events(chain.take_client_events(), sid)) == STREAM_WINDOW
    chain.client.data_consumed(sid, STREAM_WINDOW)
    chain.pump()
    assert chain.take_exit_events().count(SendWindowOpened(sid)) == STREAM_WINDOW // STREAM_INCREMENT
    assert chain.exit.can_send(sid)
    sendmes = [
        m for m in chain.exit_observed.messages if m.command is RelayCommand.SENDME and m.stream_id == sid
    ]
    assert len(sendmes) == STREAM_WINDOW // STREAM_INCREMENT


def test_data_consumed_for_unknown_stream_is_ignored() -> None:
    chain = built_chain(1)
    chain.client.data_consumed(999, 10)
    assert chain.client.cells_to_send() == []


def test_peer_exceeding_the_stream_window() -> None:
    chain = built_chain(2)
    sid = open_stream(chain)
    chain.client.streams[sid].flow.package += 1  # a client that ignores its window
    for i in range(STREAM_WINDOW + 1):
        chain.client.send_data(sid, b"x")
        if i % 32 == 31:
            chain.pump()
    with pytest.raises(RemoteProtocolError, match="exceeded the stream window"):
        chain.pump()


def test_spurious_stream_sendme() -> None:
    chain = built_chain(2)
    sid = open_stream(chain)
    # Credit may grow a window up to STREAM_WINDOW_MAX (proto.flow), never beyond it.
    chain.client._seal(RelayMessage(RelayCommand.SENDME, sid, encode_stream_credit(STREAM_WINDOW_MAX)))
    with pytest.raises(RemoteProtocolError, match="beyond the window"):
        chain.pump()


@pytest.mark.parametrize("body", [b"\x00", b"\x00\x00", b"\xff\xff", b"\x00\x01\x00"])
def test_malformed_stream_credit_is_a_protocol_violation(body: bytes) -> None:
    chain = built_chain(2)
    sid = open_stream(chain)
    chain.client._seal(RelayMessage(RelayCommand.SENDME, sid, body))
    with pytest.raises(RemoteProtocolError, match="stream SENDME"):
        chain.pump()


# --------------------------------------------------------------------------- attacks at hop 1 (outbound)


def _exit_data_after(chain: Chain) -> list[bytes]:
    return data_events(chain.take_exit_events())


def _attack_outbound(tap, cells: int = 3, n_hops: int = 3) -> tuple[Chain, list[bytes]]:
    """Open a stream, then send `cells` DATA cells while hop 1 applies `tap` to what it forwards."""
    chain = built_chain(n_hops)
    sid = open_stream(chain)
    chain.take_exit_events()
    chain.forward_taps[0] = tap
    sent = [b"secret payload %d" % i for i in range(cells)]
    for data in sent:
        chain.client.send_data(sid, data)
    with pytest.raises(RemoteProtocolError, match="unrecognized relay cell at the last hop"):
        chain.pump()
    return chain, sent


def _assert_no_altered_data(chain: Chain, sent: list[bytes], prefix: int) -> None:
    got = _exit_data_after(chain)
    assert got == sent[:prefix]  # only genuine, in-order data before the attack; nothing altered
    assert all(m.command is not RelayCommand.DATA or m.body in sent for m in chain.exit_observed.messages)


def _desynchronised(chain: Chain) -> None:
    """After an attack, later genuine cells are not recognized at the exit either."""
    (sid,) = chain.client.streams
    chain.forward_taps.clear()
    chain.client._out.clear()
    for h in chain.hops:
        h.take_forward()
        h.take_backward()
    for _ in range(3):
        chain.client.send_data(sid, b"later")
        with pytest.raises(RemoteProtocolError, match="unrecognized relay cell at the last hop"):
            chain.pump()
    assert b"later" not in data_events(chain.exit_observed.events)


@pytest.mark.parametrize("byte", [0, 1, 15, 16, 17, 20, 21, 500, CELL_PAYLOAD_LEN - 1])
def test_tampered_cell_at_hop1(byte: int) -> None:
    def tap(cells):
        (cmd, p), *rest = cells
        return [(cmd, flip(p, byte)), *rest]

    chain, sent = _attack_outbound(tap)
    _assert_no_altered_data(chain, sent, 0)
    _desynchronised(chain)


def test_replayed_cell_at_hop1() -> None:
    def tap(cells):
        return [cells[0], cells[0], *cells[1:]]

    chain, sent = _attack_outbound(tap)
    _assert_no_altered_data(chain, sent, 1)  # the first copy is genuine
    _desynchronised(chain)


def test_reordered_cells_at_hop1() -> None:
    def tap(cells):
        return [cells[1], cells[0], *cells[2:]]

    chain, sent = _attack_outbound(tap)
    _assert_no_altered_data(chain, sent, 0)
    _desynchronised(chain)


def test_dropped_cell_at_hop1() -> None:
    def tap(cells):
        return cells[1:]

    chain, sent = _attack_outbound(tap)
    _assert_no_altered_data(chain, sent, 0)
    _desynchronised(chain)


@pytest.mark.parametrize("position", [0, 1, 3])
def test_injected_cell_at_hop1(position: int) -> None:
    junk = SeededRng(b"junk").random_bytes(CELL_PAYLOAD_LEN)

    def tap(cells):
        return [*cells[:position], (CellCommand.RELAY, junk), *cells[position:]]

    chain, sent = _attack_outbound(tap)
    _assert_no_altered_data(chain, sent, position)
    _desynchronised(chain)


def test_tampering_on_a_long_circuit() -> None:
    def tap(cells):
        return [(cmd, flip(p, 600, 0x80)) for cmd, p in cells]

    chain, sent = _attack_outbound(tap, n_hops=8)
    _assert_no_altered_data(chain, sent, 0)


def test_tampering_at_the_middle_of_an_8_hop_circuit() -> None:
    chain = built_chain(8)
    sid = open_stream(chain)
    chain.take_exit_events()
    chain.forward_taps[4] = lambda cells: [(c, flip(p)) for c, p in cells]
    chain.client.send_data(sid, b"payload")
    with pytest.raises(RemoteProtocolError, match="unrecognized relay cell at the last hop"):
        chain.pump()
    assert data_events(chain.take_exit_events()) == []


def test_downgraded_relay_early_breaks_the_extension() -> None:
    """Hop 1 rewrites RELAY_EARLY to RELAY: hop 2 refuses the EXTEND."""
    relays = make_relays(3)
    chain = Chain(relays)
    chain.build(relays[:2])
    chain.forward_taps[0] = lambda cells: [(CellCommand.RELAY, p) for _, p in cells]
    with pytest.raises(RemoteProtocolError, match="EXTEND outside RELAY_EARLY"):
        chain.extend(relays[2])


# --------------------------------------------------------------------------- attacks inbound


def _attack_inbound(tap, at: int = 1) -> tuple[Chain, list[bytes]]:
    chain = built_chain(3)
    sid = open_stream(chain)
    chain.backward_taps[at] = tap
    sent = [b"reply %d" % i for i in range(3)]
    for data in sent:
        chain.exit.send_data(sid, data)
    with pytest.raises(RemoteProtocolError, match="recognized by no hop"):
        chain.pump()
    return chain, sent


@pytest.mark.parametrize("byte", [0, 16, 21, 1000])
def test_tampered_inbound_cell_at_the_middle(byte: int) -> None:
    chain, _sent = _attack_inbound(lambda cells: [flip(cells[0], byte), *cells[1:]])
    assert data_events(chain.take_client_events()) == []


def test_replayed_inbound_cell_at_the_middle() -> None:
    chain, sent = _attack_inbound(lambda cells: [cells[0], *cells])
    assert data_events(chain.take_client_events()) == sent[:1]


def test_reordered_inbound_cells_at_hop1() -> None:
    chain, _ = _attack_inbound(lambda cells: [cells[1], cells[0], *cells[2:]], at=0)
    assert data_events(chain.take_client_events()) == []


def test_dropped_inbound_cell_at_the_middle() -> None:
    chain, _ = _attack_inbound(lambda cells: cells[1:])
    assert data_events(chain.take_client_events()) == []


def test_middle_hop_cannot_speak_for_the_exit() -> None:
    """A middle relay originating stream messages of its own is caught by the client."""
    chain = built_chain(3)
    sid = open_stream(chain)
    chain.hops[1]._seal(RelayMessage(RelayCommand.DATA, sid, b"injected by the middle"))
    with pytest.raises(RemoteProtocolError, match="middle hop"):
        chain.pump()
    assert data_events(chain.take_client_events()) == []


def test_relay_refuses_a_begin_without_an_address() -> None:
    """The empty address (Tor's `:port`) is for an onion service's end-to-end hop: an exit answers
    END TORPROTOCOL and never sees a stream request."""
    chain = built_chain(3)
    chain.take_client_events()
    sid = chain.client.begin(None, 80)
    chain.pump()
    assert chain.take_exit_events() == []
    assert chain.take_client_events() == [StreamEnded(sid, EndReason.TORPROTOCOL)]


def test_client_messages_for_a_middle_hop_are_refused() -> None:
    chain = built_chain(3)
    chain.client._seal(RelayMessage(RelayCommand.BEGIN, 7, Begin("x.example", 80).encode()), hop=1)
    with pytest.raises(RemoteProtocolError, match="for a middle hop"):
        chain.pump()


# --------------------------------------------------------------------------- RELAY_EARLY rules


def test_extend_outside_relay_early() -> None:
    relays = make_relays(2)
    chain = Chain(relays)
    chain.build(relays[:1])
    _, skin = ntor.client_start(relays[1].identity.public, relays[1].onion.public, SeededRng(1))
    body = Extend((relays[1].address,), relays[1].identity.public, ntor.LOCAL_TYPES[0], skin).encode()
    chain.client._relay_early_sent = MAX_RELAY_EARLY  # budget spent: the next cell goes as plain RELAY
    chain.client._seal(RelayMessage(RelayCommand.EXTEND, 0, body))
    with pytest.raises(RemoteProtocolError, match="EXTEND outside RELAY_EARLY"):
        chain.pump()


def test_second_extend_on_a_hop_is_refused() -> None:
    relays = make_relays(3)
    chain = Chain(relays)
    chain.build(relays[:2])
    _, skin = ntor.client_start(relays[2].identity.public, relays[2].onion.public, SeededRng(1))
    body = Extend((relays[2].address,), relays[2].identity.public, ntor.LOCAL_TYPES[0], skin).encode()
    chain.client._seal(RelayMessage(RelayCommand.EXTEND, 0, body), hop=0, early=True)
    with pytest.raises(RemoteProtocolError, match="already extends"):
        chain.pump()


def test_more_than_8_relay_early() -> None:
    chain = built_chain(1)
    for _ in range(MAX_RELAY_EARLY):
        chain.client._seal(RelayMessage(RelayCommand.DROP, 0, b""), early=True)
    chain.pump()
    assert chain.hops[0].relay_early_seen == MAX_RELAY_EARLY == 8
    with pytest.raises(LocalProtocolError):  # the client keeps to the budget ...
        chain.client._seal(RelayMessage(RelayCommand.DROP, 0, b""), early=True)
    chain.client._relay_early_sent = 0  # ... a misbehaving one does not
    chain.client._seal(RelayMessage(RelayCommand.DROP, 0, b""), early=True)
    with pytest.raises(RemoteProtocolError, match="too many RELAY_EARLY"):
        chain.pump()


def test_relay_early_counted_along_an_8_hop_build() -> None:
    relays = make_relays(8)
    chain = Chain(relays)
    chain.build(relays)
    assert [h.relay_early_seen for h in chain.hops] == [7, 6, 5, 4, 3, 2, 1, 0]


# --------------------------------------------------------------------------- who learns what


def _recorded_everything(chain: Chain, i: int) -> list[bytes]:
    obs = chain.observed[i]
    return [
        *obs.all_bytes(),
        *(repr(m).encode() for m in obs.messages),
        *(repr(e).encode() for e in obs.events),
    ]


@pytest.mark.parametrize("n", [3, 8])
def test_only_the_exit_learns_the_destination(n: int) -> None:
    relays = make_relays(n)
    chain = Chain(relays)
    chain.build(relays)
    sid = chain.client.begin(SECRET_HOST, 443)
    chain.pump()
    chain.client.send_data(sid, b"request for " + SECRET_HOST.encode())
    chain.exit.send_data(sid, b"response from " + SECRET_HOST.encode())
    rid = chain.client.resolve("second-secret.example")
    chain.pump()
    chain.client.end_stream(sid)
    chain.pump()

    host = SECRET_HOST.encode()
    for i in range(n - 1):
        obs = chain.observed[i]
        # the only message a non-exit hop ever decodes is the EXTEND to its successor
        assert [m.command for m in obs.messages] == [RelayCommand.EXTEND]
        assert [type(e) for e in obs.events] == [ExtendRequested]
        ext = obs.events[0].extend
        assert ext.identity_pk == relays[i + 1].identity.public
        assert ext.addresses == (relays[i + 1].address,)
        # and no byte it handled, no message, no event contains the destination
        for blob in _recorded_everything(chain, i):
            assert host not in blob
            assert b"second-secret" not in blob
        # nor does it see any hop beyond its successor
        for later in relays[i + 2 :]:
            for blob in _recorded_everything(chain, i):
                assert later.identity.public not in blob
                assert repr(later.identity.public).encode() not in blob
                assert later.address[0].encode() not in blob

    # hop 1 (the guard) specifically never sees the exit
    for blob in _recorded_everything(chain, 0):
        assert relays[-1].identity.public not in blob
        assert relays[-1].address[0].encode() not in blob

    # the exit: its BeginRequested is the one event that names the destination
    exit_events = chain.observed[-1].events
    naming = [e for e in exit_events if SECRET_HOST in repr(e)]
    assert naming == [
        BeginRequested(sid, Begin(SECRET_HOST, 443, BeginFlags.IPV6_OK)),
        StreamDataReceived(sid, b"request for " + SECRET_HOST.encode()),
    ]
    assert ResolveRequested(rid, "second-secret.example") in exit_events
    all_events = [(i, e) for i, obs in enumerate(chain.observed) for e in obs.events]
    begins = [(i, e) for i, e in all_events if isinstance(e, BeginRequested)]
    assert begins == [(n - 1, BeginRequested(sid, Begin(SECRET_HOST, 443, BeginFlags.IPV6_OK)))]
