"""The exit's UDP flows (issue 22, after Tor's proposal 339): CONNECT_UDP opens one *connected* UDP
socket to one destination, DATAGRAMs go through it one payload each, replies come back as
DATAGRAMs while the circuit window allows (a bounded queue, then drops: proto.udp_flow).

An exit opts in with a UDP exit policy of its own (`--exit-policy-udp`); without one it answers
every CONNECT_UDP with END EXITPOLICY and never opens a UDP socket.  Destinations are judged
exactly as TCP's (`exit_rules.ExitRules.permits`: policy, private addresses, the relay's own
addresses), names are resolved here at the exit.  Each flow holds a slot of the exit's stream
ledger (it holds a descriptor as a TCP stream does) and counts against a per-circuit flow cap;
datagrams toward destinations pass a per-circuit token bucket, which bounds what one circuit can
make this relay send (amplification) to `datagrams_per_second` times the datagram size.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from onionmesh.directory.descriptor import MAX_EXIT_POLICY_LEN
from onionmesh.directory.exit_policy import ExitPolicy
from onionmesh.errors import ExitRefused, PolicyError
from onionmesh.proto.events import DatagramReceived, SendWindowOpened, StreamEnded, UdpConnectRequested
from onionmesh.proto.udp_flow import IDLE_TIMEOUT, SHARED_QUEUE_BYTES, DatagramQueue, DatagramRate
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.relay import exit_rules as exit_mod
from onionmesh.runtime.relay.circuit_entry import RelayCircuitEntry
from onionmesh.runtime.relay.config import RelayConfig
from onionmesh.runtime.relay.exit_limits import StreamLedger, StreamSlot
from onionmesh.runtime.safelog import Sensitive, get_logger
from onionmesh.wire.relay_msg import BeginFlags, EndReason
from onionmesh.wire.udp_msg import DATAGRAM_MAX

log = get_logger("onionmesh.exit.udp")
peer_log = limited(log)

UDP_FLOWS_PER_CIRCUIT = 32
UDP_DATAGRAMS_PER_SECOND = 2000.0  # per circuit, toward destinations
UDP_BURST = 1000.0
SEND_BUFFER_LIMIT = 256 * 1024  # bytes asyncio may hold for one flow's socket before datagrams drop


@dataclass(frozen=True)
class UdpCaps:
    flows_per_circuit: int = UDP_FLOWS_PER_CIRCUIT
    datagrams_per_second: float = UDP_DATAGRAMS_PER_SECOND
    burst: float = UDP_BURST
    idle_timeout: float = IDLE_TIMEOUT


@dataclass(eq=False)
class _ExitFlow:
    stream_id: int
    transport: asyncio.DatagramTransport
    slot: StreamSlot
    last_active: float
    queue: DatagramQueue = field(default_factory=DatagramQueue)
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _CircuitUdp:
    rate: DatagramRate
    flows: dict[int, _ExitFlow] = field(default_factory=dict)
    connecting: int = 0


class _FlowProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes], None], on_error: Callable[[], None]) -> None:
        self.on_datagram = on_datagram
        self.on_error = on_error

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.on_datagram(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable on a connected socket
        self.on_error()


class UdpExit:
    """UDP flows of every circuit that ends here; `rules` None: this relay exits no UDP."""

    def __init__(
        self,
        rules: exit_mod.ExitRules | None,
        ledger: StreamLedger,
        count: Callable[[str], None],
        caps: UdpCaps | None = None,
        local_host_for: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self.rules = rules
        self.ledger = ledger
        self.count = count
        self.caps = caps or UdpCaps()
        self.local_host_for = local_host_for
        self.circuits: dict[RelayCircuitEntry, _CircuitUdp] = {}
        self.sockets_open = 0

    # --- opening ----------------------------------------------------------------------------
    def _end(self, entry: RelayCircuitEntry, sid: int, reason: EndReason) -> None:
        if not entry.dead:
            entry.circ.end_stream(sid, reason)

    def _state(self, entry: RelayCircuitEntry) -> _CircuitUdp:
        state = self.circuits.get(entry)
        if state is None:
            rate = DatagramRate(self.caps.datagrams_per_second, self.caps.burst, time.monotonic())
            state = self.circuits[entry] = _CircuitUdp(rate)
        return state

    async def connect(self, entry: RelayCircuitEntry, event: UdpConnectRequested) -> None:
        sid, begin = event.stream_id, event.begin
        log.debug("UDP flow requested", host=Sensitive(begin.host), port=begin.port)
        rules = self.rules
        if rules is None:
            self.count("udp_refused_policy")
            self._end(entry, sid, EndReason.EXITPOLICY)
            return
        state = self._state(entry)
        if len(state.flows) + state.connecting >= self.caps.flows_per_circuit:
            self.count("udp_refused_flows")
            peer_log.warning("UDP flow refused at the per-circuit cap (END RESOURCELIMIT)")
            self._end(entry, sid, EndReason.RESOURCELIMIT)
            return
        slot = self.ledger.admit(entry, entry.prev.link)
        if isinstance(slot, str):
            self.count(f"streams_refused_{slot}")
            self._end(entry, sid, EndReason.RESOURCELIMIT)
            return
        state.connecting += 1
        try:
            flow = await self._open(entry, sid, begin.host, begin.port, begin.flags, rules, slot)
        except ExitRefused as refused:
            slot.release()
            if refused.reason is EndReason.EXITPOLICY:
                self.count("udp_refused_policy")
            self._end(entry, sid, refused.reason)
            return
        except BaseException:
            slot.release()
            raise
        finally:
            state.connecting -= 1
        if entry.dead or sid not in entry.circ.streams or self.circuits.get(entry) is not state:
            self._close_flow(flow)
            return
        state.flows[sid] = flow
        self._arm(entry, flow)
        entry.circ.connected_udp(sid, flow.transport.get_extra_info("peername", ("", 0))[0] or None)

    async def _open(
        self,
        entry: RelayCircuitEntry,
        sid: int,
        host: str,
        port: int,
        flags: BeginFlags,
        rules: exit_mod.ExitRules,
        slot: StreamSlot,
    ) -> _ExitFlow:
        found = await exit_mod.resolve(host, flags, local_only=rules.loopback_only, overrides=rules.overrides)
        addresses = [a for a in found if rules.permits(a, port)]
        if not addresses:
            raise ExitRefused(EndReason.EXITPOLICY)
        # One connected socket, one address: no handshake tells which answers, so IPv4 first as
        # Tor's exits prefer it, unless the client asked for IPv6 first (BEGIN's flags).
        if not flags & BeginFlags.IPV6_PREFERRED:
            addresses.sort(key=lambda a: ":" in a)
        loop = asyncio.get_running_loop()
        holder: list[_ExitFlow] = []

        def on_datagram(data: bytes) -> None:
            if holder:
                self._from_destination(entry, holder[0], data)

        def on_error() -> None:
            self.count("udp_destination_errors")

        source = self.local_host_for(addresses[0])
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _FlowProtocol(on_datagram, on_error),
                remote_addr=(addresses[0], port),
                local_addr=(source, 0) if source else None,
            )
        except OSError as exc:
            raise ExitRefused(EndReason.NOROUTE) from exc
        self.sockets_open += 1
        self.count("udp_sockets_opened")
        flow = _ExitFlow(sid, transport, slot, time.monotonic())
        holder.append(flow)
        return flow

    # --- datagrams ----------------------------------------------------------------------------
    def datagram(self, entry: RelayCircuitEntry, event: DatagramReceived) -> None:
        """A DATAGRAM from the client: to the destination, if the circuit's rate allows."""
        state = self.circuits.get(entry)
        flow = state.flows.get(event.stream_id) if state is not None else None
        if state is None or flow is None:
            return
        now = time.monotonic()
        flow.last_active = now
        if not state.rate.allow(now):
            self.count("udp_dropped_rate")
            return
        if flow.transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            self.count("udp_dropped_full")
            return
        flow.transport.sendto(event.data)
        self.count("udp_datagrams_out")

    def _from_destination(self, entry: RelayCircuitEntry, flow: _ExitFlow, data: bytes) -> None:
        if entry.dead or not data or len(data) > DATAGRAM_MAX:
            self.count("udp_dropped_size")
            return
        flow.last_active = time.monotonic()
        if not flow.queue and entry.circ.send_datagram(flow.stream_id, data):
            self.count("udp_datagrams_in")
            return
        state = self.circuits.get(entry)
        shared = sum(f.queue.bytes for f in state.flows.values()) if state is not None else 0
        if shared + len(data) > SHARED_QUEUE_BYTES or not flow.queue.push(data):
            self.count("udp_dropped_full")

    def _flush(self, entry: RelayCircuitEntry) -> None:
        state = self.circuits.get(entry)
        if state is None:
            return
        for flow in list(state.flows.values()):
            while flow.queue and entry.circ.send_datagram(flow.stream_id, flow.queue.peek()):
                flow.queue.pop()
                self.count("udp_datagrams_in")

    def route(self, entry: RelayCircuitEntry, event: StreamEnded | SendWindowOpened | object) -> None:
        """Stream events that concern UDP flows: the window opened, the client ended a flow."""
        match event:
            case SendWindowOpened(0):
                self._flush(entry)
            case StreamEnded(sid):
                state = self.circuits.get(entry)
                flow = state.flows.pop(sid, None) if state is not None else None
                if flow is not None:
                    self._close_flow(flow)

    # --- ending ---------------------------------------------------------------------------------
    def _arm(self, entry: RelayCircuitEntry, flow: _ExitFlow) -> None:
        idle = self.caps.idle_timeout
        wait = max(0.0, flow.last_active + idle - time.monotonic())
        flow.timer = asyncio.get_running_loop().call_later(wait, self._idle_check, entry, flow)

    def _idle_check(self, entry: RelayCircuitEntry, flow: _ExitFlow) -> None:
        state = self.circuits.get(entry)
        if state is None or state.flows.get(flow.stream_id) is not flow:
            return
        if time.monotonic() - flow.last_active >= self.caps.idle_timeout:
            del state.flows[flow.stream_id]
            self.count("udp_flows_idle_closed")
            self._close_flow(flow)
            self._end(entry, flow.stream_id, EndReason.DONE)
            return
        self._arm(entry, flow)

    def _close_flow(self, flow: _ExitFlow) -> None:
        if flow.timer is not None:
            flow.timer.cancel()
        flow.queue.clear()
        flow.slot.release()
        if not flow.transport.is_closing():
            self.sockets_open -= 1
            with contextlib.suppress(RuntimeError):
                flow.transport.close()

    def close_circuit(self, entry: RelayCircuitEntry) -> None:
        """The circuit is gone: close all its flows' sockets."""
        state = self.circuits.pop(entry, None)
        if state is not None:
            for flow in state.flows.values():
                self._close_flow(flow)
            state.flows.clear()


def udp_exit(
    config: RelayConfig,
    ledger: StreamLedger,
    count: Callable[[str], None],
    local_host_for: Callable[[str], str | None],
) -> UdpExit:
    """The relay's UDP exit from its settings: no rules (refuse all UDP) unless a UDP policy is set."""
    rules = None
    if config.exit_policy_udp.strip():
        policy = ExitPolicy.parse(config.exit_policy_udp)
        if len(str(policy).encode()) > MAX_EXIT_POLICY_LEN:
            raise PolicyError(f"the UDP exit policy is too long to publish (at most {MAX_EXIT_POLICY_LEN} B)")
        overrides = {k.lower().rstrip("."): v for k, v in config.resolve_overrides.items()}
        rules = exit_mod.ExitRules(policy, config.allow_private_destinations, overrides)
    caps = UdpCaps(
        flows_per_circuit=config.udp_flows_per_circuit or UDP_FLOWS_PER_CIRCUIT,
        datagrams_per_second=config.udp_datagrams_per_second or UDP_DATAGRAMS_PER_SECOND,
    )
    return UdpExit(rules, ledger, count, caps, local_host_for)
