"""onionmesh's Kademlia wire protocol: the `kademlia` package's protocol, hardened.

Subclasses `kademlia.protocol.KademliaProtocol` (and so rpcudp's `RPCProtocol`) and closes
the holes read in the package (docs/protocol.md, "Directory"):

* garbage datagrams and malformed arguments are dropped and counted, never raised;
* no amplification: an answer is never larger than the request it answers, so requesters pad
  their requests to the size of the answer they expect;
* per-source-address token buckets limit requests;
* a dead contact costs `WAIT_TIMEOUT` (0.5 s), not 5 s, and answers are accepted only from the
  address the request went to;
* a node enters the routing table only after it proved its ID (`descriptor` RPC: its signed
  descriptor, whose identity key hashes to the node ID, and a signature over our nonce), and at
  most `MAX_PER_SUBNET_PER_BUCKET` nodes of one subnet share a bucket;
* STORE goes through the validating `DescriptorStore`; keys handed to new nodes are not digested
  twice (the package's `welcome_if_new` bug).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import umsgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from onionmesh.directory.descriptor import RelayDescriptor, decode_and_verify
from onionmesh.directory.dht_records import (
    NODE_ID_LEN,
    NONCE_LEN,
    DescriptorStore,
    StoreResult,
    subnet_of,
    verify_hello,
)
from onionmesh.errors import OnionmeshError
from onionmesh.runtime.ratelimit import TokenBuckets

WAIT_TIMEOUT = 0.5
MAX_DATAGRAM = 4096
RATE_PER_SECOND = 200.0
RATE_BURST = 400.0
MAX_RATE_SOURCES = 4096
MAX_VERIFIED = 8192
MAX_PER_SUBNET_PER_BUCKET = 2
# Requests are padded to the size of the answer they may get (answers never exceed requests).
PAD_SMALL = 96
PAD_NODES = 1024
PAD_VALUE = 2400
RPCS = frozenset({"ping", "store", "find_node", "find_value", "descriptor"})


def _is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == NODE_ID_LEN


def _parse_nodes(value: object, limit: int) -> list[Node]:
    """A peer's list of (id, ip, port) contacts, with anything malformed dropped."""
    nodes: list[Node] = []
    if not isinstance(value, list | tuple):
        return nodes
    for item in value[:limit]:
        if not isinstance(item, list | tuple) or len(item) != 3:
            continue
        node_id, ip, port = item
        if (
            not _is_id(node_id)
            or not isinstance(ip, str)
            or not isinstance(port, int)
            or not 0 < port < 65536
        ):
            continue
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            continue
        nodes.append(Node(node_id, ip, port))
    return nodes


class ExactRoutingTable(RoutingTable):
    """The package's table, with a `find_neighbors` that really returns the k closest contacts.

    The package's `TableTraverser` stops early (after one bucket to the left when none is to the
    right, or at an empty bucket), so it often returns fewer contacts than it holds, sometimes
    none: lookups then start from nothing. Here: the k nearest of all contacts, by XOR distance.
    """

    def find_neighbors(self, node: Node, k: int | None = None, exclude: Node | None = None) -> list[Node]:
        k = k or self.ksize
        candidates = (
            n
            for bucket in self.buckets
            for n in bucket.nodes.values()
            if n.id != node.id and (exclude is None or not n.same_home_as(exclude))
        )
        return heapq.nsmallest(k, candidates, key=node.distance_to)


class OnionmeshDhtProtocol(KademliaProtocol):
    def __init__(
        self,
        source_node: Node,
        storage: DescriptorStore,
        ksize: int,
        own_descriptor: Callable[[], tuple[bytes, Callable[[bytes], bytes]] | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = ExactRoutingTable(self, ksize, source_node)
        self._wait_timeout = WAIT_TIMEOUT
        self.storage: DescriptorStore = storage
        self.own_descriptor = own_descriptor
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self.limits = TokenBuckets(RATE_PER_SECOND, RATE_BURST, MAX_RATE_SOURCES)
        self.verified: OrderedDict[bytes, tuple[tuple[str, int], RelayDescriptor]] = OrderedDict()
        self._verifying: dict[bytes, asyncio.Task[RelayDescriptor | None]] = {}
        self._sent_to: dict[bytes, tuple[str, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- datagrams ---------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 22 or len(data) > MAX_DATAGRAM or data[:1] not in (b"\x00", b"\x01"):
            self.stats["garbage"] += 1
            return
        if data[:1] == b"\x00" and not self.limits.allow(addr[0], time.monotonic()):
            self.stats["rate_limited"] += 1
            return
        self._spawn(self._solve_datagram(data, addr))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _solve_datagram(self, datagram: bytes, address: tuple[str, int]) -> None:
        msg_id = datagram[1:21]
        try:
            data = umsgpack.unpackb(datagram[21:])
        except Exception:  # umsgpack raises many kinds on garbage
            self.stats["garbage"] += 1
            return
        try:
            if datagram[:1] == b"\x00":
                self._answer(msg_id, data, address, len(datagram))
            else:
                self._accept_response(msg_id, data, address)
        except Exception:  # a bug must cost one datagram, never the node
            self.stats["internal_error"] += 1

    def _answer(self, msg_id: bytes, data: object, address: tuple[str, int], request_len: int) -> None:
        if not (
            isinstance(data, list)
            and len(data) == 2
            and isinstance(data[0], str)
            and data[0] in RPCS
            and isinstance(data[1], list)
        ):
            self.stats["malformed"] += 1
            return
        name, args = data
        try:
            response = getattr(self, f"rpc_{name}")(address, *args)
        except (TypeError, ValueError, OnionmeshError):
            self.stats["malformed"] += 1
            return
        reply = b"\x01" + msg_id + umsgpack.packb(response)
        if len(reply) > request_len and isinstance(response, list):  # answer no larger than the request
            while response and len(reply) > request_len:
                response = response[:-1]
                reply = b"\x01" + msg_id + umsgpack.packb(response)
        if len(reply) > request_len:
            self.stats["refused_amplification"] += 1
            return
        self.stats[f"rpc_{name}"] += 1
        if self.transport is not None:
            self.transport.sendto(reply, address)

    def _accept_response(self, msg_id: bytes, data: object, address: tuple[str, int]) -> None:
        expected = self._sent_to.get(msg_id)
        if expected is None or msg_id not in self._outstanding:
            self.stats["unexpected_response"] += 1
            return
        if (str(ipaddress.ip_address(address[0])), address[1]) != expected:
            self.stats["spoofed_response"] += 1
            return
        del self._sent_to[msg_id]
        future, timeout = self._outstanding.pop(msg_id)
        timeout.cancel()
        if not future.done():
            future.set_result((True, data))

    def _timeout(self, msg_id: bytes) -> None:
        self._sent_to.pop(msg_id, None)
        entry = self._outstanding.pop(msg_id, None)
        self.stats["timeouts"] += 1
        if entry is not None and not entry[0].done():
            entry[0].set_result((False, None))

    async def call(
        self, address: tuple[str, int], name: str, args: list[Any], pad_to: int
    ) -> tuple[bool, Any]:
        """Send one request padded to `pad_to` bytes; (False, None) on timeout."""
        if self.transport is None:
            return False, None
        msg_id = os.urandom(20)
        body = umsgpack.packb([name, [*args, b""]])
        pad = max(0, pad_to - 21 - len(body) - 3)
        datagram = b"\x00" + msg_id + umsgpack.packb([name, [*args, bytes(pad)]])
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        self._outstanding[msg_id] = (future, loop.call_later(self._wait_timeout, self._timeout, msg_id))
        self._sent_to[msg_id] = (str(ipaddress.ip_address(address[0])), address[1])
        self.transport.sendto(datagram, address)
        return await future

    # --- RPCs we answer (every argument checked; a trailing padding argument is ignored) ------
    def rpc_ping(self, sender: tuple[str, int], nodeid: object, _pad: bytes = b"") -> bytes:
        if not _is_id(nodeid):
            raise ValueError("bad node id")
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return self.source_node.id

    def rpc_store(
        self, sender: tuple[str, int], nodeid: object, key: object, value: object, _pad: bytes = b""
    ) -> bool:
        if not _is_id(nodeid):
            raise ValueError("bad node id")
        result = self.storage.offer(key, value)
        self.stats[f"store_{result.value}"] += 1
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return result in (StoreResult.STORED, StoreResult.ALREADY_HELD)

    def rpc_find_node(
        self, sender: tuple[str, int], nodeid: object, key: object, _pad: bytes = b""
    ) -> list[Any]:
        if not _is_id(nodeid) or not _is_id(key):
            raise ValueError("bad id")
        source = Node(nodeid, sender[0], sender[1])
        self.welcome_if_new(source)
        neighbors = self.router.find_neighbors(Node(key), exclude=source)
        return [list(n) for n in neighbors]

    def rpc_find_value(self, sender: tuple[str, int], nodeid: object, key: object, _pad: bytes = b"") -> Any:
        if not _is_id(nodeid) or not _is_id(key):
            raise ValueError("bad id")
        value = self.storage.get(key)
        if value is None:
            return self.rpc_find_node(sender, nodeid, key)
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return {"value": value}

    def rpc_descriptor(self, sender: tuple[str, int], nonce: object, _pad: bytes = b"") -> Any:
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
        ok, result = await self.call(
            (node_to_ask.ip, node_to_ask.port), "ping", [self.source_node.id], PAD_SMALL
        )
        return self.handle_call_response((ok and _is_id(result), result), node_to_ask)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> tuple[bool, Any]:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, result = await self.call(address, "store", [self.source_node.id, key, value], PAD_SMALL)
        return self.handle_call_response((ok, result is True), node_to_ask)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, result = await self.call(address, "find_node", [self.source_node.id, node_to_find.id], PAD_NODES)
        nodes = [list(n) for n in _parse_nodes(result, self.router.ksize)] if ok else None
        return self.handle_call_response((ok, nodes), node_to_ask)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, result = await self.call(address, "find_value", [self.source_node.id, node_to_find.id], PAD_VALUE)
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
        ok, result = await self.call(address, "descriptor", [nonce], PAD_VALUE)
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
        for future, timeout in self._outstanding.values():
            timeout.cancel()
            with contextlib.suppress(asyncio.InvalidStateError):
                future.set_result((False, None))
        self._outstanding.clear()
