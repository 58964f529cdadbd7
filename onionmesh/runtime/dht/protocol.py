"""onionmesh's Kademlia wire protocol: the `kademlia` package's protocol, hardened.

Subclasses `kademlia.protocol.KademliaProtocol` (and so rpcudp's `RPCProtocol`) and closes
the holes read in the package (docs/protocol.md, "Directory"):

* garbage datagrams and malformed arguments are dropped and counted, never raised;
* no reflection or amplification: a request does nothing but earn a RETRY (shorter than any
  request) until its source has echoed an address token (wire.dht_datagram,
  runtime.dht.validation); only then is it answered, verified or admitted, and every byte sent
  to an unproven address is counted against what it sent;
* per-source-address token buckets limit requests;
* a dead contact costs `WAIT_TIMEOUT` (0.5 s), not 5 s, and answers are accepted only from the
  address the request went to;
* a node enters the routing table only after it proved its ID (`descriptor` RPC: its signed
  descriptor, whose identity key hashes to the node ID, and a signature over our nonce), and at
  most `MAX_PER_SUBNET_PER_BUCKET` nodes of one subnet share a bucket;
* STORE goes through the validating `DhtStorage` (relay descriptors and onion-service records,
  told apart by the value); keys handed to new nodes are not digested
  twice (the package's `welcome_if_new` bug).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import umsgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from onionmesh.directory.descriptor import RelayDescriptor, decode_and_verify
from onionmesh.directory.dht_records import NONCE_LEN, subnet_of, verify_hello
from onionmesh.directory.dht_storage import DhtStorage
from onionmesh.errors import OnionmeshError
from onionmesh.runtime.dht.routing import ExactRoutingTable, _is_id, _parse_nodes
from onionmesh.runtime.dht.validation import Address, AddressCheck, norm
from onionmesh.runtime.ratelimit import TokenBuckets
from onionmesh.wire.dht_datagram import MSG_ID_LEN, NO_TOKEN, DhtDatagram, Kind, decode_datagram

WAIT_TIMEOUT = 0.5
RATE_PER_SECOND = 200.0
RATE_BURST = 400.0
MAX_RATE_SOURCES = 4096
MAX_VERIFIED = 8192
MAX_PER_SUBNET_PER_BUCKET = 2
RPCS = frozenset({"ping", "store", "find_node", "find_value", "descriptor"})
_RETRY = object()  # the result of a request answered with RETRY


class OnionmeshDhtProtocol(KademliaProtocol):
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
        self._wait_timeout = WAIT_TIMEOUT
        self.storage: DhtStorage = storage
        self.own_descriptor = own_descriptor
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self.limits = TokenBuckets(RATE_PER_SECOND, RATE_BURST, MAX_RATE_SOURCES)
        self.verified: OrderedDict[bytes, tuple[tuple[str, int], RelayDescriptor]] = OrderedDict()
        self._verifying: dict[bytes, asyncio.Task[RelayDescriptor | None]] = {}
        self._sent_to: dict[bytes, Address] = {}
        self.address_check = AddressCheck()
        self._tasks: set[asyncio.Task[Any]] = set()
        # RPCs added by other roles (runtime.dht.dir_rpc: a directory source's): name -> handler
        # called as handler(sender, *args); raising TypeError/ValueError/OnionmeshError = malformed.
        self.extra_rpcs: dict[str, Callable[..., Any]] = {}

    # --- datagrams ---------------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._received(data, norm(addr))
        except Exception:  # a bug must cost one datagram, never the node
            self.stats["internal_error"] += 1

    def _received(self, data: bytes, address: Address) -> None:
        now = time.monotonic()
        check = self.address_check
        try:
            datagram = decode_datagram(data)
        except ValueError:
            self.stats["garbage"] += 1
            check.count_received(address, len(data), now)
            return
        if datagram.kind is not Kind.REQUEST:
            self._accept_response(datagram, address, now)
            return
        if not self.limits.allow(address[0], now):
            self.stats["rate_limited"] += 1
            check.count_received(address, len(data), now)
            return
        if not check.check(address, datagram.token, now):
            # Unproven source: no work at all, only a RETRY (37 bytes, shorter than any request).
            check.count_received(address, len(data), now)
            self.stats["retry_sent"] += 1
            self._reply(Kind.RETRY, datagram.msg_id, b"", address, now)
            return
        self._answer(datagram.msg_id, datagram.body, address, now)

    def _reply(self, kind: Kind, msg_id: bytes, body: bytes, address: Address, now: float) -> None:
        """Send a RESPONSE or RETRY; never more to an unproven address than it sent us."""
        try:
            data = DhtDatagram(kind, msg_id, self.address_check.mint(address, now), body).encode()
        except ValueError:  # an answer too long for one datagram
            self.stats["refused_too_long"] += 1
            return
        if not self.address_check.may_answer(address, len(data), now):
            self.stats["refused_amplification"] += 1
            return
        self.address_check.count_sent(address, len(data), now)
        if self.transport is not None:
            self.transport.sendto(data, address)

    def _answer(self, msg_id: bytes, body: bytes, address: Address, now: float) -> None:
        """A request from a proven source: run the RPC and answer it."""
        try:
            data = umsgpack.unpackb(body)
        except Exception:  # umsgpack raises many kinds on garbage
            self.stats["garbage"] += 1
            return
        if not (
            isinstance(data, list)
            and len(data) == 2
            and isinstance(data[0], str)
            and (data[0] in RPCS or data[0] in self.extra_rpcs)
            and isinstance(data[1], list)
        ):
            self.stats["malformed"] += 1
            return
        name, args = data
        handler = self.extra_rpcs.get(name) or getattr(self, f"rpc_{name}")
        try:
            response = handler(address, *args)
        except (TypeError, ValueError, OnionmeshError):
            self.stats["malformed"] += 1
            return
        self.stats[f"rpc_{name}"] += 1
        self._reply(Kind.RESPONSE, msg_id, umsgpack.packb(response), address, now)

    def _accept_response(self, datagram: DhtDatagram, address: Address, now: float) -> None:
        msg_id = datagram.msg_id
        expected = self._sent_to.get(msg_id)
        if expected is None or msg_id not in self._outstanding:
            self.stats["unexpected_response"] += 1
            return
        if address != expected:
            self.stats["spoofed_response"] += 1
            return
        result: Any = _RETRY
        if datagram.kind is Kind.RESPONSE:
            try:
                result = umsgpack.unpackb(datagram.body)
            except Exception:  # umsgpack raises many kinds on garbage
                self.stats["garbage"] += 1
                return
        # It echoed our random message ID from the address we sent to: it receives there.
        self.address_check.prove(address, now)
        self.address_check.learn_token(address, datagram.token)
        del self._sent_to[msg_id]
        future, timeout = self._outstanding.pop(msg_id)
        timeout.cancel()
        if not future.done():
            future.set_result((True, result))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _timeout(self, msg_id: bytes) -> None:
        self._sent_to.pop(msg_id, None)
        entry = self._outstanding.pop(msg_id, None)
        self.stats["timeouts"] += 1
        if entry is not None and not entry[0].done():
            entry[0].set_result((False, None))

    async def call(self, address: tuple[str, int], name: str, args: list[Any]) -> tuple[bool, Any]:
        """One RPC; (False, None) on timeout.  A RETRY (we held no valid token for the address)
        brings a token, and the request is sent once more with it."""
        if self.transport is None:
            return False, None
        address = norm(address)
        body = umsgpack.packb([name, list(args)])
        for _attempt in range(2):
            ok, result = await self._request(address, body)
            if result is not _RETRY:
                return ok, result
        self.stats["retry_twice"] += 1  # the token it gave did not prove us: give up
        return False, None

    async def _request(self, address: Address, body: bytes) -> tuple[bool, Any]:
        msg_id = os.urandom(MSG_ID_LEN)
        token = self.address_check.token_for(address) or NO_TOKEN
        try:
            datagram = DhtDatagram(Kind.REQUEST, msg_id, token, body).encode()
        except ValueError:  # too long for one datagram
            self.stats["refused_too_long"] += 1
            return False, None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        self._outstanding[msg_id] = (future, loop.call_later(self._wait_timeout, self._timeout, msg_id))
        self._sent_to[msg_id] = address
        self.address_check.count_requested(address, len(datagram), time.monotonic())
        assert self.transport is not None
        self.transport.sendto(datagram, address)
        return await future

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
