"""The client's side of a circuit: telescoping construction, layering, and its streams (sans-I/O).

Theory of operation.  `create()` returns the CREATE cell for hop 1; `handle_cell()` consumes
CREATED, then every RELAY cell (peeled layer by layer until one hop recognizes it).
`extend()` sends EXTEND to the current last hop inside a RELAY_EARLY cell, so hop 1 sees
only hop 2's address and never the exit's.  Any cell that no hop recognizes, any handshake
that fails, any message out of place raises `RemoteProtocolError`: the runtime then destroys
the circuit.  Outgoing cells accumulate in `cells_to_send()`.

Not in this module: choosing relays, links, sockets, timers.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from onionmesh.crypto import ntor
from onionmesh.crypto.hs_intro import circuit_binding_key
from onionmesh.crypto.onion_layer import OnionLayer, is_recognized
from onionmesh.errors import LocalProtocolError, RemoteProtocolError
from onionmesh.proto.dht_events import DhtAnswerReceived
from onionmesh.proto.endpoint import (
    MAX_STREAMS_PER_CIRCUIT,
    OPTIMISTIC_CELLS,
    CircuitEndpoint,
    StreamState,
    no_clock,
)
from onionmesh.proto.events import (
    BeginRequested,
    CircuitExtended,
    MessageForHandler,
    StreamConnected,
    StreamEnded,
    StreamResolved,
)
from onionmesh.rng import Rng
from onionmesh.wire.cell import (
    MAX_RELAY_EARLY,
    Cell,
    CellCommand,
    create_payload,
    parse_created,
)
from onionmesh.wire.dht_rpc import DhtAnswer, DhtRpc
from onionmesh.wire.relay_msg import (
    Begin,
    BeginFlags,
    Connected,
    End,
    EndReason,
    Extend,
    Extended,
    RelayCommand,
    RelayMessage,
    Resolve,
    Resolved,
)

MAX_HOPS = 8
ENDED_CONNECTING = 64  # stream ids remembered as ended by us before their CONNECTED


class CircuitState(enum.Enum):
    NEW = "new"
    BUILDING = "building"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class Hop:
    identity_pk: bytes
    forward: OnionLayer
    backward: OnionLayer
    binding_key: bytes = b""  # crypto.hs_intro.circuit_binding_key of the keys as made (ESTABLISH_INTRO)
    # An onion service's end of the end-to-end hop (docs/protocol.md §16.7): it is the "relay" of
    # that layer, so it seals and peels with `apply`, where a client's hop uses `unapply`.
    relay_side: bool = False


class ClientCircuit(CircuitEndpoint):
    def __init__(self, circ_id: int, rng: Rng, clock: Callable[[], float] = no_clock) -> None:
        super().__init__(rng, clock)
        self.circ_id = circ_id
        self.hops: list[Hop] = []
        self.state = CircuitState.NEW
        self._pending: ntor.ClientHandshakeState | None = None
        self._out: list[Cell] = []
        self._relay_early_sent = 0
        self._next_stream_id = 1
        self._resolving: set[int] = set()
        self.dht_pending: set[int] = set()  # DHT_RPC request ids awaiting their DHT_ANSWER
        # Onion services (runtime/client/onion_*): commands the runtime takes from the last hop as
        # MessageForHandler (INTRO_ESTABLISHED, INTRODUCE2, RENDEZVOUS2...), and whether BEGIN from
        # the end-to-end hop opens a stream here (the service's side of a rendezvous circuit).
        self.handled: frozenset[RelayCommand] = frozenset()
        self.accepts_streams = False
        # The exit holds DATA sent before CONNECTED (relay protocol 3, from its descriptor): only
        # then may a stream be begun optimistically (an older exit would drop that data).
        self.peer_optimistic = False
        # Streams this side ended while they were connecting: the exit's CONNECTED (or END) may
        # cross our END, and is then dropped, not a violation (the most recent ENDED_CONNECTING).
        self._ended_connecting: OrderedDict[int, None] = OrderedDict()

    # --- construction ------------------------------------------------------------------------
    def create(self, identity_pk: bytes, onion_pk: bytes, handshake_type: int = ntor.LOCAL_TYPES[0]) -> None:
        """Start hop 1; `handshake_type` picks its layer suite (ntor.best_type of what it offers)."""
        if self.state is not CircuitState.NEW:
            raise LocalProtocolError("circuit already created")
        self._pending, skin = ntor.client_start(identity_pk, onion_pk, self.rng, handshake_type)
        self._out.append(Cell(self.circ_id, CellCommand.CREATE, create_payload(handshake_type, skin)))
        self.on_output()
        self.state = CircuitState.BUILDING

    def extend(
        self,
        identity_pk: bytes,
        onion_pk: bytes,
        addresses: tuple[tuple[str, int], ...],
        handshake_type: int = ntor.LOCAL_TYPES[0],
    ) -> None:
        if self.state is not CircuitState.OPEN or self._pending is not None:
            raise LocalProtocolError("can only extend an open, idle circuit")
        if len(self.hops) >= MAX_HOPS:
            raise LocalProtocolError("circuit is at its maximum length")
        self._pending, skin = ntor.client_start(identity_pk, onion_pk, self.rng, handshake_type)
        body = Extend(addresses, identity_pk, handshake_type, skin).encode()
        self._seal(RelayMessage(RelayCommand.EXTEND, 0, body), early=True)
        self.state = CircuitState.BUILDING

    def _add_hop(self, reply: bytes) -> None:
        assert self._pending is not None
        keys = ntor.client_finish(self._pending, reply)
        self.hops.append(
            Hop(
                self._pending.identity_pk,
                OnionLayer(keys.forward_stream, keys.forward_mac, keys.suite),
                OnionLayer(keys.backward_stream, keys.backward_mac, keys.suite),
                circuit_binding_key(keys),
            )
        )
        self._pending = None
        self.state = CircuitState.OPEN
        self.events.append(CircuitExtended(len(self.hops)))

    def add_virtual_hop(self, keys: ntor.HopKeys, *, service_side: bool) -> None:
        """Add the onion-service end-to-end hop (hs-ntor's keys, §16.7) after the rendezvous point:
        the client's keys as `hs_ntor.e2e_keys` gives them, the service's swapped.  From then on
        messages to and from the last hop are end to end."""
        if self.state is not CircuitState.OPEN or self._pending is not None or len(self.hops) >= MAX_HOPS:
            raise LocalProtocolError("can only add a hop to an open, idle circuit")
        self.hops.append(
            Hop(
                b"",
                OnionLayer(keys.forward_stream, keys.forward_mac, keys.suite),
                OnionLayer(keys.backward_stream, keys.backward_mac, keys.suite),
                relay_side=service_side,
            )
        )
        self.accepts_streams = service_side

    def send_message(
        self, command: RelayCommand, body: bytes, *, hop: int | None = None, stream_id: int = 0
    ) -> None:
        """A message to hop `hop` (default: the last): ESTABLISH_INTRO, INTRODUCE1,
        ESTABLISH_RENDEZVOUS, RENDEZVOUS1 (stream 0); DIR_GET (its request id as stream_id)."""
        if self.state is not CircuitState.OPEN:
            raise LocalProtocolError("circuit is not open")
        self._seal(RelayMessage(command, stream_id, body), hop=hop)

    # --- layering ----------------------------------------------------------------------------
    def _seal(
        self, msg: RelayMessage, nonce: bytes = b"", *, hop: int | None = None, early: bool = False
    ) -> bytes:
        """Layer `msg` for hop index `hop` (default: the last), queue the cell, return its digest.

        The first MAX_RELAY_EARLY relay cells all go as RELAY_EARLY (as Tor's clients do), so a
        relay cannot count the EXTENDs that pass it to learn how many hops follow; EXTEND must.
        """
        target = len(self.hops) - 1 if hop is None else hop
        if not 0 <= target < len(self.hops):
            raise LocalProtocolError("no such hop")
        payload = msg.encode_plain(nonce)
        layer = self.hops[target].forward
        payload = layer.apply(payload) if self.hops[target].relay_side else layer.unapply(payload)
        digest = layer.digest()
        for i in range(target - 1, -1, -1):
            payload = self.hops[i].forward.unapply(payload)
        command = CellCommand.RELAY
        if early and self._relay_early_sent >= MAX_RELAY_EARLY:
            raise LocalProtocolError("RELAY_EARLY budget spent")
        if self._relay_early_sent < MAX_RELAY_EARLY:
            self._relay_early_sent += 1
            command = CellCommand.RELAY_EARLY
        self._out.append(Cell(self.circ_id, command, payload))
        self.on_output()
        return digest

    def _peel(self, payload: bytes) -> tuple[int, RelayMessage, bytes]:
        for i, hop in enumerate(self.hops):
            payload = hop.backward.apply(payload) if hop.relay_side else hop.backward.unapply(payload)
            if is_recognized(payload):
                return i, RelayMessage.decode_plain(payload), hop.backward.digest()
        raise RemoteProtocolError("inbound relay cell recognized by no hop")

    # --- input -------------------------------------------------------------------------------
    def handle_cell(self, cell: Cell) -> None:
        """Consume a cell that arrived on this circuit from hop 1 (not DESTROY: the runtime handles it)."""
        if self.state is CircuitState.CLOSED:
            return
        if cell.command is CellCommand.CREATED:
            if self.state is not CircuitState.BUILDING or self.hops or self._pending is None:
                raise RemoteProtocolError("unexpected CREATED")
            self._add_hop(parse_created(cell.payload))
            return
        if cell.command is not CellCommand.RELAY:
            raise RemoteProtocolError(f"unexpected {cell.command.name} toward the client")
        if not self.hops:
            raise RemoteProtocolError("RELAY before CREATED")
        hop, msg, digest = self._peel(cell.payload)
        if msg.command is RelayCommand.EXTENDED:
            if self._pending is None or hop != len(self.hops) - 1:
                raise RemoteProtocolError("unexpected EXTENDED")
            self._add_hop(Extended.decode(msg.body).reply)
            return
        if msg.command is RelayCommand.TRUNCATED:
            raise RemoteProtocolError("the last hop could not extend the circuit (TRUNCATED)")
        if hop != len(self.hops) - 1:
            raise RemoteProtocolError("stream message from a middle hop")
        if self._on_common(msg, digest):
            return
        if msg.command in self.handled:
            self.events.append(MessageForHandler(msg))
            return
        if msg.command is RelayCommand.BEGIN and self.accepts_streams:
            self._on_begin(msg)
            return
        handler = {
            RelayCommand.CONNECTED: self._on_connected,
            RelayCommand.CONNECTED_UDP: self._on_connected,
            RelayCommand.RESOLVED: self._on_resolved,
            RelayCommand.DHT_ANSWER: self._on_dht_answer,
        }.get(msg.command)
        if handler is None:
            raise RemoteProtocolError(f"unexpected {msg.command.name} at the client")
        handler(msg)

    def _on_connected(self, msg: RelayMessage) -> None:
        stream = self.streams.get(msg.stream_id)
        if stream is None and msg.stream_id in self._ended_connecting:
            del self._ended_connecting[msg.stream_id]  # crossed our END: dropped, as Tor does
            return
        if stream is None or stream.state is not StreamState.CONNECTING:
            raise RemoteProtocolError("CONNECTED for no pending stream")
        if stream.udp != (msg.command is RelayCommand.CONNECTED_UDP):
            raise RemoteProtocolError("CONNECTED and CONNECTED_UDP answer BEGIN and CONNECT_UDP only")
        stream.state = StreamState.OPEN
        stream.early_left = 0
        self.events.append(StreamConnected(msg.stream_id, Connected.decode(msg.body).address))

    def _on_begin(self, msg: RelayMessage) -> None:
        """A BEGIN from the client of an onion service (end to end): a stream the runtime connects
        to the service's target, answering `connected` or `end_stream`."""
        begin = Begin.decode(msg.body)
        if msg.stream_id == 0 or msg.stream_id in self.streams:
            raise RemoteProtocolError("BEGIN with a bad or used stream id")
        if len(self.streams) >= MAX_STREAMS_PER_CIRCUIT:
            self._seal(RelayMessage(RelayCommand.END, msg.stream_id, End(EndReason.RESOURCELIMIT).encode()))
            return
        self._new_stream(msg.stream_id, StreamState.CONNECTING)
        self.events.append(BeginRequested(msg.stream_id, begin))

    def connected(self, stream_id: int) -> None:
        """The service side: the stream's target accepted; CONNECTED (no address: there is none to tell)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.state is not StreamState.CONNECTING:
            return
        stream.state = StreamState.OPEN
        self._seal(RelayMessage(RelayCommand.CONNECTED, stream_id, Connected(None, 0).encode()))

    def _on_resolved(self, msg: RelayMessage) -> None:
        if msg.stream_id not in self._resolving:
            raise RemoteProtocolError("RESOLVED for no pending request")
        self._resolving.discard(msg.stream_id)
        self.streams.pop(msg.stream_id, None)
        self.events.append(StreamResolved(msg.stream_id, Resolved.decode(msg.body).answers))

    def _on_dht_answer(self, msg: RelayMessage) -> None:
        answer = DhtAnswer.decode(msg.body)
        if msg.stream_id not in self.dht_pending:
            return  # the answer to a request that timed out here: dropped, as late as it is
        if not answer.more:
            self.dht_pending.discard(msg.stream_id)
        self.events.append(DhtAnswerReceived(msg.stream_id, answer))

    def dht_rpc(self, request_id: int, rpc: DhtRpc) -> None:
        """Ask the last hop to send one DHT RPC (bridge mode; wire.dht_rpc). Ids are the caller's."""
        if self.state is not CircuitState.OPEN or not 0 < request_id <= 0xFFFF:
            raise LocalProtocolError("circuit is not open or bad request id")
        self.dht_pending.add(request_id)
        self._seal(RelayMessage(RelayCommand.DHT_RPC, request_id, rpc.encode()))

    def _on_end(self, msg: RelayMessage) -> None:
        if msg.stream_id in self._resolving:  # a RESOLVE the exit refused
            self._resolving.discard(msg.stream_id)
        self._ended_connecting.pop(msg.stream_id, None)
        super()._on_end(msg)

    def end_stream(self, stream_id: int, reason: EndReason = EndReason.DONE) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.state is StreamState.CONNECTING and stream_id not in self._resolving:
            self._ended_connecting[stream_id] = None
            while len(self._ended_connecting) > ENDED_CONNECTING:
                self._ended_connecting.popitem(last=False)
        super().end_stream(stream_id, reason)

    # --- streams -----------------------------------------------------------------------------
    def _allocate_stream_id(self) -> int:
        if len(self.streams) >= MAX_STREAMS_PER_CIRCUIT:
            raise LocalProtocolError("this circuit carries as many streams as it may")
        for _ in range(0x10000):
            sid = self._next_stream_id
            self._next_stream_id = sid % 0xFFFF + 1
            if sid not in self.streams:
                self._ended_connecting.pop(sid, None)  # a new stream: its CONNECTED is its own
                return sid
        raise LocalProtocolError("no free stream ids")

    def begin(
        self,
        host: str | None,
        port: int,
        flags: BeginFlags = BeginFlags.IPV6_OK,
        *,
        optimistic: bool = False,
    ) -> int:
        """Open a stream to host:port through the exit (the last hop), or to `port` of an onion
        service (host None: the empty address); returns the stream id.  `optimistic`: the stream
        may send OPTIMISTIC_CELLS DATA cells before CONNECTED (only toward an exit that holds them)."""
        if self.state is not CircuitState.OPEN:
            raise LocalProtocolError("circuit is not open")
        if optimistic and (not self.peer_optimistic or host is None):
            raise LocalProtocolError("optimistic data only toward an exit that holds it")
        sid = self._allocate_stream_id()
        stream = self._new_stream(sid, StreamState.CONNECTING)
        stream.early_left = OPTIMISTIC_CELLS if optimistic else 0
        self._seal(RelayMessage(RelayCommand.BEGIN, sid, Begin(host, port, flags).encode()))
        return sid

    def connect_udp(self, host: str, port: int, flags: BeginFlags = BeginFlags.IPV6_OK) -> int:
        """Open a connected UDP flow to host:port through the exit (CONNECT_UDP); the stream id."""
        if self.state is not CircuitState.OPEN:
            raise LocalProtocolError("circuit is not open")
        sid = self._allocate_stream_id()
        self._new_stream(sid, StreamState.CONNECTING, udp=True)
        self._seal(RelayMessage(RelayCommand.CONNECT_UDP, sid, Begin(host, port, flags).encode()))
        return sid

    def resolve(self, host: str) -> int:
        if self.state is not CircuitState.OPEN:
            raise LocalProtocolError("circuit is not open")
        sid = self._allocate_stream_id()
        self._new_stream(sid, StreamState.CONNECTING)
        self._resolving.add(sid)
        self._seal(RelayMessage(RelayCommand.RESOLVE, sid, Resolve(host).encode()))
        return sid

    def close_all_streams(self, reason: EndReason) -> None:
        for sid in list(self.streams):
            self.streams.pop(sid)
            self.events.append(StreamEnded(sid, reason))

    def cells_to_send(self) -> list[Cell]:
        out, self._out = self._out, []
        return out

    def mark_closed(self, reason: EndReason = EndReason.DESTROY) -> None:
        self.state = CircuitState.CLOSED
        self.close_all_streams(reason)
