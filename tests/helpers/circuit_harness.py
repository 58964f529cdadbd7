"""An in-memory circuit: one ClientCircuit wired to a chain of RelayCircuit objects, no sockets.

    client.cells_to_send() ──► hop 0 .handle_forward ──► take_forward() ──► hop 1 ... ──► exit
    client.handle_cell   ◄── take_backward() ◄── hop 0 .handle_backward ◄── ...       ◄── exit

`Chain.pump()` moves cells until nothing moves.  Each channel between neighbours is FIFO, as
a link is.  The harness plays the runtime for every relay: it answers CREATE with
ntor.server_respond, runs the next relay's handshake on ExtendRequested and calls
.extended(reply), and answers BeginRequested / ResolveRequested according to `exit_policy`
(or leaves them to the test).  Taps between hops let a test modify, drop, replay, reorder
or inject cells as a malicious relay would, and every hop's view is recorded in `Observed`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from onionmesh.crypto import ntor
from onionmesh.crypto.keys import IdentityKey, OnionKey
from onionmesh.proto.client_circuit import ClientCircuit
from onionmesh.proto.events import BeginRequested, ExtendRequested, ResolveRequested
from onionmesh.proto.relay_circuit import RelayCircuit
from onionmesh.rng import SeededRng
from onionmesh.wire.cell import (
    Cell,
    CellCommand,
    created_payload,
    parse_create,
)
from onionmesh.wire.relay_msg import EndReason, RelayMessage, ResolvedType

CIRC_ID = 0x8000_0042
ForwardCells = list[tuple[CellCommand, bytes]]
ForwardTap = Callable[[ForwardCells], ForwardCells]
BackwardTap = Callable[[list[bytes]], list[bytes]]


@dataclass
class RelayNode:
    """A relay's long-term keys and address (what a descriptor would say)."""

    name: str
    identity: IdentityKey
    onion: OnionKey
    address: tuple[str, int]


def make_relays(n: int, seed: int | bytes = 0) -> list[RelayNode]:
    rng = SeededRng(b"relays:%r" % (seed,))
    return [
        RelayNode(
            f"relay{i}",
            IdentityKey.generate(rng),
            OnionKey.generate(rng),
            (f"198.51.100.{i + 1}", 9000 + i),
        )
        for i in range(n)
    ]


@dataclass
class Observed:
    """Everything one relay's circuit object saw: raw payloads in and out, decoded messages, events."""

    forward_in: list[tuple[CellCommand, bytes]] = field(default_factory=list)
    forward_out: list[bytes] = field(default_factory=list)
    backward_in: list[bytes] = field(default_factory=list)
    backward_out: list[bytes] = field(default_factory=list)
    messages: list[RelayMessage] = field(default_factory=list)  # recognized (decoded) cells
    events: list[object] = field(default_factory=list)
    events_taken: int = 0

    def all_bytes(self) -> list[bytes]:
        return [p for _, p in self.forward_in] + self.forward_out + self.backward_in + self.backward_out


@dataclass
class ExitAnswer:
    """What the harness's exit does with a BEGIN: connect (address) or refuse (reason), or hold (None)."""

    connect_address: str | None = None
    refuse: EndReason | None = None


def default_exit_policy(event: BeginRequested) -> ExitAnswer | None:
    host = event.begin.host
    try:
        ipaddress.ip_address(host)
        address = host
    except ValueError:
        address = "192.0.2.80"
    return ExitAnswer(connect_address=address)


def default_resolver(event: ResolveRequested) -> tuple[tuple[ResolvedType, str, int], ...] | EndReason | None:
    return ((ResolvedType.IPV4, "192.0.2.53", 300), (ResolvedType.IPV6, "2001:db8::53", 300))


class Chain:
    def __init__(
        self,
        relays: list[RelayNode],
        *,
        seed: int | bytes = 0,
        exit_policy: Callable[[BeginRequested], ExitAnswer | None] = default_exit_policy,
        resolver: Callable[
            [ResolveRequested], tuple[tuple[ResolvedType, str, int], ...] | EndReason | None
        ] = default_resolver,
        handshake_types: tuple[int, ...] = (),
    ) -> None:
        self.directory = {r.identity.public: r for r in relays}
        # the circuit handshake type (layer suite) for hop i, cycling; default: this machine's best
        self.handshake_types = handshake_types or (ntor.LOCAL_TYPES[0],)
        self.client = ClientCircuit(CIRC_ID, SeededRng(b"client:%r" % (seed,)))
        self.relay_rng = SeededRng(b"relay-ephemerals:%r" % (seed,))
        self.hops: list[RelayCircuit] = []
        self.nodes: list[RelayNode] = []
        self.observed: list[Observed] = []
        self.client_events: list[object] = []
        self.exit_policy = exit_policy
        self.resolver = resolver
        # taps: forward_taps[i] sees what hop i forwards to hop i+1; backward_taps[i] what hop i
        # sends toward the client (to hop i-1, or to the client for i == 0)
        self.forward_taps: dict[int, ForwardTap] = {}
        self.backward_taps: dict[int, BackwardTap] = {}

    # --- building --------------------------------------------------------------------------
    def build(self, path: list[RelayNode]) -> None:
        self.client.create(path[0].identity.public, path[0].onion.public, self.handshake_types[0])
        self.pump()
        for node in path[1:]:
            self.extend(node)

    def extend(self, node: RelayNode) -> None:
        htype = self.handshake_types[len(self.client.hops) % len(self.handshake_types)]
        self.client.extend(node.identity.public, node.onion.public, (node.address,), htype)
        self.pump()

    def _new_hop(self, node: RelayNode, onionskin: bytes, htype: int) -> bytes:
        skin = ntor.parse_onionskin(onionskin)
        assert skin.identity_pk == node.identity.public
        assert skin.onion_pk == node.onion.public
        reply, keys = ntor.server_respond(
            skin, node.identity.public, node.onion.secret, self.relay_rng, htype
        )
        hop = RelayCircuit(keys, self.relay_rng)
        obs = Observed()
        original_dispatch = hop._dispatch

        def spy(msg: RelayMessage, digest: bytes, command: CellCommand) -> None:
            obs.messages.append(msg)
            original_dispatch(msg, digest, command)

        hop._dispatch = spy  # type: ignore[method-assign]
        self.hops.append(hop)
        self.nodes.append(node)
        self.observed.append(obs)
        return reply

    # --- moving cells ----------------------------------------------------------------------
    def _to_hop0(self, cell: Cell) -> None:
        assert cell.circ_id == CIRC_ID
        if cell.command is CellCommand.CREATE:
            assert not self.hops, "CREATE on a circuit that exists"
            htype, hdata = parse_create(cell.payload)
            assert htype in ntor.LOCAL_TYPES
            node = self.directory[hdata[:32]]
            reply = self._new_hop(node, hdata, htype)
            self.client.handle_cell(Cell(CIRC_ID, CellCommand.CREATED, created_payload(reply)))
            return
        self._forward(0, cell.command, cell.payload)

    def _forward(self, i: int, command: CellCommand, payload: bytes) -> None:
        self.observed[i].forward_in.append((command, payload))
        self.hops[i].handle_forward(command, payload)

    def _backward(self, i: int, payload: bytes) -> None:
        self.observed[i].backward_in.append(payload)
        self.hops[i].handle_backward(payload)

    def _handle_event(self, i: int, event: object) -> None:
        self.observed[i].events.append(event)
        hop = self.hops[i]
        if isinstance(event, ExtendRequested):
            ext = event.extend
            node = self.directory[ext.identity_pk]
            assert node.address in ext.addresses
            assert i == len(self.hops) - 1
            hop.extended(self._new_hop(node, ext.onionskin, ext.handshake_type))
        elif isinstance(event, BeginRequested):
            answer = self.exit_policy(event)
            if answer is None:
                return
            if answer.refuse is not None:
                hop.end_stream(event.stream_id, answer.refuse)
            else:
                hop.connected(event.stream_id, answer.connect_address)
        elif isinstance(event, ResolveRequested):
            result = self.resolver(event)
            if isinstance(result, EndReason):
                hop.end_stream(event.stream_id, result)
            elif result is not None:
                hop.resolved(event.stream_id, result)

    def pump(self, max_rounds: int = 100_000) -> None:
        """Move cells and answer events until nothing moves; peer errors propagate to the caller.

        When a state machine raises, the events every party produced before the error are kept
        (recorded, not acted on), as a runtime would have seen them.
        """
        try:
            self._pump(max_rounds)
        except BaseException:
            self._drain_events()
            raise

    def _drain_events(self) -> None:
        self.client_events += self.client.take_events()
        for hop, obs in zip(self.hops, self.observed, strict=True):
            obs.events += hop.take_events()

    def _pump(self, max_rounds: int) -> None:
        for _ in range(max_rounds):
            moved = False
            for cell in self.client.cells_to_send():
                moved = True
                self._to_hop0(cell)
            i = 0
            while i < len(self.hops):  # hops may be added while we go
                out = self.hops[i].take_forward()
                if out:
                    moved = True
                    self.observed[i].forward_out += [p for _, p in out]
                    tap = self.forward_taps.get(i)
                    for command, payload in tap(out) if tap else out:
                        self._forward(i + 1, command, payload)
                for event in self.hops[i].take_events():
                    moved = True
                    self._handle_event(i, event)
                i += 1
            for i in range(len(self.hops) - 1, -1, -1):
                back = self.hops[i].take_backward()
                if not back:
                    continue
                moved = True
                self.observed[i].backward_out += back
                tap = self.backward_taps.get(i)
                for payload in tap(back) if tap else back:
                    if i == 0:
                        self.client.handle_cell(Cell(CIRC_ID, CellCommand.RELAY, payload))
                    else:
                        self._backward(i - 1, payload)
            self.client_events += self.client.take_events()
            if not moved:
                return
        raise AssertionError("the chain did not settle")

    # --- conveniences ----------------------------------------------------------------------
    @property
    def exit(self) -> RelayCircuit:
        return self.hops[-1]

    @property
    def exit_observed(self) -> Observed:
        return self.observed[-1]

    def take_client_events(self) -> list[object]:
        self.client_events += self.client.take_events()
        out, self.client_events = self.client_events, []
        return out

    def take_exit_events(self) -> list[object]:
        """Events at the exit since the last call (those the harness did not consume itself)."""
        obs = self.exit_observed
        start, obs.events_taken = obs.events_taken, len(obs.events)
        return obs.events[start:]


def built_chain(n_hops: int, *, seed: int | bytes = 0, **kwargs: object) -> Chain:
    relays = make_relays(max(n_hops, 1) + 1, seed)
    chain = Chain(relays, seed=seed, **kwargs)  # type: ignore[arg-type]
    chain.build(relays[:n_hops])
    return chain
