"""Issue 15 item 1: a DHT relay is no reflector.  Real UDP on loopback.

The burst is bench/dht_reflection.py's (`burst_round`): built byte by byte in the pre-token
framing and the current one (no import of the DHT's framing modules), so that the same test runs
against code of either era and measures what comes back to the attacker's socket.
"""

from __future__ import annotations

import asyncio
import os
import time

from hypothesis import given
from hypothesis import strategies as st

from bench.dht_reflection import Sink, burst_round, relay_at
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.runtime.dht.node import DhtNode


async def test_a_burst_with_fresh_node_ids_gets_back_no_more_bytes_than_it_sent() -> None:
    relay = await relay_at("127.0.0.1")
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    sent = 0
    try:
        for _ in range(50):
            for datagram in burst_round():
                transport.sendto(datagram, relay.address)
                sent += len(datagram)
            await asyncio.sleep(0.005)
        # the relay's side-effect requests (if any) follow its answers: give them time to arrive
        await asyncio.sleep(1.5)
        returned = sum(len(d) for d in sink.received)
        assert returned <= sent, f"{returned} bytes came back for {sent} sent ({returned / sent:.1f}x)"
        assert all(len(d) <= 37 for d in sink.received), "only RETRYs go to an unproven source"
        protocol = relay.protocol
        assert protocol is not None
        assert len(protocol.router.find_neighbors(relay.node, k=1000)) == 0  # no costly work either
        assert not any(k.startswith("rpc_") or k.startswith("store_") for k, v in protocol.stats.items() if v)
        received, sent_back = vars(protocol)["address_check"].ledger(transport.get_extra_info("sockname"))
        assert (received, sent_back) == (sent, returned)
    finally:
        transport.close()
        relay.stop()


async def test_a_proven_relay_still_joins_publishes_and_is_found() -> None:
    """Full service once the token round trip is done: admission, STORE, lookups, crawls."""
    relays = [await relay_at(f"127.0.{40 + i}.1") for i in range(3)]
    client = DhtNode(None)
    await client.listen(0, "127.0.0.1")
    try:
        for node in relays[1:]:
            assert await node.bootstrap([relays[0].address])
        first = relays[0].protocol
        assert first is not None
        deadline = time.monotonic() + 5
        while len(first.router.find_neighbors(relays[0].node, k=100)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert {n.id for n in first.router.find_neighbors(relays[0].node, k=100)} == {
            r.node.id for r in relays[1:]
        }
        assert await relays[2].publish(relays[2].descriptor_raw) >= 1  # type: ignore[arg-type]
        found = await client.crawl(extra=[relays[0].address], deadline=10)
        assert {d.nickname for d in found} == {"reflector"} and len(found) == 3
        key = RelayDescriptor.decode(relays[2].descriptor_raw).dht_key  # type: ignore[arg-type]
        assert (await client.lookup(key, want_value=True)).raw == relays[2].descriptor_raw
    finally:
        client.stop()
        for node in relays:
            node.stop()


async def test_addresses_named_by_a_liar_get_small_requests_only() -> None:
    """The same defect from the other side: a DHT node that answers FIND_NODE with victims'
    addresses must not make a crawling client send them large requests."""
    liar = await relay_at("127.0.50.1")
    loop = asyncio.get_running_loop()
    victims = [await loop.create_datagram_endpoint(Sink, local_addr=("127.0.51.1", 0)) for _ in range(16)]
    contacts = [[os.urandom(20), "127.0.51.1", t.get_extra_info("sockname")[1]] for t, _ in victims]
    assert liar.protocol is not None
    liar.protocol.rpc_find_node = lambda *_a: contacts  # type: ignore[method-assign]
    client = DhtNode(None)
    await client.listen(0, "127.0.0.1")
    try:
        await client.crawl(extra=[liar.address], deadline=5)
        to_victims = [d for _t, sink in victims for d in sink.received]
        assert to_victims, "the crawl did try the named addresses"
        assert max(len(d) for d in to_victims) <= 128
        assert sum(len(d) for d in to_victims) <= 16 * 2 * 128  # one try and one retry each
    finally:
        client.stop()
        liar.stop()
        for t, _ in victims:
            t.close()


@given(st.binary(max_size=200))
def test_datagram_parser_never_raises_anything_but_valueerror(data: bytes) -> None:
    from onionmesh.wire.dht_datagram import HEADER_LEN, Kind, decode_datagram

    try:
        d = decode_datagram(data)
    except ValueError:
        return
    assert d.encode() == data
    assert len(d.msg_id) == 20 and len(d.token) == 16 and d.kind in Kind
    assert (d.kind is Kind.RETRY) == (len(data) == HEADER_LEN)


@given(st.sampled_from([2, 3, 4]), st.binary(min_size=20, max_size=20), st.binary(min_size=16, max_size=16),
       st.binary(max_size=300))  # fmt: skip
def test_datagram_round_trips(kind: int, msg_id: bytes, token: bytes, body: bytes) -> None:
    from onionmesh.wire.dht_datagram import DhtDatagram, Kind, decode_datagram

    body = b"" if kind == Kind.RETRY else body or b"\xc0"
    d = DhtDatagram(Kind(kind), msg_id, token, body)
    assert decode_datagram(d.encode()) == d


@given(st.binary(min_size=16, max_size=16), st.integers(0, 65535), st.floats(0, 1e9))
def test_tokens_bind_the_address_and_expire(token: bytes, port: int, now: float) -> None:
    from onionmesh.directory.dht_tokens import PERIOD, AddressTokens

    tokens = AddressTokens(b"k" * 32)
    minted = tokens.mint(("127.0.0.1", port), now)
    assert tokens.check(("127.0.0.1", port), minted, now + PERIOD * 0.99)
    assert tokens.check(("::ffff:127.0.0.1", port), minted, now)  # the same address, mapped
    assert not tokens.check(("127.0.0.2", port), minted, now)
    assert not tokens.check(("127.0.0.1", (port + 1) % 65536), minted, now)
    assert not tokens.check(("127.0.0.1", port), minted, now + 2 * PERIOD + 1)
    assert tokens.check(("127.0.0.1", port), token, now) == (token == minted)


def test_the_documented_vector() -> None:
    """docs/protocol.md §9.6's test vector."""
    import umsgpack as mp

    from onionmesh.directory.dht_tokens import AddressTokens
    from onionmesh.wire.dht_datagram import DhtDatagram, Kind

    token = AddressTokens(bytes(range(32))).mint(("127.0.0.1", 4000), 600.0)
    assert token.hex() == "3d1876f4ce2794277c469038f370c1d5"
    ping = DhtDatagram(Kind.REQUEST, bytes(20), bytes(16), mp.packb(["ping", [bytes(20)]])).encode()
    assert ping == b"\x02" + bytes(36) + bytes.fromhex("92a470696e6791c414") + bytes(20)
    assert DhtDatagram(Kind.RETRY, bytes(20), token).encode() == b"\x04" + bytes(20) + token
