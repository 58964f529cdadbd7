"""The last hop's side of directory fetches: answer a DIR_GET from the source's cached documents.

Why here and not in the source: this is where the limits of a circuit's requests live.  Every
answer is a cached signed document (runtime.relay.dir_source), cut into DIR_DATA chunks; a
circuit over its request budget, or a source over its byte budget (directory.dir_budget), gets
BUSY in one cell, never a queue, so a flood of clients cannot crowd out relaying.  DIR_GET only
arrives on a circuit, after a link handshake: no answer goes to an unproven address.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from onionmesh.directory.dir_budget import DirBudget
from onionmesh.errors import RemoteProtocolError
from onionmesh.runtime.relay.circuit_entry import RelayCircuitEntry
from onionmesh.wire.dir_msg import DirGet, DirStatus, data_bodies
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage


class DocSource(Protocol):
    def doc(self, kind: int, epoch: int = 0, from_digest: bytes = ..., bucket: int = 0) -> bytes | None: ...


class DirAnswers:
    def __init__(
        self,
        source: Callable[[], DocSource | None],
        budget: DirBudget,
        count: Callable[[str, int], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.budget = budget
        self.count = count
        self.clock = clock

    def register(
        self, handlers: dict[RelayCommand, Callable[[RelayCircuitEntry, RelayMessage], None]]
    ) -> None:
        handlers[RelayCommand.DIR_GET] = self.handle

    def handle(self, entry: RelayCircuitEntry, msg: RelayMessage) -> None:
        status, doc = self._answer(entry, msg)
        self.count(f"dir_get_{status.name.lower()}", 1)
        for body in data_bodies(status, doc):
            entry.circ.send_message(RelayCommand.DIR_DATA, body, msg.stream_id)

    def _answer(self, entry: RelayCircuitEntry, msg: RelayMessage) -> tuple[DirStatus, bytes]:
        try:
            get = DirGet.decode(msg.body)
        except RemoteProtocolError:
            return DirStatus.REFUSED, b""
        source = self.source()
        if source is None:
            return DirStatus.REFUSED, b""
        now = self.clock()
        if not self.budget.request(id(entry), get.kind, now):
            return DirStatus.BUSY, b""
        doc = source.doc(get.kind, get.epoch, get.from_digest, get.bucket)
        if doc is None:
            return DirStatus.NOT_FOUND, b""
        if not self.budget.spend(len(doc), now):
            return DirStatus.BUSY, b""
        self.budget.served(id(entry), get.kind, now)
        self.count("dir_bytes_served", len(doc))
        return DirStatus.OK, doc


__all__ = ["DirAnswers"]
