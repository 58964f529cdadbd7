"""The last hop's side of DHT over circuits: send a client's DHT RPC from this relay's DHT node.

A client in bridge mode (or with `--dht-over-circuits`) sends no UDP; it asks the last hop of a
circuit to send each RPC for it (wire.dht_rpc).  This is not a UDP proxy:

* only the RPCs a client needs (`ping`, `find_node`, `find_value`, `descriptor`), with at most
  `MAX_ARGS` arguments of at most 64 bytes each, and `store` of an onion-service record only
  (a service publishes through circuits so that no storing node sees its address): the record
  must pass every storing node's check here first (directory.hs_placement), so this is never a
  way to write anything else into the DHT; all sent from this relay's own DHT node (address
  token and all, runtime.dht.validation);
* only to DHT contacts this relay knows: itself, its routing table, nodes that proved their IDs
  to it, its bootstrap contacts, and contacts that DHT nodes named in answers relayed on the same
  circuit (which a crawl needs); anything else is refused;
* at most `RATE` RPCs a second per circuit (burst `BURST`) and `MAX_IN_FLIGHT` at once.

The node ID in an RPC's arguments is replaced by this relay's own, so DHT nodes never see the
client's; an answer is at most one datagram (4 KiB), returned in DHT_ANSWER chunks.
"""

from __future__ import annotations

import ipaddress
import time
import weakref
from collections.abc import Callable
from typing import Any

import umsgpack

from onionmesh.directory.dht_storage import is_hs_record
from onionmesh.directory.hs_placement import HsStoreResult, check_for_storage
from onionmesh.proto.dht_events import DhtRpcRequested
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.dht.routing import _parse_nodes
from onionmesh.runtime.ratelimit import TokenBuckets
from onionmesh.runtime.safelog import get_logger
from onionmesh.wire.dht_rpc import MAX_ANSWER, DhtStatus, answer_bodies

log = get_logger("onionmesh.dht_relay")

RATE = 100.0
BURST = 400.0
MAX_IN_FLIGHT = 64
MAX_ARGS = 3
MAX_LEARNED = 4096  # contacts remembered per circuit from answers relayed on it
CLIENT_RPCS = frozenset({"ping", "find_node", "find_value", "descriptor"})
STORE_RPC = "store"  # of onion-service records only (see _parse)
CONTACTS_RPC = "contacts"  # not a DHT RPC: "which DHT contacts do you know?" (a bridge client's seeds)
MAX_SEEDS = 16


def _norm(host: str, port: int) -> tuple[str, int]:
    return str(ipaddress.ip_address(host)), port


class DhtRpcService:
    def __init__(
        self,
        dht: DhtNode,
        bootstrap: Callable[[], tuple[tuple[str, int], ...]],
        own_contact: Callable[[], tuple[str, int] | None] = lambda: None,
    ) -> None:
        self.dht = dht
        self.bootstrap = bootstrap
        self.own_contact = own_contact  # the DHT contact in our published descriptor, if any
        self._budget = TokenBuckets(RATE, BURST, 65536)
        self._in_flight = 0
        self._learned: weakref.WeakKeyDictionary[object, set[tuple[str, int]]] = weakref.WeakKeyDictionary()
        self.stats = {"dht_rpc_ok": 0, "dht_rpc_refused": 0, "dht_rpc_timeout": 0, "dht_rpc_limited": 0}

    def _known(self, circuit: object) -> set[tuple[str, int]]:
        protocol = self.dht.protocol
        known = {_norm(*a) for a in self.bootstrap()}
        if protocol is not None:
            own = self.own_contact()
            if own is not None:
                known.add(_norm(*own))  # a crawl asks every node, this one included
            known |= {_norm(n.ip, n.port) for n in protocol.router.find_neighbors(self.dht.node, k=10_000)}
            known |= {addr for addr, _desc in protocol.verified.values()}
        return known | self._learned.get(circuit, set())

    def _learn(self, circuit: object, answer: Any) -> None:
        if isinstance(answer, list):
            learned = self._learned.setdefault(circuit, set())
            for node in _parse_nodes(answer, 64):
                if len(learned) < MAX_LEARNED:
                    learned.add(_norm(node.ip, node.port))

    def _parse(self, request: bytes) -> tuple[str, list[bytes]]:
        data = umsgpack.unpackb(request)
        if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], str)):
            raise ValueError("not [name, args]")
        name, args = data
        if name not in CLIENT_RPCS and name not in (CONTACTS_RPC, STORE_RPC):
            raise ValueError("not an RPC a client may send")
        if not isinstance(args, list) or len(args) > MAX_ARGS:
            raise ValueError("bad arguments")
        if name == STORE_RPC and len(args) == 3 and is_hs_record(args[2]):
            short, record = args[:2], args[2]
            if isinstance(check_for_storage(args[1], record, self.dht.clock()), HsStoreResult):
                raise ValueError("not a valid onion-service record for this key")
        else:
            short = args
            if name not in CLIENT_RPCS and name != CONTACTS_RPC:
                raise ValueError("not an RPC a client may send")
        if not all(isinstance(a, bytes) and len(a) <= 64 for a in short):
            raise ValueError("bad arguments")
        return name, args

    async def answer(self, circuit: object, event: DhtRpcRequested) -> list[bytes]:
        """The DHT_ANSWER bodies for one request (never raises for what a client sends)."""
        if not self._budget.allow(str(id(circuit)), time.monotonic()) or self._in_flight >= MAX_IN_FLIGHT:
            self.stats["dht_rpc_limited"] += 1
            return answer_bodies(DhtStatus.RATE_LIMITED)
        try:
            name, args = self._parse(event.rpc.request)
            address = _norm(event.rpc.host, event.rpc.port)
        except Exception:  # umsgpack raises many kinds on garbage
            self.stats["dht_rpc_refused"] += 1
            return answer_bodies(DhtStatus.REFUSED)
        protocol = self.dht.protocol
        if name == CONTACTS_RPC:
            seeds = sorted(self._known(circuit))[:MAX_SEEDS]
            return answer_bodies(DhtStatus.OK, umsgpack.packb([list(s) for s in seeds]))
        if protocol is None or address not in self._known(circuit):
            self.stats["dht_rpc_refused"] += 1
            return answer_bodies(DhtStatus.REFUSED)
        if name != "descriptor" and args:
            args = [self.dht.node.id, *args[1:]]  # DHT nodes see this relay's node ID, not the client's
        self._in_flight += 1
        try:
            ok, result = await protocol.call(address, name, args)
        except (TimeoutError, OSError):
            ok, result = False, None
        finally:
            self._in_flight -= 1
        if not ok:
            self.stats["dht_rpc_timeout"] += 1
            return answer_bodies(DhtStatus.TIMEOUT)
        packed = umsgpack.packb(result)
        if len(packed) > MAX_ANSWER:
            self.stats["dht_rpc_refused"] += 1
            return answer_bodies(DhtStatus.REFUSED)
        self._learn(circuit, result)
        self.stats["dht_rpc_ok"] += 1
        return answer_bodies(DhtStatus.OK, packed)
