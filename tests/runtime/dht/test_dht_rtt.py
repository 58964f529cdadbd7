"""No cliff at high RTT (issue 20 item 1): the DHT's RPC timeouts follow measured round trips.

Real protocol code over simulations.memnet on a virtual clock (no wall time, no timed assert):
every datagram takes 300 ms each way (a 600 ms round trip: a geostationary hop), 3 % are lost.
With the former fixed 0.5 s RPC timeout every answer came too late and a crawl found nothing.
"""

from __future__ import annotations

import asyncio
import random

from onionmesh.runtime.dht.node import CRAWL_DEADLINE, DhtNode, crawl_deadline
from onionmesh.runtime.dht.protocol import WAIT_CEILING, WAIT_FLOOR, WAIT_INITIAL
from simulations import vclock
from simulations.dht_sim import build_network, fill_routing_tables
from simulations.memnet import LinkModel, MemoryNetwork
from simulations.relays import random_ip

RELAYS = 20


def crawl_on(link: LinkModel, seed: int) -> tuple[int, dict[str, int], float]:
    async def main() -> tuple[int, dict[str, int], float]:
        net = MemoryNetwork(link, seed=seed)
        network = build_network(RELAYS, net, seed)
        fill_routing_tables(network, seed)
        rng = random.Random(seed)
        client = DhtNode(None, clock=network.clock, ksize=network.nodes[0].dht.ksize)
        client.protocol = client._create_protocol()
        client.transport = net.attach((random_ip(rng, set()), 40000), client.protocol)
        await client.bootstrap([n.address for n in network.nodes[:3]])
        found = await client.crawl()
        stats = dict(client.protocol.stats)
        rto = client.protocol.rtt.all.rto()
        client.stop()
        for node in network.nodes:
            node.dht.stop()
        return len(found), stats, rto

    result, _virtual = vclock.run(main)
    return result


def test_a_crawl_over_600ms_round_trips_and_3_percent_loss_finds_the_network() -> None:
    satellite = LinkModel(base=0.300, median=0.0001, sigma=0.0, loss=0.03)
    found, _stats, rto = crawl_on(satellite, seed=3)
    assert found >= RELAYS - 1  # a lost datagram may cost one relay twice; never the crawl
    # The estimator learned the path: its timeout sits above the 600 ms round trip.
    assert 0.6 < rto <= WAIT_CEILING


def test_on_a_fast_path_timeouts_stay_short() -> None:
    lan = LinkModel(base=0.001, median=0.0001, sigma=0.0)
    found, _stats, rto = crawl_on(lan, seed=4)
    assert found == RELAYS
    assert rto == WAIT_FLOOR < WAIT_INITIAL  # a dead contact on a LAN costs the floor, not more


def test_crawl_deadline_follows_the_rto() -> None:
    assert crawl_deadline(WAIT_FLOOR) == CRAWL_DEADLINE
    assert crawl_deadline(WAIT_CEILING) > CRAWL_DEADLINE
    assert crawl_deadline(1e9) == 600.0


def test_a_join_survives_a_lost_datagram() -> None:
    """The bootstrap contact's first answer is lost (it is unreachable for the first 0.2 s): the
    joining node asks again instead of staying outside the network until its next refresh."""

    async def main() -> int:
        net = MemoryNetwork(LinkModel(base=0.05, median=0.0001, sigma=0.0), seed=5)
        network = build_network(4, net, 5)
        fill_routing_tables(network, 5)
        contact = network.nodes[0].address
        net.set_online(contact, False)
        asyncio.get_running_loop().call_later(0.2, net.set_online, contact, True)
        joiner = DhtNode(None, clock=network.clock, ksize=network.nodes[0].dht.ksize)
        joiner.protocol = joiner._create_protocol()
        joiner.transport = net.attach(("10.9.9.9", 40000), joiner.protocol)
        found = await joiner.bootstrap([contact])
        joiner.stop()
        for node in network.nodes:
            node.dht.stop()
        return len(found)

    found, _virtual = vclock.run(main)
    assert found >= 1
