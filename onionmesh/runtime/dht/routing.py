"""Contacts in the DHT: parsing a peer's list of contacts, and a routing table whose
`find_neighbors` is exact (the `kademlia` package's is not)."""

from __future__ import annotations

import heapq
import ipaddress

from kademlia.node import Node
from kademlia.routing import RoutingTable

from onionmesh.directory.dht_records import NODE_ID_LEN


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
