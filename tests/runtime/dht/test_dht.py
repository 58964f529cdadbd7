"""The DHT over real UDP on loopback: small networks of DhtNode in one event loop, raw sockets
playing garbage senders, flooders, spoofers and nodes that claim IDs they do not own.

Every relay listens on its own 127.0.N.1 (so subnets are distinct unless a test wants them
shared); clients and raw peers use 127.0.0.x.  All traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import umsgpack
from kademlia.node import Node

from onionmesh.directory.descriptor import MAX_DESCRIPTOR_LEN, RelayDescriptor, descriptor_key
from onionmesh.directory.dht_records import (
    NONCE_LEN,
    DescriptorStore,
    node_id_for,
    sign_hello,
    subnet_of,
    verify_hello,
)
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.dht.protocol import (
    MAX_PER_SUBNET_PER_BUCKET,
    RATE_BURST,
    WAIT_TIMEOUT,
    OnionmeshDhtProtocol,
)
from onionmesh.wire.dht_datagram import HEADER_LEN, MAX_DATAGRAM, NO_TOKEN
from tests.helpers.dht import (
    HOUR,
    Net,
    RawPeer,
    descriptor_raw,
    eventually,
    proto,
    request,
    response,
    settle,
)


# --- building blocks (the rest are in tests/helpers/dht.py) -----------------------------------------
def table(node: DhtNode, *, replacements: bool = False) -> list[Node]:
    buckets = proto(node).router.buckets
    out = [n for b in buckets for n in b.get_nodes()]
    if replacements:
        out += [n for b in buckets for n in b.replacement_nodes.values()]
    return out


def table_ids(node: DhtNode) -> set[bytes]:
    return {n.id for n in table(node, replacements=True)}


def fingerprint_of(node: DhtNode) -> str:
    assert node.descriptor_raw is not None
    return RelayDescriptor.decode(node.descriptor_raw).fingerprint


def snapshot(node: DhtNode) -> dict[bytes, bytes]:
    return dict(list(node.storage))


def closed_port(host: str = "127.0.0.1") -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Every exception that reaches the event loop (unretrieved task errors, callback errors)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield errors
        await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not errors, [e.get("message") for e in errors] + [repr(e.get("exception")) for e in errors]


# --- the happy path -------------------------------------------------------------------------------
async def test_publish_lookup_crawl_and_clients_are_never_advertised() -> None:
    async with Net() as net:
        relays = await net.network(8)
        stored = await asyncio.gather(*(r.publish(r.descriptor_raw) for r in relays))  # type: ignore[arg-type]
        assert all(count >= 3 for count in stored), stored

        client = await net.client()
        await client.bootstrap([relays[0].address])
        await settle([client, *relays])
        for target in (relays[0], relays[5], relays[7]):
            result = await client.get_descriptor(fingerprint_of(target))
            assert result.raw == target.descriptor_raw
            assert result.descriptor is not None and result.descriptor.fingerprint == fingerprint_of(target)
            assert result.forged == 0
        # a relay finds another's descriptor too
        result = await relays[3].get_descriptor(fingerprint_of(relays[6]))
        assert result.raw == relays[6].descriptor_raw
        # a key nobody published: no value, but the closest nodes
        missing = await client.lookup(os.urandom(20), want_value=True)
        assert missing.descriptor is None and missing.raw is None and missing.nodes

        crawler = await net.client("127.0.0.2")
        found = await crawler.crawl(extra=[relays[0].address])
        assert {d.fingerprint for d in found} == {fingerprint_of(r) for r in relays}

        await settle(relays)
        for relay in relays:
            ids = table_ids(relay)
            assert client.node.id not in ids and crawler.node.id not in ids
            assert client.node.id not in proto(relay).verified
            # and a relay's FIND_NODE answers never name a client
            for node in proto(relay).router.find_neighbors(client.node, k=100):
                assert node.id not in (client.node.id, crawler.node.id)
            # every relay's own table holds only proven relays
            assert ids <= {r.node.id for r in relays}


# --- honest nodes refuse bad STOREs ----------------------------------------------------------
async def test_honest_nodes_refuse_bad_stores_over_the_wire() -> None:
    async with Net() as net:
        relays = await net.network(3)
        a, b, holder = relays
        now = int(time.time())
        ident_a = a.identity
        assert ident_a is not None
        host_a, port_a = a.address
        old = descriptor_raw(ident_a, host_a, port_a, "aold", published=now - 100)
        a.descriptor_raw = descriptor_raw(ident_a, host_a, port_a, "anew", published=now)
        assert await a.publish(a.descriptor_raw) >= 2
        assert await b.publish(b.descriptor_raw) >= 2  # type: ignore[arg-type]
        key_a = descriptor_key(fingerprint_of(a))
        key_b = descriptor_key(fingerprint_of(b))
        assert holder.storage.get(key_a) == a.descriptor_raw

        attacker = await net.client()
        atk = proto(attacker)
        bad_sig = bytearray(a.descriptor_raw)
        bad_sig[-1] ^= 1
        expired = descriptor_raw(ident_a, host_a, port_a, "aexp", published=now - 2 * HOUR, lifetime=HOUR)
        just_over = a.descriptor_raw + bytes(MAX_DESCRIPTOR_LEN + 1 - len(a.descriptor_raw))
        cases = {
            "bad signature": (key_a, bytes(bad_sig), "store_invalid"),
            "another relay's key": (key_b, a.descriptor_raw, "store_wrong-key"),
            "replayed older": (key_a, old, "store_older"),
            "expired": (key_a, expired, "store_invalid"),
            "just over MAX_DESCRIPTOR_LEN": (key_a, just_over, "store_oversized"),
            "not bytes": (key_a, "a descriptor", "store_not-bytes"),
            "bad key": (b"short", a.descriptor_raw, "store_bad-key"),
        }
        before = snapshot(holder)
        for label, (key, value, counter) in cases.items():
            ok, accepted = await atk.call(holder.address, "store", [attacker.node.id, key, value])
            assert (ok, accepted) == (True, False), label
            assert proto(holder).stats[counter] >= 1, label
            assert snapshot(holder) == before, label
        assert holder.storage.get(key_a) == a.descriptor_raw

        # 1 MB cannot even leave in one datagram: the sender refuses to encode it, answers
        # (False, None) at once, sends nothing, and nothing changes at the holder
        huge = a.descriptor_raw + bytes(1 << 20)
        refused = atk.stats["refused_too_long"]
        call = atk.call(holder.address, "store", [attacker.node.id, key_a, huge])
        assert await asyncio.wait_for(call, 10) == (False, None)  # a liveness bound only
        assert atk.stats["refused_too_long"] == refused + 1 and not atk._outstanding
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
            s.sendto(request("store", [attacker.node.id, key_a, huge])[1], holder.address)
        # a value that fits a datagram but not MAX_DATAGRAM is dropped as garbage before parsing
        garbage_before = proto(holder).stats["garbage"]
        mid, big = request("store", [attacker.node.id, key_a, a.descriptor_raw + bytes(60_000)])
        raw = await net.raw()
        raw.send(big, holder.address)
        assert await raw.reply_to(mid, timeout=0.3) is None
        assert proto(holder).stats["garbage"] == garbage_before + 1
        assert snapshot(holder) == before
        # the holder still serves the newest valid descriptor
        result = await attacker.lookup(key_a, want_value=True, seeds=[Node(holder.node.id, *holder.address)])
        assert result.raw == a.descriptor_raw


async def test_lookup_returns_the_newest_valid_descriptor_despite_forging_nodes() -> None:
    async with Net() as net:
        relays = await net.network(10)
        target, other = relays[9], relays[8]
        ident = target.identity
        assert ident is not None
        now = int(time.time())
        old = descriptor_raw(ident, *target.address, "old", published=now - 300)
        target.descriptor_raw = descriptor_raw(ident, *target.address, "new", published=now)
        assert await target.publish(old) >= 3
        assert await target.publish(target.descriptor_raw) >= 3
        key = descriptor_key(fingerprint_of(target))
        assert relays[0].storage.get(key) == target.descriptor_raw  # honest holders replaced the old one
        bad_sig = bytearray(target.descriptor_raw)
        bad_sig[-3] ^= 0x10

        answers = {
            relays[1]: bytes(bad_sig),  # forged signature
            relays[2]: other.descriptor_raw,  # valid, but another relay's descriptor
            relays[3]: b"\x01" + os.urandom(300),  # junk
            relays[4]: old,  # a valid but older descriptor: not forged, must not win
        }
        asked: list[DhtNode] = []

        def liar(node: DhtNode, value: bytes) -> None:
            def rpc_find_value(sender: tuple[str, int], nodeid: object, key: object) -> Any:
                asked.append(node)
                return {"value": value}

            proto(node).rpc_find_value = rpc_find_value  # type: ignore[method-assign]

        for node, value in answers.items():
            liar(node, value)

        client = await net.client()
        await client.bootstrap([relays[0].address])
        assert await eventually(lambda: len(table(client)) == len(relays))
        result = await client.get_descriptor(fingerprint_of(target))
        assert result.raw == target.descriptor_raw, "the newest valid descriptor wins"
        assert result.descriptor is not None and result.descriptor.published == now
        # with every relay in the client's table, the four paths ask all of them in their first round
        assert sorted(map(id, asked)) == sorted(map(id, answers))
        assert result.forged == 3


# --- garbage ------------------------------------------------------------------------------------
async def test_garbage_datagrams_are_counted_and_the_node_keeps_answering(
    loop_errors: list[dict[str, Any]],
) -> None:
    async with Net() as net:
        relays = await net.network(2)
        node = relays[0]
        stats = proto(node).stats
        raw = await net.raw()
        tok = await raw.token(node.address)  # a proven source: its bodies are parsed
        rid = os.urandom(20)
        mid = os.urandom(20)
        garbage = [
            b"\x00",
            b"\x00" * 21,  # a pre-token header and nothing else
            b"\x02" + mid + tok,  # a header and nothing else
            b"\x01" + os.urandom(10),
            os.urandom(5),
            b"\x04" + os.urandom(40),  # a RETRY with a body
            b"\xff" + os.urandom(100),
            b"\x00" + mid + umsgpack.packb(["ping", [rid]]),  # the pre-token framing
            b"\x02" + mid + tok + b"\xc1",  # 0xc1 is never used in msgpack
            b"\x02" + mid + tok + b"\x92\xa4pi",  # truncated msgpack
            b"\x02" + mid + tok + b"\xdb\xff\xff\xff\xff",  # a 4 GB string header
            b"\x02" + mid + tok + b"\x91" * 3000,  # 3000 nested arrays
            b"\x02" + mid + tok + os.urandom(5000),  # over MAX_DATAGRAM
            b"\x03" + mid + tok + umsgpack.packb([rid, "x" * 4999]),
            os.urandom(MAX_DATAGRAM + 1),
            b"\x00" * 5000,
        ]
        malformed = [
            umsgpack.packb(5),
            umsgpack.packb("ping"),
            umsgpack.packb(None),
            umsgpack.packb([]),
            umsgpack.packb(["ping"]),
            umsgpack.packb(["ping", 5]),
            umsgpack.packb(["ping", [rid], "extra"]),
            umsgpack.packb({"ping": [rid]}),
            umsgpack.packb([None, []]),
            umsgpack.packb([b"ping", [rid]]),
            umsgpack.packb(["stun", []]),  # the package answers this one; onionmesh does not
            umsgpack.packb(["__init__", []]),
            umsgpack.packb(["close", []]),
            umsgpack.packb(["_answer", [b"x", [], ["127.0.0.1", 1], 10]]),
            umsgpack.packb(["ping", []]),
            umsgpack.packb(["ping", [b"short"]]),
            umsgpack.packb(["ping", [rid, b"", b"too many"]]),
            umsgpack.packb(["ping", [{"id": rid}]]),
            umsgpack.packb(["store", [rid, b"k"]]),
            umsgpack.packb(["store", [b"x" * 21, b"k" * 20, b"v"]]),
            umsgpack.packb(["find_node", [rid]]),
            umsgpack.packb(["find_node", [rid, 5]]),
            umsgpack.packb(["find_node", [rid, "k" * 20]]),
            umsgpack.packb(["find_value", [rid, None]]),
            umsgpack.packb(["find_value", [7, rid]]),
            umsgpack.packb(["descriptor", []]),
            umsgpack.packb(["descriptor", [b"short"]]),
            umsgpack.packb(["descriptor", [16]]),
            umsgpack.packb(["ping", [umsgpack.Ext(5, b"x")]]),
            umsgpack.packb(umsgpack.Ext(1, b"\x00" * 20)),
        ]
        unexpected = [
            response(os.urandom(20), node.node.id),
            response(os.urandom(20), {"value": b"x"}),
            b"\x04" + os.urandom(20) + NO_TOKEN,  # a RETRY for nothing we asked
        ]
        before = dict(stats)
        for i, data in enumerate(garbage):
            raw.send(data, node.address)
            if i % 5 == 4:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        for i, body in enumerate(malformed):
            raw.send(b"\x02" + os.urandom(20) + tok + body, node.address)
            if i % 5 == 4:
                await asyncio.sleep(0.01)
        for data in unexpected:
            raw.send(data, node.address)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:  # asyncio never sends b""
            plain.bind(("127.0.0.1", 0))
            plain.sendto(b"", node.address)
        garbage.append(b"")
        await asyncio.sleep(0.2)

        assert not loop_errors
        assert stats["garbage"] - before.get("garbage", 0) == len(garbage)
        assert stats["malformed"] - before.get("malformed", 0) == len(malformed)
        assert stats["unexpected_response"] - before.get("unexpected_response", 0) == len(unexpected)
        assert stats["internal_error"] == 0
        assert raw.received == [], "nothing malformed is answered"

        # still alive: a valid ping from the same source, and a lookup through it
        mid, ping = request("ping", [rid], tok)
        raw.send(ping, node.address)
        reply = await raw.reply_to(mid)
        assert reply is not None and umsgpack.unpackb(reply[HEADER_LEN:]) == node.node.id
        client = await net.client()
        found = await client.bootstrap([node.address])
        assert {n.id for n in found} == {node.node.id, relays[1].node.id}


async def test_unhashable_rpc_names_count_as_malformed_not_as_internal_errors() -> None:
    async with Net() as net:
        (node,) = await net.network(1)
        raw = await net.raw()
        tok = await raw.token(node.address)
        for name in ([1], {"ping": 1}):
            raw.send(b"\x02" + os.urandom(20) + tok + umsgpack.packb([name, []]), node.address)
        await asyncio.sleep(0.1)
        assert proto(node).stats["malformed"] == 2
        assert proto(node).stats["internal_error"] == 0


# --- no amplification: unproven sources get a RETRY, proven ones full answers -----------------
async def test_unproven_sources_get_only_a_retry_and_proven_ones_full_answers() -> None:
    async with Net() as net:
        relays = await net.network(8)
        node = relays[0]
        assert await relays[4].publish(relays[4].descriptor_raw) >= 1  # type: ignore[arg-type]
        key = descriptor_key(fingerprint_of(relays[4]))
        await eventually(lambda: node.storage.get(key) is not None)
        assert node.storage.get(key) == relays[4].descriptor_raw
        raw, other = await net.raw(), await net.raw()
        rid = os.urandom(20)
        target = os.urandom(20)
        contacts = len(proto(node).router.find_neighbors(Node(target)))
        assert contacts >= 5
        nonce = os.urandom(NONCE_LEN)
        calls: list[tuple[str, list[Any]]] = [
            ("ping", [rid]),
            ("find_node", [rid, target]),
            ("find_value", [rid, key]),
            ("descriptor", [nonce]),
            ("store", [rid, key, relays[4].descriptor_raw]),
        ]
        stats = proto(node).stats
        before = {k: v for k, v in stats.items() if k.startswith(("rpc_", "store_"))}
        # no token, a made-up token, another address's token: a RETRY of 37 bytes, nothing else
        for token in (NO_TOKEN, os.urandom(16), await other.token(node.address)):
            for name, args in calls:
                mid, data = request(name, args, token)
                raw.send(data, node.address)
                got = await raw.take(lambda d, _a, m=mid: d[1:21] == m, timeout=1.0)
                assert got is not None and got[0][:1] == b"\x04" and len(got[0]) == HEADER_LEN < len(data)
        await asyncio.sleep(0.1)
        assert raw.received == [] and not proto(node)._verifying
        assert {k: v for k, v in stats.items() if k.startswith(("rpc_", "store_"))} == before
        received, sent = proto(node).address_check.ledger(raw.address)
        assert 0 < sent <= received

        # with the token it was given, the same socket gets every answer in full
        tok = await raw.token(node.address)

        async def exchange(name: str, args: list[Any]) -> Any:
            mid, data = request(name, args, tok)
            raw.send(data, node.address)
            reply = await raw.reply_to(mid)
            assert reply is not None, name
            return umsgpack.unpackb(reply[HEADER_LEN:])

        assert await exchange("ping", [rid]) == node.node.id
        assert len(await exchange("find_node", [rid, target])) == contacts
        assert await exchange("find_value", [rid, key]) == {"value": relays[4].descriptor_raw}
        assert len(await exchange("find_value", [rid, target])) == contacts
        raw_desc, signature = await exchange("descriptor", [nonce])
        verify_hello(RelayDescriptor.decode(raw_desc), node.node.id, nonce, signature)
        assert await exchange("store", [rid, key, relays[4].descriptor_raw]) is True


# --- rate limits --------------------------------------------------------------------------------
async def test_a_flooding_source_is_rate_limited_while_others_are_answered() -> None:
    async with Net() as net:
        (node,) = await net.network(1)
        flooder = await net.raw("127.0.0.1")
        bystander = await net.raw("127.0.0.2")
        rid = os.urandom(20)
        stats = proto(node).stats
        tok = await flooder.token(node.address)
        sent = int(RATE_BURST) + 300
        for i in range(sent):
            flooder.send(request("ping", [rid], tok)[1], node.address)
            if i % 50 == 49:  # let the node read them (never overflow the socket's buffer)
                assert await eventually(lambda n=i + 1: stats["rpc_ping"] + stats["rate_limited"] >= n)
        assert await eventually(lambda: stats["rpc_ping"] + stats["rate_limited"] >= sent)
        assert stats["rpc_ping"] + stats["rate_limited"] == sent  # each one answered or limited
        # the bucket's arithmetic (never more than burst + rate x time) is tested with a given
        # clock in tests/runtime/test_ratelimit.py; here: it engaged, and only for the flooder
        assert stats["rate_limited"] > 0
        await asyncio.sleep(0.05)
        answered = sum(1 for d, _ in flooder.received if d[:1] == b"\x03")
        assert answered == stats["rpc_ping"] < sent

        mid, data = request("ping", [os.urandom(20)], await bystander.token(node.address))
        bystander.send(data, node.address)
        reply = await bystander.reply_to(mid)
        assert reply is not None and umsgpack.unpackb(reply[HEADER_LEN:]) == node.node.id
        # and a DhtNode from a third address gets its answer too
        client = await net.client("127.0.0.3")
        ok, pong = await proto(client).call(node.address, "ping", [client.node.id])
        assert ok and pong == node.node.id


# --- dead contacts and spoofed answers --------------------------------------------------------
async def test_a_dead_contact_costs_less_than_a_second() -> None:
    """Each call to a dead contact ends by its own WAIT_TIMEOUT timer (under a second), one timer
    per call and concurrently: counted, not timed."""
    async with Net() as net:
        (node,) = await net.network(1)
        assert WAIT_TIMEOUT < 1
        dead = ("127.0.0.1", closed_port())
        stats = proto(node).stats
        timeouts = stats["timeouts"]
        call = proto(node).call(dead, "ping", [node.node.id])
        assert await asyncio.wait_for(call, 10) == (False, None)  # a liveness bound only
        assert stats["timeouts"] == timeouts + 1
        results = await asyncio.wait_for(
            asyncio.gather(
                proto(node).call_ping(Node(os.urandom(20), *dead)),
                proto(node).call_find_node(Node(os.urandom(20), *dead), Node(os.urandom(20))),
                proto(node).fetch_descriptor(dead, None),
            ),
            10,
        )
        assert results[0] == (False, None) and results[1] == (False, None) and results[2] is None
        assert stats["timeouts"] == timeouts + 4  # one timer each, no retry stacked behind another
        assert not proto(node)._outstanding


async def test_spoofed_responses_are_ignored() -> None:
    async with Net() as net:
        (node,) = await net.network(1)
        peer = await net.raw("127.0.0.1")
        spoofer = await net.raw("127.0.0.2")
        same_ip_other_port = await net.raw("127.0.0.1")
        call = asyncio.ensure_future(proto(node).call(peer.address, "ping", [node.node.id]))
        mid, _args, _ = await peer.next_request("ping")
        spoofer.send(response(mid, b"spoofed"), node.address)
        same_ip_other_port.send(response(mid, b"spoofed too"), node.address)
        await asyncio.sleep(0.05)
        assert proto(node).stats["spoofed_response"] == 2
        assert not call.done()
        peer.send(response(mid, b"genuine"), node.address)
        assert await call == (True, b"genuine")
        # a second, late answer to the same message is unexpected, not accepted
        peer.send(response(mid, b"late"), node.address)
        await asyncio.sleep(0.05)
        assert proto(node).stats["unexpected_response"] == 1


# --- node IDs must be proven ------------------------------------------------------------------
async def test_nodes_claiming_ids_they_do_not_own_never_enter_routing_tables() -> None:
    async with Net() as net:
        honest = await net.relay("127.0.1.1")
        victim = await net.relay("127.0.2.1")  # a real relay, unknown to `honest`
        victim_id = victim.node.id
        assert victim.descriptor_raw is not None
        helper = await net.client("127.0.0.9")  # the attacker's way to talk to the victim
        mallory_ident = net.identity()

        async def attempt(
            claimed: Callable[[RawPeer], bytes], answer: Callable[..., Any], *, refused: bool = True
        ) -> RawPeer:
            """Mallory pings `honest` claiming an ID, then answers its `descriptor` challenge."""
            mallory = await net.raw("127.0.5.1")
            bad_before = proto(honest).stats["bad_hello"]
            mid, ping = request("ping", [claimed(mallory)], await mallory.token(honest.address))
            mallory.send(ping, honest.address)
            assert await mallory.reply_to(mid) is not None  # a ping is answered either way
            cmid, args, _ = await mallory.next_request("descriptor")
            result = await answer(mallory, args[0])
            mallory.send(response(cmid, result), honest.address)
            if refused:
                assert await eventually(lambda: proto(honest).stats["bad_hello"] > bad_before, 2.0)
            await settle([honest])
            return mallory

        def own_raw(mallory: RawPeer, **kw: Any) -> bytes:
            return descriptor_raw(mallory_ident, *mallory.address, "mallory", **kw)

        async def victims_descriptor_own_signature(mallory: RawPeer, nonce: bytes) -> Any:
            return [victim.descriptor_raw, sign_hello(mallory_ident, nonce)]

        async def victims_descriptor_relayed_proof(mallory: RawPeer, nonce: bytes) -> Any:
            ok, proof = await proto(helper).call(victim.address, "descriptor", [nonce])
            assert ok and proof[0] == victim.descriptor_raw
            verify_hello(RelayDescriptor.decode(proof[0]), victim_id, nonce, proof[1])  # a genuine proof
            return proof

        async def own_descriptor_and_proof(mallory: RawPeer, nonce: bytes) -> Any:
            return [own_raw(mallory), sign_hello(mallory_ident, nonce)]

        async def forged_hello_signature(mallory: RawPeer, nonce: bytes) -> Any:
            return [own_raw(mallory), os.urandom(64)]

        async def forged_descriptor_signature(mallory: RawPeer, nonce: bytes) -> Any:
            raw = bytearray(own_raw(mallory))
            raw[-1] ^= 1
            return [bytes(raw), sign_hello(mallory_ident, nonce)]

        async def descriptor_naming_another_address(mallory: RawPeer, nonce: bytes) -> Any:
            return [own_raw(mallory, contact=victim.address), sign_hello(mallory_ident, nonce)]

        mallory_id = node_id_for(mallory_ident.public)
        attacks = [
            (lambda m: victim_id, victims_descriptor_own_signature),
            (lambda m: victim_id, victims_descriptor_relayed_proof),
            (lambda m: victim_id, own_descriptor_and_proof),
            (lambda m: mallory_id, forged_hello_signature),
            (lambda m: mallory_id, forged_descriptor_signature),
            (lambda m: mallory_id, descriptor_naming_another_address),
        ]
        mallories = []
        for i, (claimed, answer) in enumerate(attacks):
            mallories.append(await attempt(claimed, answer))
            assert proto(honest).stats["bad_hello"] == i + 1, answer.__name__
            ids = table_ids(honest)
            assert victim_id not in ids and mallory_id not in ids, answer.__name__
            addresses = {(n.ip, n.port) for n in table(honest, replacements=True)}
            assert not addresses & {m.address for m in mallories}
            assert victim_id not in proto(honest).verified and mallory_id not in proto(honest).verified

        # control: the same harness with an honest proof does get Mallory admitted
        await attempt(lambda m: mallory_id, own_descriptor_and_proof, refused=False)
        assert await eventually(lambda: mallory_id in table_ids(honest))
        assert proto(honest).stats["bad_hello"] == len(attacks)


async def test_a_relay_serving_another_relays_descriptor_is_not_admitted() -> None:
    """A full DhtNode whose `descriptor` answer is another relay's descriptor (signed by itself)."""
    async with Net() as net:
        relays = await net.network(3)
        impostor = await net.relay("127.0.7.1")
        impostor.descriptor_raw = relays[1].descriptor_raw  # claims to be relays[1]
        got = await impostor.bootstrap([relays[0].address])
        assert got  # it can still use the DHT as a client would
        await settle([*relays, impostor])
        for relay in relays:
            assert impostor.node.id not in table_ids(relay)
            assert all((n.ip, n.port) != impostor.address for n in table(relay, replacements=True))
        assert proto(relays[0]).stats["bad_hello"] >= 1


async def test_a_fake_contact_with_a_dead_address_does_not_evict_the_genuine_node() -> None:
    async with Net() as net:
        relays = await net.network(3)
        honest, victim, liar = relays
        assert victim.node.id in table_ids(honest)
        dead = ("127.0.99.1", closed_port("127.0.99.1"))

        def rpc_find_node(sender: tuple[str, int], nodeid: object, key: object) -> Any:
            return [[victim.node.id, *dead]]

        proto(liar).rpc_find_node = rpc_find_node  # type: ignore[method-assign]
        result = await honest.lookup(victim.node.id, seeds=[Node(liar.node.id, *liar.address)])
        assert proto(honest).stats["timeouts"] >= 1  # the fake contact was tried
        assert result is not None
        assert victim.node.id in table_ids(honest), "the genuine victim was evicted"


# --- subnet limits ------------------------------------------------------------------------------
def per_bucket_subnets(node: DhtNode) -> list[dict[str, int]]:
    out = []
    for bucket in proto(node).router.buckets:
        counts: dict[str, int] = {}
        for n in bucket.get_nodes():
            counts[subnet_of(n.ip)] = counts.get(subnet_of(n.ip), 0) + 1
        out.append(counts)
    return out


async def test_at_most_two_nodes_of_one_subnet_share_a_bucket() -> None:
    async with Net() as net:
        honest = await net.network(3)  # 127.0.1.1, 127.0.2.1, 127.0.3.1
        sybils = []
        for i in range(12):  # one /24: 127.0.9.1 … 127.0.9.6, two ports each
            sybil = await net.relay(f"127.0.9.{i // 2 + 1}")
            sybils.append(sybil)
            await sybil.bootstrap([honest[0].address])
        await settle(honest + sybils)
        for node in honest:
            for counts in per_bucket_subnets(node):
                assert max(counts.values(), default=0) <= MAX_PER_SUBNET_PER_BUCKET, counts
            in_table = sum(1 for n in table(node) if subnet_of(n.ip) == "127.0.9.0/24")
            assert in_table <= MAX_PER_SUBNET_PER_BUCKET * len(proto(node).router.buckets)
            others = {r.node.id for r in honest if r is not node}
            assert others <= {n.id for n in table(node)}, "honest relays of other subnets are all kept"
        # the bootstrap node had room for all 15 (one bucket of 16) but took only two Sybils
        assert len(proto(honest[0]).router.buckets) == 1
        assert sum(1 for n in table(honest[0]) if subnet_of(n.ip) == "127.0.9.0/24") == 2
        assert proto(honest[0]).stats["subnet_limited"] > 0
        # sybils themselves keep the rule too
        for node in sybils:
            for counts in per_bucket_subnets(node):
                assert max(counts.values(), default=0) <= MAX_PER_SUBNET_PER_BUCKET


async def test_subnet_limit_holds_when_replacement_contacts_are_promoted() -> None:
    """Sans I/O: the routing table of one protocol instance, fed proven nodes directly."""
    own = Node(bytes(20))
    protocol = OnionmeshDhtProtocol(own, DescriptorStore(time.time), 4, lambda: None)

    async def head_is_alive(node: Node) -> tuple[bool, Any]:
        return True, node.id

    protocol.call_ping = head_is_alive  # type: ignore[method-assign]

    def node_id(prefix: str, n: int) -> bytes:
        bits = prefix + format(n, "08b")
        return (int(bits, 2) << (160 - len(bits))).to_bytes(20, "big")

    # four honest nodes of four subnets whose IDs share 5 leading bits: a full bucket kademlia
    # will not split (depth 5), far from our own ID
    honest = [Node(node_id("111110" if i % 2 else "111111", i), f"127.0.{i + 1}.1", 4000) for i in range(4)]
    sybils = [Node(node_id("111110", 100 + i), f"127.0.9.{i + 1}", 4000) for i in range(4)]
    for n in honest + sybils:
        protocol._admit(n)
    await asyncio.sleep(0)
    # honest nodes go offline one by one (as handle_call_response does after a timeout)
    for n in honest:
        protocol.router.remove_contact(n)
    sybil_subnet = subnet_of(sybils[0].ip)
    for bucket in protocol.router.buckets:
        same = [n for n in bucket.get_nodes() if subnet_of(n.ip) == sybil_subnet]
        assert len(same) <= MAX_PER_SUBNET_PER_BUCKET, [str(n) for n in same]
