"""Onion-service descriptors in a real DHT on loopback: real relays (RelayNode, UDP DHT, links),
a service that publishes through circuits, a fresh client that fetches through circuits.

What is checked: the record lands at all four replicas; a fresh client finds and opens it by
address; no relay's raw store holds the service's key, its address, or its blinded key of
another period; the store keys of two periods differ; an older revision is refused; restricted
discovery gives 0xF4 / 0xF5; a typo 0xF6; an unknown service 0xF0; a UDP DHT node may not fetch;
a `store` from an unproven address gets only a RETRY.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import umsgpack
from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import hs_address, hs_blinding
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.directory import hs_descriptor as hd
from onionmesh.directory.hs_placement import store_keys
from onionmesh.directory.hs_publish import revision_for
from onionmesh.rng import SeededRng
from onionmesh.runtime.client.dht_over_circuits import CircuitDhtChannel
from onionmesh.runtime.client.hs_fetch import (
    DirectFetchRefused,
    FetchOutcome,
    circuit_dht_node,
    fetch_onion_descriptor,
    seeds_near,
)
from onionmesh.runtime.client.node import ClientConfig, ClientNode
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.wire.dht_datagram import HEADER_LEN, NO_TOKEN, Kind, encode_message
from tests.helpers.dht import RawPeer
from tests.helpers.mesh import Mesh, start_mesh, stop_mesh

RELAYS = 5


def inner_for(mesh: Mesh) -> hd.InnerDescriptor:
    rng = SeededRng(os.urandom(8))
    points = tuple(
        hd.IntroPoint(r.keys.identity.public, rng.random_bytes(32), ((r.config.listen_host, 9001),),
                      rng.random_bytes(32), rng.random_bytes(32))
        for r in mesh.relays[:3]
    )  # fmt: skip
    return hd.InnerDescriptor(points)


def record(
    ident: ExpandedKey, inner: hd.InnerDescriptor, revision: int, clients: tuple[bytes, ...] = ()
) -> bytes:
    now = int(time.time())
    return hd.build_record(
        ident, inner, period=hs_blinding.period_num(now), revision=revision, valid_after=now - 60,
        lifetime_min=180, rng=SeededRng(os.urandom(8)), client_keys=clients,
    )  # fmt: skip


async def publish(dht: DhtNode, raw: bytes, relays: list) -> list[int]:  # type: ignore[type-arg]
    return await dht.publish_hs(raw, seeds=lambda key: seeds_near(key, dht, relays))


def raw_store_bytes(mesh: Mesh) -> bytes:
    """Everything every relay's DHT node holds, keys and values, as one byte string."""
    return b"".join(k + v for r in mesh.relays for k, v in r.dht.storage)


async def test_descriptor_published_fetched_and_unlinkable(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    fresh = ClientNode(
        ClientConfig(data_dir=tmp_path / "fresh", socks_port=0, control_port=0,
                     bootstrap=(mesh.relays[0].dht.address,), prebuilt_circuits=0)
    )  # fmt: skip
    try:
        await fresh.start()
        assert await fresh.directory.wait_for(RELAYS, 30) == RELAYS
        # --- the service (mesh.client) publishes through its circuits
        service = circuit_dht_node(CircuitDhtChannel(mesh.client.circuits))
        relays = mesh.client.directory.relays()
        ident = ExpandedKey.from_seed(os.urandom(32))
        address = hs_address.encode_address(ident.public)
        inner = inner_for(mesh)
        now = time.time()
        period = hs_blinding.period_num(int(now))
        rev = revision_for(period, now)
        raw = record(ident, inner, rev)
        accepted = await publish(service, raw, relays)
        assert all(n >= 1 for n in accepted), accepted  # every replica stored somewhere
        relayed = sum(r.dht_rpc.stats["dht_rpc_ok"] for r in mesh.relays)
        assert relayed >= 4  # the stores went through last hops, not from the service's address
        keys = store_keys(hs_blinding.blind_public(ident.public, period), period)
        held = {k for r in mesh.relays for k, _v in r.dht.storage.onion.items()}
        assert set(keys) <= held

        # --- a fresh client fetches it by address, through its own circuits
        client_dht = circuit_dht_node(CircuitDhtChannel(fresh.circuits))
        got = await fetch_onion_descriptor(client_dht, address, fresh.directory.relays())
        assert got.outcome is FetchOutcome.OK and got.socks_reply == 0
        assert got.descriptor == inner and got.record is not None and got.record.revision == rev
        assert fresh.directory.dht.transport is not None  # its crawl node is UDP: refused for this
        with pytest.raises(DirectFetchRefused):
            await fetch_onion_descriptor(fresh.directory.dht, address, fresh.directory.relays())

        # --- what the storing nodes hold reveals neither the service nor its other periods
        stored = raw_store_bytes(mesh)
        assert raw in b"".join(v for r in mesh.relays for _k, v in r.dht.storage)
        other = {p: hs_blinding.blind_public(ident.public, p) for p in (period - 1, period + 1)}
        for needle in (ident.public, address.encode(), address[:56].upper().encode(),
                       hs_blinding.credential(ident.public), *other.values()):  # fmt: skip
            assert needle not in stored
        next_keys = store_keys(other[period + 1], period + 1)
        assert not set(next_keys) & set(keys)  # the location moves every period
        assert not set(next_keys) & held

        # --- an older revision is refused everywhere; a newer one replaces it
        older = record(ident, inner, rev - 1)
        assert await publish(service, older, relays) == [0, 0, 0, 0]
        inner2 = inner_for(mesh)
        newer = record(ident, inner2, rev + 1)
        assert all(n >= 1 for n in await publish(service, newer, relays))
        got = await fetch_onion_descriptor(client_dht, address, fresh.directory.relays())
        assert got.outcome is FetchOutcome.OK and got.descriptor == inner2
        assert raw not in b"".join(v for r in mesh.relays for _k, v in r.dht.storage)

        # --- restricted discovery: missing key 0xF4, wrong key 0xF5, right key opens it
        locked = ExpandedKey.from_seed(os.urandom(32))
        c_secret, wrong_secret = os.urandom(32), os.urandom(32)
        locked_raw = record(locked, inner, rev, clients=(crypto_scalarmult_base(c_secret),))
        assert all(n >= 1 for n in await publish(service, locked_raw, relays))
        locked_addr = hs_address.encode_address(locked.public)
        relays_f = fresh.directory.relays()
        missing = await fetch_onion_descriptor(client_dht, locked_addr, relays_f)
        wrong = await fetch_onion_descriptor(client_dht, locked_addr, relays_f, client_secret=wrong_secret)
        right = await fetch_onion_descriptor(client_dht, locked_addr, relays_f, client_secret=c_secret)
        assert (missing.socks_reply, wrong.socks_reply, right.socks_reply) == (0xF4, 0xF5, 0)
        assert right.descriptor == inner

        # --- a typo, and a service nobody published
        typo = address[:10] + ("a" if address[10] != "a" else "b") + address[11:]
        assert (await fetch_onion_descriptor(client_dht, typo, relays_f)).socks_reply == 0xF6
        absent = hs_address.encode_address(ExpandedKey.from_seed(os.urandom(32)).public)
        nothing = await fetch_onion_descriptor(client_dht, absent, relays_f)
        assert nothing.socks_reply == 0xF0 and nothing.found[period] == 0
    finally:
        await fresh.stop()
        await stop_mesh(mesh, extras)


async def test_store_from_an_unproven_address_gets_only_a_retry(tmp_path: Path) -> None:
    """A `store` of a valid record, sent without an address token: a 37-byte RETRY, nothing stored."""
    mesh, extras = await start_mesh(tmp_path, relays=2, exits=1)
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=("127.0.0.1", 0))
    try:
        ident = ExpandedKey.from_seed(os.urandom(32))
        raw = record(ident, inner_for(mesh), 1)
        parsed = hd.parse_record(raw)
        key = store_keys(parsed.blinded_pk, parsed.period)[0]
        msg_id = os.urandom(20)
        body = umsgpack.packb(["store", [os.urandom(20), key, raw]])
        datagrams = encode_message(Kind.REQUEST, msg_id, NO_TOKEN, body)  # in parts of <= 1,200 bytes
        assert len(datagrams) > 1
        node = mesh.relays[1].dht
        assert node.protocol is not None
        retries = node.protocol.stats["retry_sent"]
        for datagram in datagrams:
            peer.send(datagram, node.address)
        got = await peer.take(lambda d, _a: d[1:21] == msg_id)
        assert got is not None and got[0][0] == 0x04 and len(got[0]) == HEADER_LEN
        await asyncio.sleep(0.1)
        assert len(node.storage.onion) == 0 and node.storage.onion.refused == {}
        assert node.protocol.stats["retry_sent"] == retries + 1
        assert len(peer.received) == 0  # the RETRY and nothing else
    finally:
        transport.close()
        await stop_mesh(mesh, extras)
