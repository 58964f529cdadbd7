"""A relay's view of one circuit: apply this hop's layer, forward or recognize, act as exit (sans-I/O).

Theory of operation.  Cells from the client side (`handle_forward`) get the forward layer; a
cell whose tag is then zero is for us and is parsed, anything else goes on to the next hop.
If there is no next hop, an unrecognized cell can only be forged, replayed or reordered: it
raises `RemoteProtocolError` and the runtime destroys the circuit.  Cells from the next hop
(`handle_backward`) get the backward layer and go back toward the client.  What this relay
must do in the world (open a link, connect a socket, resolve a name) comes out as events;
the runtime answers with `extended()`, `connected()`, `resolved()`, `end_stream()`.

Not in this module: the CREATE handshake's key lookup (runtime), sockets, exit policy.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from onionmesh.crypto.hs_intro import circuit_binding_key
from onionmesh.crypto.ntor import HopKeys
from onionmesh.crypto.onion_layer import OnionLayer, is_recognized
from onionmesh.errors import RemoteProtocolError
from onionmesh.proto.dht_events import DhtRpcRequested
from onionmesh.proto.endpoint import MAX_STREAMS_PER_CIRCUIT, CircuitEndpoint, StreamState, no_clock
from onionmesh.proto.events import (
    BeginRequested,
    ExtendRequested,
    MessageForHandler,
    RelayEvent,
    ResolveRequested,
    UdpConnectRequested,
)
from onionmesh.rng import Rng
from onionmesh.wire.cell import MAX_RELAY_EARLY, CellCommand
from onionmesh.wire.dht_rpc import DhtRpc
from onionmesh.wire.relay_msg import (
    Begin,
    Connected,
    End,
    EndReason,
    Extend,
    Extended,
    RelayCommand,
    RelayMessage,
    Resolve,
    Resolved,
    ResolvedType,
    Truncated_,
)


class RelayCircuit(CircuitEndpoint):
    HOLDS_EARLY_DATA = True  # optimistic data (relay protocol 3): held until connected() hands it over

    def __init__(
        self,
        keys: HopKeys,
        rng: Rng,
        clock: Callable[[], float] = no_clock,
        handled: Container[RelayCommand] = frozenset(),
    ) -> None:
        super().__init__(rng, clock)
        # Commands the runtime has a handler for (rendezvous, introduction...): they become
        # MessageForHandler events instead of "unexpected at a relay".
        self.handled = handled
        self._forward = OnionLayer(keys.forward_stream, keys.forward_mac, keys.suite)
        self._backward = OnionLayer(keys.backward_stream, keys.backward_mac, keys.suite)
        # ESTABLISH_INTRO's HANDSHAKE_AUTH is keyed by this (crypto.hs_intro): from the keys as made
        self.binding_key = circuit_binding_key(keys)
        self.has_next = False
        self.extending = False
        self.relay_early_seen = 0
        self.forward_out: list[tuple[CellCommand, bytes]] = []
        self.backward_out: list[bytes] = []
        self.cells_forwarded = 0

    # --- cells from the client side ------------------------------------------------------------
    def handle_forward(self, command: CellCommand, payload: bytes) -> None:
        if command is CellCommand.RELAY_EARLY:
            self.relay_early_seen += 1
            if self.relay_early_seen > MAX_RELAY_EARLY:
                raise RemoteProtocolError("too many RELAY_EARLY cells")
        payload = self._forward.apply(payload)
        if is_recognized(payload):
            self._dispatch(RelayMessage.decode_plain(payload), self._forward.digest(), command)
        elif self.has_next:
            self.cells_forwarded += 1
            self.forward_out.append((command, payload))
            self.on_output()
        else:
            raise RemoteProtocolError("unrecognized relay cell at the last hop")

    def _dispatch(self, msg: RelayMessage, digest: bytes, command: CellCommand) -> None:
        if msg.command is RelayCommand.EXTEND:
            if command is not CellCommand.RELAY_EARLY:
                raise RemoteProtocolError("EXTEND outside RELAY_EARLY")
            if self.has_next or self.extending:
                raise RemoteProtocolError("EXTEND on a circuit that already extends")
            self.extending = True
            self.events.append(ExtendRequested(Extend.decode(msg.body)))
            return
        if self.has_next:
            raise RemoteProtocolError(f"{msg.command.name} for a middle hop")
        if self._on_common(msg, digest):
            return
        if msg.command is RelayCommand.BEGIN:
            begin = Begin.decode(msg.body)
            if begin.host is None:  # the empty address is for an onion service's end-to-end hop only
                if msg.stream_id in self.streams:
                    raise RemoteProtocolError("stream id already in use")
                self._seal(RelayMessage(RelayCommand.END, msg.stream_id, End(EndReason.TORPROTOCOL).encode()))
                return
            self._open_stream(msg, BeginRequested(msg.stream_id, begin))
        elif msg.command is RelayCommand.RESOLVE:
            self._open_stream(msg, ResolveRequested(msg.stream_id, Resolve.decode(msg.body).host))
        elif msg.command is RelayCommand.CONNECT_UDP:
            self._open_stream(msg, UdpConnectRequested(msg.stream_id, Begin.decode(msg.body)), udp=True)
        elif msg.command is RelayCommand.DHT_RPC and msg.stream_id:  # bridges: DHT over circuits
            self.events.append(DhtRpcRequested(msg.stream_id, DhtRpc.decode(msg.body)))
        elif msg.command in self.handled:
            self.events.append(MessageForHandler(msg))
        else:
            raise RemoteProtocolError(f"unexpected {msg.command.name} at a relay")

    def _open_stream(self, msg: RelayMessage, event: RelayEvent, udp: bool = False) -> None:
        if msg.stream_id in self.streams:
            raise RemoteProtocolError("stream id already in use")
        if len(self.streams) >= MAX_STREAMS_PER_CIRCUIT:
            self._seal(RelayMessage(RelayCommand.END, msg.stream_id, End(EndReason.RESOURCELIMIT).encode()))
            return
        self._new_stream(msg.stream_id, StreamState.CONNECTING, udp)
        self.events.append(event)

    # --- cells from the exit side --------------------------------------------------------------
    def handle_backward(self, payload: bytes) -> None:
        payload = self._backward.apply(payload)
        self.cells_forwarded += 1
        self.backward_out.append(payload)
        self.on_output()

    def _seal(self, msg: RelayMessage, nonce: bytes = b"") -> bytes:
        self.backward_out.append(self._backward.apply(msg.encode_plain(nonce)))
        self.on_output()
        return self._backward.digest()

    # --- answers from the runtime --------------------------------------------------------------
    def extended(self, reply: bytes) -> None:
        self.extending = False
        self.has_next = True
        self._seal(RelayMessage(RelayCommand.EXTENDED, 0, Extended(reply).encode()))

    def join(self) -> None:
        """This circuit now continues into another (a handler joined them end to end): cells this
        hop does not recognize go on, as at a middle hop, instead of being a violation."""
        self.has_next = True

    def extend_failed(self, reason: int) -> None:
        self.extending = False
        self._seal(RelayMessage(RelayCommand.TRUNCATED, 0, Truncated_(reason).encode()))

    def connected(self, stream_id: int, address: str | None) -> list[bytes]:
        """The exit's connect succeeded: CONNECTED, and the optimistic data that came before it
        (what the runtime must write to the destination first, in order; the application's
        consumption of it then credits the stream as for any DATA)."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.state is not StreamState.CONNECTING:
            return []
        stream.state = StreamState.OPEN
        self._seal(RelayMessage(RelayCommand.CONNECTED, stream_id, Connected(address, 0).encode()))
        held, stream.held = stream.held, []
        return held

    def connected_udp(self, stream_id: int, address: str | None) -> None:
        """The exit opened the flow's connected UDP socket: CONNECTED_UDP (wire.udp_msg)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.udp or stream.state is not StreamState.CONNECTING:
            return
        stream.state = StreamState.OPEN
        self._seal(RelayMessage(RelayCommand.CONNECTED_UDP, stream_id, Connected(address, 0).encode()))

    def resolved(self, stream_id: int, answers: tuple[tuple[ResolvedType, str, int], ...]) -> None:
        if self.streams.pop(stream_id, None) is None:
            return
        self._seal(RelayMessage(RelayCommand.RESOLVED, stream_id, Resolved(answers).encode()))

    def dht_answer(self, request_id: int, bodies: list[bytes]) -> None:
        """Send the DHT_ANSWER messages of one DHT_RPC back to the client."""
        for body in bodies:
            self._seal(RelayMessage(RelayCommand.DHT_ANSWER, request_id, body))

    def send_message(self, command: RelayCommand, body: bytes, stream_id: int = 0) -> None:
        """A message to this circuit's client (a handler's answer: INTRO_ESTABLISHED, INTRODUCE2,
        INTRODUCE_ACK, RENDEZVOUS_ESTABLISHED, RENDEZVOUS2; DIR_DATA with its request id)."""
        self._seal(RelayMessage(command, stream_id, body))

    def take_forward(self) -> list[tuple[CellCommand, bytes]]:
        out, self.forward_out = self.forward_out, []
        return out

    def take_backward(self) -> list[bytes]:
        out, self.backward_out = self.backward_out, []
        return out
