"""How many streams an exit holds open: per circuit, per link (the previous hop) and per process.

Each exit stream holds one socket descriptor from its BEGIN (the connect) until it closes, so
without a cap one client could take every descriptor the process has (issue 15: 1,200 streams
from one client opened 1,217 descriptors; 128 circuits of 512 streams reach a systemd unit's
LimitNOFILE) and the relay could accept no link, no DHT answer, no stream for anyone else.

The caps, as Tor's: a per-circuit stream limit; a process cap derived from RLIMIT_NOFILE with
headroom kept for links, listeners and logs (Tor keeps `ULIMIT_BUFFER` and sizes `ConnLimit`
from the same limit); and, since one previous hop is often one client, half the process cap per
link, so that one link never shuts out the others.  A BEGIN past a cap gets END RESOURCELIMIT,
the reason Tor gives when it is out of sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onionmesh.proto.endpoint import MAX_STREAMS_PER_CIRCUIT
from onionmesh.runtime.fd_budget import descriptor_budget


def process_stream_cap(nofile: int | None = None) -> int:
    """Exit streams this process may hold: the descriptor budget (runtime.fd_budget)."""
    return descriptor_budget(nofile)


@dataclass(frozen=True)
class StreamCaps:
    per_circuit: int
    per_link: int
    per_process: int

    @classmethod
    def derive(
        cls, per_circuit: int | None = None, per_link: int | None = None, per_process: int | None = None
    ) -> StreamCaps:
        """Fill what is not given: the wire's 512 per circuit, the descriptor budget per process,
        half of that per link.  A per-circuit cap above the wire's limit is the wire's limit."""
        process = per_process if per_process is not None else process_stream_cap()
        circuit = min(per_circuit or MAX_STREAMS_PER_CIRCUIT, MAX_STREAMS_PER_CIRCUIT)
        link = per_link if per_link is not None else max(1, process // 2)
        if min(circuit, link, process) < 1:
            raise ValueError("stream caps must be at least 1")
        return cls(circuit, link, process)


@dataclass(eq=False)
class StreamSlot:
    """One admitted stream's place in the counts; `release` is idempotent."""

    ledger: StreamLedger
    circuit: object
    link: object
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.ledger._release(self.circuit, self.link)


@dataclass
class StreamLedger:
    """Counts of open exit streams; `admit` says which cap a new one would pass, if any."""

    caps: StreamCaps
    total: int = 0
    by_circuit: dict[object, int] = field(default_factory=dict)
    by_link: dict[object, int] = field(default_factory=dict)

    def admit(self, circuit: object, link: object) -> StreamSlot | str:
        """A slot for a new stream, or the name of the cap it would pass ("circuit", "link", "process")."""
        if self.by_circuit.get(circuit, 0) >= self.caps.per_circuit:
            return "circuit"
        if self.by_link.get(link, 0) >= self.caps.per_link:
            return "link"
        if self.total >= self.caps.per_process:
            return "process"
        self.total += 1
        self.by_circuit[circuit] = self.by_circuit.get(circuit, 0) + 1
        self.by_link[link] = self.by_link.get(link, 0) + 1
        return StreamSlot(self, circuit, link)

    def _release(self, circuit: object, link: object) -> None:
        self.total -= 1
        for table, key in ((self.by_circuit, circuit), (self.by_link, link)):
            left = table[key] - 1
            if left:
                table[key] = left
            else:
                del table[key]
