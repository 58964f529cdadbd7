"""The exit's UDP replies waiting for the circuit window: at most 1 MiB over all flows of a circuit,
every datagram sent, queued or counted."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from onionmesh.proto.udp_flow import SHARED_QUEUE_BYTES
from onionmesh.runtime.relay.exit_limits import StreamCaps, StreamLedger
from onionmesh.runtime.relay.exit_udp import UdpExit, _ExitFlow


class _Entry:
    """A circuit at the exit whose window never opens (hashable, as the real entry)."""

    dead = False

    def __init__(self) -> None:
        self.circ: Any = SimpleNamespace(send_datagram=lambda sid, data: False)


def test_replies_to_a_stalled_circuit_stay_within_the_shared_budget() -> None:
    counts: Counter[str] = Counter()
    udp = UdpExit(None, StreamLedger(StreamCaps.derive()), lambda name: counts.update([name]))
    entry = _Entry()
    state = udp._state(entry)  # type: ignore[arg-type]
    flows = [_ExitFlow(sid, None, None, 0.0) for sid in range(1, 33)]  # type: ignore[arg-type]
    for flow in flows:
        state.flows[flow.stream_id] = flow
    for _ in range(100):
        for flow in flows:
            udp._from_destination(entry, flow, b"r" * 1400)  # type: ignore[arg-type]
    queued = sum(f.queue.bytes for f in flows)
    assert queued <= SHARED_QUEUE_BYTES
    assert sum(len(f.queue) for f in flows) + counts["udp_dropped_full"] == 3200
