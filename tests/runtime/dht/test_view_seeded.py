"""View-seeded lookups over real UDP on loopback (docs/directory-design.md §5, stage 5): the
client computes the replica set from its view (directory.placement) and asks the replicas
directly; withholding and dead replicas cost queries, not the lookup.  Plus the iterative
lookup's density check."""

from __future__ import annotations

import time
from typing import Any

from kademlia.node import Node

from onionmesh.directory.descriptor import RelayDescriptor, descriptor_key
from onionmesh.directory.placement import Candidate, ReplicaIndex, day_of
from onionmesh.runtime.dht.node import DENSITY_FACTOR, DhtNode, hides_neighbourhood
from tests.helpers.dht import Net, proto


def contact(node: DhtNode) -> Node:
    return Node(node.node.id, *node.address)


async def test_view_seeded_lookup_finds_the_value_past_withholding_and_dead_replicas() -> None:
    async with Net() as net:
        relays = await net.network(20)
        target = relays[0]
        assert target.descriptor_raw is not None
        fp = RelayDescriptor.decode(target.descriptor_raw).fingerprint
        key = descriptor_key(fp)
        now = time.time()
        view = ReplicaIndex([Candidate(r.node.id, now - 4 * 86_400, r) for r in relays], now)
        replicas = [c.item for c in view.replicas(key, day_of(now))]
        assert len(replicas) == 16
        # The publisher stores only at the last replica in asking order; the first four withhold
        # (answer with contacts, as colluding Sybils do) and the next four are dead.
        holder = replicas[-1]
        assert holder.storage.accepted(holder.storage.offer(key, target.descriptor_raw))
        asked: list[DhtNode] = []

        def withholder(node: DhtNode) -> None:
            def rpc_find_value(sender: tuple[str, int], nodeid: object, key: object) -> Any:
                asked.append(node)
                return []

            proto(node).rpc_find_value = rpc_find_value  # type: ignore[method-assign]

        for node in replicas[:4]:
            withholder(node)
        for node in replicas[4:8]:
            node.stop()  # its datagrams now go unanswered
        client = await net.client()
        result = await client.lookup_replicas(key, [contact(r) for r in replicas])
        assert result.raw == target.descriptor_raw
        assert result.queries == 16  # four rounds of four: the value sat at the last replica
        assert result.rounds == [4]
        assert sorted(map(id, asked)) == sorted(map(id, replicas[:4]))


async def test_view_seeded_lookup_stops_at_the_first_round_with_a_value() -> None:
    async with Net() as net:
        relays = await net.network(12)
        target = relays[3]
        assert target.descriptor_raw is not None
        key = descriptor_key(RelayDescriptor.decode(target.descriptor_raw).fingerprint)
        now = time.time()
        view = ReplicaIndex([Candidate(r.node.id, 0.0, r) for r in relays], now)
        replicas = [c.item for c in view.replicas(key, day_of(now))]
        for r in replicas:
            r.storage.offer(key, target.descriptor_raw)
        client = await net.client()
        result = await client.lookup_replicas(key, [contact(r) for r in replicas])
        assert result.raw == target.descriptor_raw
        assert result.queries == 4 and result.rounds == [1]


def test_density_check_flags_answers_that_hide_the_neighbourhood() -> None:
    target = Node(bytes(20))
    unit = 2**160 // 1000
    near = [Node((j * unit).to_bytes(20, "big")) for j in range(1, 17)]
    far = [Node((DENSITY_FACTOR * 4 * j * unit).to_bytes(20, "big")) for j in range(1, 17)]
    assert not hides_neighbourhood(near, target, 1000)
    assert hides_neighbourhood(far, target, 1000)
    assert not hides_neighbourhood(far, target, 0)  # no view: no check
    assert not hides_neighbourhood([], target, 1000)


async def test_iterative_lookup_queries_answers_that_hide_the_neighbourhood_last() -> None:
    """A node that answers FIND_NODE with only far contacts (real, proven ones) is counted as
    hiding the key's neighbourhood once the caller knows the network's size; the lookup still
    finds the value through the others."""
    async with Net() as net:
        relays = await net.network(16)
        target = relays[5]
        assert target.descriptor_raw is not None
        key = descriptor_key(RelayDescriptor.decode(target.descriptor_raw).fingerprint)
        assert await target.publish(target.descriptor_raw) >= 3
        k = Node(key)
        # Contacts in the other half of the ID space (≥ 2^159 away); 16 random IDs all in the
        # key's half has probability 2^-16.
        far_nodes = [r for r in relays if k.distance_to(r.node) >= 2**159][:3]
        assert far_nodes
        far = [[n.node.id, *n.address] for n in far_nodes]
        liar = next(r for r in relays if r not in far_nodes and r is not target)

        def rpc_find_node(sender: tuple[str, int], nodeid: object, key: object) -> Any:
            return far

        def rpc_find_value(sender: tuple[str, int], nodeid: object, key: object) -> Any:
            return far

        proto(liar).rpc_find_node = rpc_find_node  # type: ignore[method-assign]
        proto(liar).rpc_find_value = rpc_find_value  # type: ignore[method-assign]
        client = await net.client()
        # Sized 64, the check flags answers whose j-th contact is ≥ 8·j·2^160/64 = j·2^157 away
        # for every j ≤ 3: those far contacts are.
        client.network_size = 64
        result = await client.lookup(key, want_value=True, seeds=[contact(liar)])
        assert result.deferred >= 1
        client.network_size = 0
        plain = await client.lookup(key, want_value=True, seeds=[contact(liar)])
        assert plain.deferred == 0
