"""The life of each SOCKS request in Tor's terms (control-spec §4.1.2), for the control port's STREAM
events and `stream-status`.

A request gets its stream id when it arrives (NEW, or NEWRESOLVE, on circuit 0) and keeps it over
every attempt: SENTCONNECT / SENTRESOLVE on the circuit it is tried on, DETACHED when it is taken
off that circuit to be tried through another exit, REMAP when the exit's CONNECTED names the
address it reached, SUCCEEDED once the SOCKS client is answered, FAILED when it is given up, and
CLOSED at the end.  Reasons are Tor's: `REASON=END REMOTE_REASON=<the exit's END reason>` for what
the far end said, TIMEOUT, DESTROY (the circuit went away), NOROUTE (no exit may be used), MISC.

Targets are the destinations the local user asked for: they go to the controller (the local user,
as in Tor), never to the logs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from onionmesh.wire.relay_msg import EndReason

MAX_LIVE = 65536  # streams tracked at once (the SOCKS listener's own limit is far lower)


@dataclass
class StreamRecord:
    id: int
    target: str  # host:port as asked; the exit's address after REMAP
    source: str  # the SOCKS client's address:port
    isolation: object  # (username, password) of the SOCKS request
    resolve: bool = False
    circuit: object | None = None  # the CircuitHandle it is on, None before SENTCONNECT
    circuit_number: int = 0
    status: str = "NEW"
    purpose: str = "USER"
    extra: dict[str, str] = field(default_factory=dict)  # REASON=, REMOTE_REASON=, SOURCE=


StatusListener = Callable[[StreamRecord], None]


def target_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class StreamStatus:
    """The live streams and the listeners told of each change (the Tor control port)."""

    def __init__(self) -> None:
        self.live: dict[int, StreamRecord] = {}
        self.listeners: list[StatusListener] = []
        self._ids = itertools.count(1)

    def _set(self, record: StreamRecord, status: str, **extra: str) -> None:
        record.status = status
        record.extra = extra
        for listener in list(self.listeners):
            listener(record)

    def new(
        self, host: str, port: int, source: str, isolation: object, *, resolve: bool = False
    ) -> StreamRecord:
        record = StreamRecord(
            next(self._ids), target_text(host, 0 if resolve else port), source, isolation, resolve
        )
        if len(self.live) < MAX_LIVE:
            self.live[record.id] = record
        self._set(record, "NEWRESOLVE" if resolve else "NEW")
        return record

    def sent(self, record: StreamRecord, handle: object, number: int) -> None:
        record.circuit, record.circuit_number = handle, number
        self._set(record, "SENTRESOLVE" if record.resolve else "SENTCONNECT")

    def remap(self, record: StreamRecord, address: str) -> None:
        """The exit's CONNECTED names the address it reached: Tor's REMAP ... SOURCE=EXIT, sent
        whenever the exit names one (even the address asked for), as Tor's remap_event_helper."""
        port = int(record.target.rsplit(":", 1)[1])
        record.target = target_text(address, port)
        self._set(record, "REMAP", SOURCE="EXIT")

    def succeeded(self, record: StreamRecord) -> None:
        self._set(record, "SUCCEEDED")

    def detached(self, record: StreamRecord, reason: str, remote: str | None = None) -> None:
        """Taken off its circuit to be tried elsewhere (only when it had been sent on one)."""
        if record.circuit is None:
            return
        self._set(record, "DETACHED", **_reasons(reason, remote))
        record.circuit, record.circuit_number = None, 0

    def failed(self, record: StreamRecord, reason: str, remote: str | None = None) -> None:
        """Given up: FAILED, then CLOSED, with the same reasons (as Tor sends them)."""
        reasons = _reasons(reason, remote)
        self._set(record, "FAILED", **reasons)
        self._close(record, reasons)

    def abandon(self, record: StreamRecord) -> None:
        """A request that ended without FAILED or a stream (an error, a cancellation): FAILED MISC."""
        if self.live.get(record.id) is record:
            self.failed(record, "MISC")

    def closed(self, record: StreamRecord, reason: str = "DONE") -> None:
        self._close(record, {"REASON": reason})

    def _close(self, record: StreamRecord, reasons: dict[str, str]) -> None:
        if self.live.pop(record.id, None) is None and record.status == "CLOSED":
            return
        self._set(record, "CLOSED", **reasons)


def source_address(peer: object) -> str:
    """A socket's peername as Tor's SOURCE_ADDR= (address:port)."""
    if not isinstance(peer, tuple) or len(peer) < 2:
        return "0.0.0.0:0"
    return target_text(str(peer[0]), int(peer[1]))


def end_reasons(reason: EndReason) -> tuple[str, str | None]:
    """Tor's REASON / REMOTE_REASON for a stream the far end ENDed, or whose circuit went (DESTROY)."""
    if reason is EndReason.DESTROY:
        return "DESTROY", None
    return "END", reason.name


def _reasons(reason: str, remote: str | None) -> dict[str, str]:
    return {"REASON": reason, **({"REMOTE_REASON": remote} if remote else {})}
