"""onionmesh's Kademlia wire protocol: the `kademlia` package's protocol, hardened.

Subclasses `kademlia.protocol.KademliaProtocol` (and so rpcudp's `RPCProtocol`) and closes
the holes read in the package (docs/protocol.md, "Directory"):

* everything about datagrams (framing and parts of at most 1,200 bytes, address tokens against
  reflection and amplification, rate limits, RTT-derived timeouts) is runtime.dht.datagrams';
* a node enters the routing table only after it proved its ID (`descriptor` RPC: its signed
  descriptor, whose identity key hashes to the node ID, and a signature over our nonce), and at
  most `MAX_PER_SUBNET_PER_BUCKET` nodes of one subnet share a bucket;
* STORE goes through the validating `DhtStorage` (relay descriptors and onion-service records,
  told apart by the value); keys handed to new nodes are not digested
  twice (the package's `welcome_if_new` bug).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kademlia.node import Node

from onionmesh.directory.descriptor import RelayDescriptor, decode_and_verify
from onionmesh.directory.dht_records import NONCE_LEN, subnet_of, verify_hello
from onionmesh.directory.dht_storage import DhtStorage
from onionmesh.errors import OnionmeshError
from onionmesh.runtime.dht.datagrams import (  # re-exported: tests and benches read them here
    MAX_RATE_SOURCES,
    RATE_BURST,
    RATE_PER_SECOND,
    WAIT_CEILING,
    WAIT_FLOOR,
    WAIT_INITIAL,
    WAIT_TIMEOUT,
    DatagramRpc,
)
from onionmesh.runtime.dht.routing import ExactRoutingTable, _is_id, _parse_nodes

MAX_VERIFIED = 8192
MAX_PER_SUBNET_PER_BUCKET = 2
RPCS = frozenset({"ping", "store", "find_node", "find_value", "descriptor"})


class OnionmeshDhtProtocol(DatagramRpc):
    RPCS = RPCS

    def __init__(
        self,
        source_node: Node,
        storage: DhtStorage,
        ksize: int,
        own_descriptor: Callable[[], tuple[bytes, Callable[[bytes], bytes]] | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = ExactRoutingTable(self, ksize, source_node)
        self.storage: DhtStorage = storage
        self.own_descriptor = own_descriptor
        self.clock = clock
        self.verified: OrderedDict[bytes, tuple[tuple[str, int], RelayDescriptor]] = OrderedDict()
        self._verifying: dict[bytes, asyncio.Task[RelayDescriptor | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Told of every relay that proves its ID to us (a directory source fetches its heartbeat).
        self.on_verified: Callable[[RelayDescriptor], None] | None = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- RPCs we answer (only for proven sources; every argument checked) ----------------------
    def rpc_ping(self, sender: tuple[str, int], nodeid: object) -> bytes:
        if not _is_id(nodeid):
            raise ValueError("bad node id")
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return self.source_node.id

    def rpc_store(self, sender: tuple[str, int], nodeid: object, key: object, value: object) -> bool:
        if not _is_id(nodeid):
            raise ValueError("bad node id")
        result = self.storage.offer(key, value)
        self.stats[f"store_{result.value}"] += 1
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return self.storage.accepted(result)

    def rpc_find_node(self, sender: tuple[str, int], nodeid: object, key: object) -> list[Any]:
        if not _is_id(nodeid) or not _is_id(key):
            raise ValueError("bad id")
        source = Node(nodeid, sender[0], sender[1])
        self.welcome_if_new(source)
        neighbors = self.router.find_neighbors(Node(key), exclude=source)
        return [list(n) for n in neighbors]

    def rpc_find_value(self, sender: tuple[str, int], nodeid: object, key: object) -> Any:
        if not _is_id(nodeid) or not _is_id(key):
            raise ValueError("bad id")
        value = self.storage.get(key)
        if value is None:
            return self.rpc_find_node(sender, nodeid, key)
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return {"value": value}

    def rpc_descriptor(self, sender: tuple[str, int], nonce: object) -> Any:
        """Prove our node ID: our signed descriptor and a signature over the asker's nonce."""
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_LEN:
            raise ValueError("bad nonce")
        own = self.own_descriptor()
        if own is None:
            return None  # a client: it stores nothing and is never a routing contact
        raw, sign = own
        return [raw, sign(nonce)]

    # --- calls the package's crawlers make ---------------------------------------------------
    async def call_ping(self, node_to_ask: Node) -> tuple[bool, Any]:
        ok, result = await self.call((node_to_ask.ip, node_to_ask.port), "ping", [self.source_node.id])
        return self.handle_call_response((ok and _is_id(result), result), node_to_ask)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> tuple[bool, Any]:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, result = await self.call(address, "store", [self.source_node.id, key, value])
        return self.handle_call_response((ok, result is True), node_to_ask)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, result = await self.call(address, "find_node", [self.source_node.id, node_to_find.id])
        nodes = [list(n) for n in _parse_nodes(result, self.router.ksize)] if ok else None
        return self.handle_call_response((ok, nodes), node_to_ask)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, result = await self.call(address, "find_value", [self.source_node.id, node_to_find.id])
        if ok and isinstance(result, dict):
            value = result.get("value")
            clean: Any = {"value": value} if isinstance(value, bytes) else []
        else:
            clean = [list(n) for n in _parse_nodes(result, self.router.ksize)] if ok else None
        return self.handle_call_response((ok, clean), node_to_ask)

    async def fetch_descriptor(
        self, address: tuple[str, int], node_id: bytes | None
    ) -> RelayDescriptor | None:
        """Ask a node to prove its ID; its verified descriptor, or None."""
        nonce = os.urandom(NONCE_LEN)
        ok, result = await self.call(address, "descriptor", [nonce])
        if (
            not ok
            or not isinstance(result, list)
            or len(result) != 2
            or not all(isinstance(x, bytes) for x in result)
        ):
            return None
        try:
            desc = decode_and_verify(result[0], self.clock())
            if node_id is None:
                from onionmesh.directory.dht_records import node_id_for

                node_id = node_id_for(desc.identity_pk)
            verify_hello(desc, node_id, nonce, result[1])
        except OnionmeshError:
            self.stats["bad_hello"] += 1
            return None
        contact = desc.dht_contact
        if contact is None or (str(ipaddress.ip_address(contact[0])), contact[1]) != (
            str(ipaddress.ip_address(address[0])),
            address[1],
        ):
            self.stats["bad_hello"] += 1  # a descriptor must name the address it answers from
            return None
        self._remember(node_id, address, desc)
        return desc

    def _remember(self, node_id: bytes, address: tuple[str, int], desc: RelayDescriptor) -> None:
        self.verified.pop(node_id, None)
        self.verified[node_id] = ((str(ipaddress.ip_address(address[0])), address[1]), desc)
        while len(self.verified) > MAX_VERIFIED:
            self.verified.popitem(last=False)
        if self.on_verified is not None:
            self.on_verified(desc)

    # --- the routing table admits only proven nodes --------------------------------------------
    def welcome_if_new(self, node: Node) -> None:
        if node.id == self.source_node.id or not self.router.is_new_node(node):
            return
        known = self.verified.get(node.id)
        if known is not None and known[0] == (str(ipaddress.ip_address(node.ip)), node.port):
            self._admit(node)
        elif node.id not in self._verifying and len(self._verifying) < 256:
            task = asyncio.ensure_future(self._verify_then_admit(node))
            self._verifying[node.id] = task
            task.add_done_callback(lambda _t, nid=node.id: self._verifying.pop(nid, None))

    async def _verify_then_admit(self, node: Node) -> RelayDescriptor | None:
        desc = await self.fetch_descriptor((node.ip, node.port), node.id)
        if desc is not None and self.router.is_new_node(node):
            self._admit(node)
        return desc

    def _admit(self, node: Node) -> None:
        bucket = self.router.buckets[self.router.get_bucket_for(node)]
        subnet = subnet_of(node.ip)
        members = bucket.get_nodes() + list(bucket.replacement_nodes.values())  # waiting ones count too
        if sum(1 for n in members if subnet_of(n.ip) == subnet) >= MAX_PER_SUBNET_PER_BUCKET:
            self.stats["subnet_limited"] += 1
            return
        for key, value in self.storage:  # hand the new node the values it should now hold
            keynode = Node(key)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                new_node_close = node.distance_to(keynode) < neighbors[-1].distance_to(keynode)
                this_closest = self.source_node.distance_to(keynode) < neighbors[0].distance_to(keynode)
            if not neighbors or (new_node_close and this_closest):
                self._spawn(self.call_store(node, key, value))
        self.router.add_contact(node)

    def handle_call_response(self, result: tuple[bool, Any], node: Node) -> tuple[bool, Any]:
        """As the package's, but a timeout removes a contact only if it is the one we know at that address.

        Otherwise a peer could name a genuine node's ID with a dead address and have it evicted.
        """
        if not result[0]:
            bucket = self.router.buckets[self.router.get_bucket_for(node)]
            known = bucket.nodes.get(node.id) or bucket.replacement_nodes.get(node.id)
            if known is not None and known.same_home_as(node):
                self.router.remove_contact(node)
            return result
        self.welcome_if_new(node)
        return result

    def close(self) -> None:
        for task in list(self._tasks) + list(self._verifying.values()):
            task.cancel()
        self.close_requests()


__all__ = [
    "MAX_RATE_SOURCES",
    "RATE_BURST",
    "RATE_PER_SECOND",
    "WAIT_CEILING",
    "WAIT_FLOOR",
    "WAIT_INITIAL",
    "WAIT_TIMEOUT",
    "OnionmeshDhtProtocol",
]
