"""What both ends of a circuit share: the stream table, DATA/END/SENDME handling and windows.

A `CircuitEndpoint` is the client (talking to its exit) or the exit (talking to its client).
Subclasses supply `_seal(msg)`, which layers a relay message and queues the cell; incoming
messages reach `_on_stream_message` after the subclass has peeled and recognized them.  Whenever
a cell is queued, `on_output` is called: the runtime's link then pulls the cells (no I/O here).

Not in this module: layers and hops (client_circuit / relay_circuit), sockets.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from onionmesh.errors import LocalProtocolError, RemoteProtocolError
from onionmesh.proto.events import (
    CircuitEvent,
    DatagramReceived,
    SendWindowOpened,
    StreamDataReceived,
    StreamEnded,
)
from onionmesh.proto.flow import CircuitFlow, StreamFlow, decode_stream_credit, encode_stream_credit
from onionmesh.rng import Rng
from onionmesh.wire.relay_msg import (
    RELAY_BODY_MAX,
    SENDME_NONCE_LEN,
    End,
    EndReason,
    RelayCommand,
    RelayMessage,
    Sendme,
)
from onionmesh.wire.udp_msg import DATAGRAM_MAX, check_datagram

MAX_STREAMS_PER_CIRCUIT = 512
# Optimistic data (Tor proposal 181, docs/protocol.md §7.6): DATA cells a client may send on a
# stream after its BEGIN and before CONNECTED, and so what an exit holds for a connecting stream
# (about 16 KiB: a TLS ClientHello or an HTTP request fits in one).  More is a protocol violation.
OPTIMISTIC_CELLS = 4


def no_clock() -> float:
    return 0.0


def no_output() -> None:
    """The default `on_output`: nobody to tell (a machine driven by hand, as in proto tests)."""


class StreamState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


class Stream:
    __slots__ = ("bytes_in", "bytes_out", "early_left", "flow", "held", "state", "stream_id", "udp")

    def __init__(self, stream_id: int, state: StreamState, udp: bool = False) -> None:
        self.stream_id = stream_id
        self.state = state
        self.udp = udp  # a UDP flow (CONNECT_UDP): carries DATAGRAM, never DATA
        self.flow = StreamFlow()
        self.bytes_in = 0
        self.bytes_out = 0
        self.early_left = 0  # the client: DATA cells it may still send before CONNECTED
        self.held: list[bytes] = []  # the exit: DATA that came before its connect succeeded


class CircuitEndpoint:
    # An exit holds DATA for a stream still connecting (optimistic data) instead of dropping it.
    HOLDS_EARLY_DATA = False

    def __init__(self, rng: Rng, clock: Callable[[], float] = no_clock) -> None:
        self.rng = rng
        self.clock = clock  # seconds, for congestion control's RTTs; the runtime supplies a real one
        self.streams: dict[int, Stream] = {}
        self.flow = CircuitFlow()
        self.events: list[CircuitEvent] = []
        # Called after every queued cell: the runtime marks the circuit ready on its link, whose
        # writer then takes the cells (output is pulled by links, never pushed by callers).
        self.on_output: Callable[[], None] = no_output
        self.bytes_in = 0
        self.bytes_out = 0
        # Stream windows that grow (proto.flow): only toward a peer that understands credit in
        # stream SENDMEs (relay protocol 2: the client learns it from the exit's descriptor, the
        # exit from the client's first such SENDME), timed by the circuit's round trip: our own
        # congestion control's estimate, else `rtt_hint` (the client: its build's last hop).
        self.peer_credit = False
        self.rtt_hint = 0.0

    def stream_rtt(self) -> float:
        """The round trip that times stream-window growth; 0 while the peer cannot take credit."""
        if not self.peer_credit:
            return 0.0
        return self.flow.ewma_rtt or self.rtt_hint

    # --- subclass hooks ----------------------------------------------------------------------
    def _seal(self, msg: RelayMessage, nonce: bytes = b"") -> bytes:
        """Layer `msg` (and `nonce` after its body) for the peer, queue the cell, return its digest."""
        raise NotImplementedError

    # --- sending -----------------------------------------------------------------------------
    def can_send(self, stream_id: int) -> bool:
        stream = self.streams.get(stream_id)
        return (
            stream is not None
            and (
                stream.state is StreamState.OPEN
                or (stream.state is StreamState.CONNECTING and stream.early_left > 0)
            )
            and stream.flow.can_send()
            and self.flow.can_send()
        )

    def send_data(self, stream_id: int, data: bytes) -> int:
        """Send one DATA cell of up to RELAY_BODY_MAX bytes on an open stream; returns the bytes taken.

        Every SENDME_INC-th DATA cell carries a 16-byte random nonce in its padding (and so up to 16 bytes
        less data), so that the SENDME echoing its digest proves the cell was received.
        """
        if not data or len(data) > RELAY_BODY_MAX:
            raise LocalProtocolError("DATA must carry 1..RELAY_BODY_MAX bytes")
        if not self.can_send(stream_id):
            raise LocalProtocolError("stream cannot send now")
        stream = self.streams[stream_id]
        nonce = b""
        if self.flow.next_is_tracked():
            nonce = self.rng.random_bytes(SENDME_NONCE_LEN)
            data = data[: RELAY_BODY_MAX - SENDME_NONCE_LEN]
        digest = self._seal(RelayMessage(RelayCommand.DATA, stream_id, data), nonce)
        self.flow.on_data_sent(digest, self.clock())
        if stream.state is StreamState.CONNECTING:
            stream.early_left -= 1
        stream.flow.package -= 1
        stream.bytes_out += len(data)
        self.bytes_out += len(data)
        return len(data)

    def send_datagram(self, stream_id: int, data: bytes) -> bool:
        """One DATAGRAM on an open UDP flow if the circuit window allows; False (nothing sent) if not.

        DATAGRAMs count in the circuit window exactly as DATA cells do (and carry the SENDME
        nonce in turn), so a UDP flood is paced by congestion control like any stream; they have
        no stream window: a flow that cannot send drops or queues (proto.udp_flow), never blocks.
        """
        if not 0 < len(data) <= DATAGRAM_MAX:
            raise LocalProtocolError("DATAGRAM must carry 1..DATAGRAM_MAX bytes")
        stream = self.streams.get(stream_id)
        if stream is None or not stream.udp or stream.state is not StreamState.OPEN:
            return False
        if not self.flow.can_send():
            return False
        nonce = self.rng.random_bytes(SENDME_NONCE_LEN) if self.flow.next_is_tracked() else b""
        digest = self._seal(RelayMessage(RelayCommand.DATAGRAM, stream_id, data), nonce)
        self.flow.on_data_sent(digest, self.clock())
        stream.bytes_out += len(data)
        self.bytes_out += len(data)
        return True

    def end_stream(self, stream_id: int, reason: EndReason = EndReason.DONE) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None and stream.state is not StreamState.CLOSED:
            stream.state = StreamState.CLOSED
            self._seal(RelayMessage(RelayCommand.END, stream_id, End(reason).encode()))

    def data_consumed(self, stream_id: int, cells: int = 1) -> None:
        """The application has taken received DATA off our hands; give the sender credit."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        now, rtt = self.clock(), self.stream_rtt()
        while credit := stream.flow.on_data_consumed(cells, now, rtt):
            cells = 0
            self._seal(RelayMessage(RelayCommand.SENDME, stream_id, encode_stream_credit(credit)))

    # --- receiving -----------------------------------------------------------------------------
    def _on_data(self, msg: RelayMessage, digest: bytes) -> None:
        sendme_digest = self.flow.on_data_received(digest)
        if sendme_digest is not None:
            self._seal(RelayMessage(RelayCommand.SENDME, 0, Sendme(1, sendme_digest).encode()))
        stream = self.streams.get(msg.stream_id)
        connecting = stream is not None and stream.state is StreamState.CONNECTING and not stream.udp
        if connecting and self.HOLDS_EARLY_DATA:
            assert stream is not None
            self._hold(stream, msg.body)
            return
        if stream is None or stream.state is not StreamState.OPEN or stream.udp:
            return  # data for a stream we already closed (or for a UDP flow): dropped, as Tor does
        stream.flow.on_data_received()
        stream.bytes_in += len(msg.body)
        self.bytes_in += len(msg.body)
        self.events.append(StreamDataReceived(msg.stream_id, msg.body))

    def _hold(self, stream: Stream, body: bytes) -> None:
        """Optimistic data: kept until the stream connects (then handed over in order) or ends
        (then dropped); it counts in the stream window, so no credit goes back before delivery."""
        if len(stream.held) >= OPTIMISTIC_CELLS:
            raise RemoteProtocolError("more DATA before CONNECTED than optimistic data allows")
        stream.flow.on_data_received()
        stream.held.append(body)
        stream.bytes_in += len(body)
        self.bytes_in += len(body)

    def _on_datagram(self, msg: RelayMessage, digest: bytes) -> None:
        """A DATAGRAM counts in the circuit window like DATA; one for no open flow is dropped."""
        check_datagram(msg.body)
        sendme_digest = self.flow.on_data_received(digest)
        if sendme_digest is not None:
            self._seal(RelayMessage(RelayCommand.SENDME, 0, Sendme(1, sendme_digest).encode()))
        stream = self.streams.get(msg.stream_id)
        if stream is None or not stream.udp or stream.state is not StreamState.OPEN:
            return
        stream.bytes_in += len(msg.body)
        self.bytes_in += len(msg.body)
        self.events.append(DatagramReceived(msg.stream_id, msg.body))

    def _on_sendme(self, msg: RelayMessage) -> None:
        if msg.stream_id == 0:
            self.flow.on_sendme(Sendme.decode(msg.body).digest, self.clock())
            self.events.append(SendWindowOpened(0))
            return
        cells = decode_stream_credit(msg.body)
        if msg.body:
            self.peer_credit = True  # it grants credit: it takes credit too
        stream = self.streams.get(msg.stream_id)
        if stream is not None:
            stream.flow.on_sendme(cells)
            self.events.append(SendWindowOpened(msg.stream_id))

    def _on_end(self, msg: RelayMessage) -> None:
        stream = self.streams.pop(msg.stream_id, None)
        if stream is not None:
            stream.state = StreamState.CLOSED
            self.events.append(StreamEnded(msg.stream_id, End.decode(msg.body).reason))

    def _on_common(self, msg: RelayMessage, digest: bytes) -> bool:
        """Handle the messages both endpoints understand; False if the subclass must."""
        if msg.command is RelayCommand.DATA:
            self._on_data(msg, digest)
        elif msg.command is RelayCommand.DATAGRAM:
            self._on_datagram(msg, digest)
        elif msg.command is RelayCommand.SENDME:
            self._on_sendme(msg)
        elif msg.command is RelayCommand.END:
            self._on_end(msg)
        elif msg.command is RelayCommand.DROP:
            pass
        else:
            return False
        return True

    def take_events(self) -> list[CircuitEvent]:
        out, self.events = self.events, []
        return out

    def _new_stream(self, stream_id: int, state: StreamState, udp: bool = False) -> Stream:
        if stream_id in self.streams:
            raise RemoteProtocolError("stream id already in use")
        if len(self.streams) >= MAX_STREAMS_PER_CIRCUIT:
            raise RemoteProtocolError("too many streams on one circuit")
        stream = Stream(stream_id, state, udp)
        self.streams[stream_id] = stream
        return stream
