"""The client's DHT over circuits: the same lookups and crawls, with no UDP socket of its own.

`CircuitDhtProtocol` is the client's DHT protocol with one change: `call` (the only place a
request leaves) hands the RPC to `CircuitDhtChannel`, which sends it as DHT_RPC on a circuit
reserved for DHT traffic and waits for the DHT_ANSWER chunks (wire.dht_rpc).  The last hop
sends it from its own DHT node (runtime.relay.dht_answers).  Everything else (ID proofs, disjoint
paths, verification of every descriptor) runs in the client as before.

Which circuit: while the client knows fewer relays than a full path needs (the first crawl in
bridge mode), a one-hop circuit to the bridge, as Tor fetches its directory from its bridge;
then a full circuit, so that no one relay sees both the client and its lookups.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import umsgpack

from onionmesh.errors import OnionmeshError
from onionmesh.proto.dht_events import DhtAnswerReceived
from onionmesh.proto.rtt import scaled_timeout
from onionmesh.runtime.client.circuit_manager import CircuitHandle, CircuitMgr
from onionmesh.runtime.dht.protocol import WAIT_CEILING, OnionmeshDhtProtocol
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.wire.dht_rpc import AnswerAssembler, DhtRpc, DhtStatus

log = limited(get_logger("onionmesh.dht_circuit"))  # repeats per RPC while no circuit: rate-limited

RPC_TIMEOUT = 5.0  # at least: the last hop's own DHT RPC may wait up to WAIT_CEILING ...
RPC_TIMEOUT_MAX = 30.0  # ... plus the circuit's round trips (rpc_timeout)


def rpc_timeout(circuit_rtt: float) -> float:
    """How long a DHT_RPC may take: the last hop's RPC (at most WAIT_CEILING) plus two circuit
    round trips, at least RPC_TIMEOUT (5 s, enough on any short path), at most 30 s."""
    return scaled_timeout(
        circuit_rtt, rounds=2, base=WAIT_CEILING, floor=RPC_TIMEOUT, ceiling=RPC_TIMEOUT_MAX
    )


FULL_PATH_HOPS = 3
FULL_PATH_RETRY = 60.0  # after a full-length DHT circuit failed, use the bridge alone this long
CONTACTS_RPC = "contacts"


class _DhtIsolation:
    """The isolation key of DHT circuits: equal to no SOCKS key, so no stream ever uses them."""

    def __repr__(self) -> str:
        return "DHT"


DHT_ISOLATION = _DhtIsolation()


class CircuitDhtChannel:
    def __init__(self, mgr: CircuitMgr) -> None:
        self.mgr = mgr
        mgr.dht_answers = self._on_answer
        self._handle: CircuitHandle | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.cycle(range(1, 0x10000))
        self._waiters: dict[tuple[int, int], asyncio.Future[tuple[DhtStatus, bytes]]] = {}
        self._assemblers: dict[int, AnswerAssembler] = {}
        self.stats = {"rpcs": 0, "timeouts": 0, "circuits": 0}
        self._full_failed_at = -FULL_PATH_RETRY

    def _usable(self, handle: CircuitHandle | None) -> bool:
        return handle is not None and handle.closed_reason is None and handle.built_at is not None

    def _full_path_possible(self) -> bool:
        if time.monotonic() - self._full_failed_at < FULL_PATH_RETRY:
            return False
        bridges = self.mgr.first_hops
        others = [r for r in self.mgr.relays() if bridges is None or not bridges.owns(r.identity_pk)]
        return len(others) >= FULL_PATH_HOPS - (1 if bridges is not None else 0)

    async def circuit(self) -> CircuitHandle:
        handle = self._handle
        if self._usable(handle) and (len(handle.path) > 1 or not self._full_path_possible()):  # type: ignore[union-attr]
            return handle  # type: ignore[return-value]
        async with self._lock:
            old = self._handle
            if self._usable(old) and (len(old.path) > 1 or not self._full_path_possible()):  # type: ignore[union-attr]
                return old  # type: ignore[return-value]
            new = None
            if self._full_path_possible():
                hops = max(FULL_PATH_HOPS, min(self.mgr.hops, 8))
                try:
                    new = await self.mgr.build(hops=hops, isolation=DHT_ISOLATION, wait_directory=False)
                except (OSError, TimeoutError, OnionmeshError):
                    self._full_failed_at = time.monotonic()
                    if self.mgr.first_hops is None:
                        raise
            if new is None and self.mgr.first_hops is not None:  # the bridge itself, as last hop
                new = await self.mgr.build(hops=1, isolation=DHT_ISOLATION, wait_directory=False)
            if new is None:
                raise OSError("DHT over circuits needs a bridge or a cached directory of relays")
            self._handle = new
            self.stats["circuits"] += 1
            if self._usable(old) and old is not new and not old.circ.dht_pending:  # type: ignore[union-attr]
                self.mgr.close_circuit(old.number)  # type: ignore[union-attr]
            return new

    def _on_answer(self, handle: CircuitHandle, event: DhtAnswerReceived) -> None:
        assembler = self._assemblers.setdefault(handle.number, AnswerAssembler())
        try:
            done = assembler.feed(event.request_id, event.answer)
        except OnionmeshError:
            done = (DhtStatus.REFUSED, b"")
        if done is None:
            return
        waiter = self._waiters.pop((handle.number, event.request_id), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(done)

    async def rpc(self, address: tuple[str, int], request: bytes) -> tuple[DhtStatus, bytes]:
        """Send one RPC through the DHT circuit; (TIMEOUT, b"") when nothing came back in time."""
        try:
            handle = await self.circuit()
        except (OSError, TimeoutError, OnionmeshError) as exc:
            log.info("no circuit for DHT traffic", error=type(exc).__name__)
            return DhtStatus.TIMEOUT, b""
        rid = next(self._ids)
        while rid in handle.circ.dht_pending:
            rid = next(self._ids)
        future: asyncio.Future[tuple[DhtStatus, bytes]] = asyncio.get_running_loop().create_future()
        key = (handle.number, rid)
        self._waiters[key] = future
        self.stats["rpcs"] += 1
        try:
            handle.circ.dht_rpc(rid, DhtRpc(address[0], address[1], request))
            async with asyncio.timeout(rpc_timeout(handle.circ.rtt_hint)):
                return await future
        except (TimeoutError, OnionmeshError, ValueError):
            self.stats["timeouts"] += 1
            return DhtStatus.TIMEOUT, b""
        finally:
            self._waiters.pop(key, None)
            handle.circ.dht_pending.discard(rid)
            self._assemblers.get(handle.number, AnswerAssembler()).forget(rid)

    async def seed_contacts(self) -> list[tuple[str, int]]:
        """DHT contacts the last hop knows (a bridge client without --bootstrap starts from these)."""
        status, answer = await self.rpc(("0.0.0.0", 1), umsgpack.packb([CONTACTS_RPC, []]))
        if status is not DhtStatus.OK:
            return []
        contacts = parse_contacts(answer)
        if contacts is None:
            self.stats["garbage"] = self.stats.get("garbage", 0) + 1
            log.info("DHT contacts answer was not a list of contacts")
            return []
        return contacts


# What msgpack junk can raise in parse_contacts (tests/runtime/client/test_seed_contacts.py, hypothesis):
# umsgpack's own errors, RecursionError for deeply nested arrays, and the shapes that are not
# (host, port) pairs or whose port is no integer.
CONTACT_JUNK = (umsgpack.UnpackException, RecursionError, TypeError, ValueError, OverflowError)


def parse_contacts(answer: bytes) -> list[tuple[str, int]] | None:
    """The first 16 (host, port) pairs of a contacts answer, or None when it is not one."""
    try:
        return [(str(h), int(p)) for h, p in umsgpack.unpackb(answer)][:16]
    except CONTACT_JUNK:
        return None


class CircuitDhtProtocol(OnionmeshDhtProtocol):
    """The client's DHT protocol, sending through circuits instead of a UDP socket."""

    def __init__(self, *args: Any, channel: CircuitDhtChannel, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channel = channel

    async def call(self, address: tuple[str, int], name: str, args: list[Any]) -> tuple[bool, Any]:
        status, answer = await self.channel.rpc(address, umsgpack.packb([name, list(args)]))
        if status is not DhtStatus.OK:
            self.stats["timeouts" if status is DhtStatus.TIMEOUT else f"rpc_{status.name.lower()}"] += 1
            return False, None
        try:
            return True, umsgpack.unpackb(answer)
        except Exception:  # umsgpack raises many kinds on garbage
            self.stats["garbage"] += 1
            return False, None
