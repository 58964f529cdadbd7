"""The client's fetch of an onion service's descriptor, by address, through circuits.

    result = await fetch_onion_descriptor(dht, "xyz….onion", relays, client_secret=key)

* The address gives the service's key `A` (a malformed one: BAD_ADDRESS, 0xF6, and nothing is
  sent).  For the current period (and, near a boundary, the adjacent one: a skewed clock, here or
  at the service) the client blinds `A` itself and computes the four replica keys
  (directory.hs_placement); it looks up all of them at once (the first record that verifies and
  opens wins, as Tor takes the first HSDir's; `complete=True` takes the newest of all replicas):
  first by asking the 16 relays of its view nearest each key directly
  (`DhtNode.lookup_replicas`: where publishers store), then, if none has it, over the DHT's
  disjoint paths (runtime.dht.node.lookup), so a Sybil cluster near one replica withholds one
  of four.
* Every answer is checked as a storing node checks it (signature by the blinded key, size,
  period, times, key).  A record is then opened with `decrypt_record` (with the client's
  authorization key, if any).
* The DHT node must send through circuits (`circuit_dht_node`): the storing nodes see the last
  hop's address, never the client's.  A UDP DHT node is refused (`DirectFetchRefused`).

Outcomes map to Tor's SOCKS5 extended errors, so a SOCKS front end can answer with
`result.outcome.value`: 0xF0 not found, 0xF1 invalid, 0xF4 auth missing, 0xF5 auth wrong,
0xF6 bad address.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from kademlia.node import Node

from onionmesh.crypto.hs_address import parse_onion_host
from onionmesh.crypto.hs_blinding import PERIOD_LENGTH_MIN, blind_public, period_num, period_start
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dht_records import node_id_for
from onionmesh.directory.hs_descriptor import InnerDescriptor, OuterRecord, decrypt_record
from onionmesh.directory.hs_placement import store_keys
from onionmesh.errors import BadOnionAddress, DescriptorDecryptError, DirectFetchRefused, OnionmeshError
from onionmesh.runtime.client.dht_over_circuits import CircuitDhtChannel, CircuitDhtProtocol
from onionmesh.runtime.dht.node import KSIZE, DhtNode

FETCH_DEADLINE = 30.0  # Tor's SocksTimeout scale: the whole fetch, all replicas and periods
ADJACENT_WINDOW = 3600  # this close to a boundary, the adjacent period is asked too


class FetchOutcome(enum.IntEnum):
    """The fetch's result; the value is the SOCKS5 reply code Tor uses for it (0 = found)."""

    OK = 0x00
    NOT_FOUND = 0xF0
    INVALID = 0xF1
    AUTH_MISSING = 0xF4
    AUTH_WRONG = 0xF5
    BAD_ADDRESS = 0xF6


@dataclass
class FetchResult:
    outcome: FetchOutcome
    descriptor: InnerDescriptor | None = None
    record: OuterRecord | None = None  # the record it came from (period, revision)
    service_pk: bytes | None = None
    found: dict[int, int] = field(default_factory=dict)  # period -> replicas that returned a valid record

    @property
    def socks_reply(self) -> int:
        return int(self.outcome)


def circuit_dht_node(channel: CircuitDhtChannel) -> DhtNode:
    """A DHT node with no socket whose every RPC travels through `channel`'s circuits
    (runtime.client.dht_over_circuits): the one to fetch (and publish) onion descriptors with."""
    dht = DhtNode(None)
    dht.protocol = CircuitDhtProtocol(
        dht.node, dht.storage, dht.ksize, lambda: None, dht.clock, channel=channel
    )
    return dht


def seeds_near(key: bytes, dht: DhtNode, relays: Sequence[RelayDescriptor], k: int = KSIZE) -> list[Node]:
    """Starting contacts for a lookup of `key`: the k closest of the routing table and of the
    client's verified view (a DHT node over circuits has no table of its own)."""
    target = Node(key)
    nodes: dict[bytes, Node] = {}
    for desc in relays:
        if desc.dht_contact is not None:
            nid = node_id_for(desc.identity_pk)
            nodes[nid] = Node(nid, desc.dht_contact[0], desc.dht_contact[1])
    if dht.protocol is not None:
        for n in dht.protocol.router.find_neighbors(target, k=k):
            nodes.setdefault(n.id, n)
    return sorted(nodes.values(), key=lambda n: n.distance_to(target))[:k]


def periods_to_fetch(now: float, length_min: int = PERIOD_LENGTH_MIN) -> list[int]:
    """The current period first, then the adjacent one if `now` is near a boundary."""
    current = period_num(int(now), length_min)
    out = [current]
    if now >= period_start(current + 1, length_min) - ADJACENT_WINDOW:
        out.append(current + 1)
    if now < period_start(current, length_min) + ADJACENT_WINDOW:
        out.append(current - 1)
    return out


def _check_channel(dht: DhtNode) -> None:
    if not isinstance(dht.protocol, CircuitDhtProtocol) or dht.transport is not None:
        raise DirectFetchRefused("onion descriptors are fetched through circuits only")


async def _one_key(dht: DhtNode, key: bytes, relays: Sequence[RelayDescriptor]) -> OuterRecord | None:
    """Ask the view's nearest relays to `key` directly first (where a publisher that found the
    key's neighbourhood stored: `DhtNode.lookup_replicas`, 4 at a time, no candidate heap for
    colluding answers to crowd); only if none of them has a valid record, the iterative lookup."""
    seeds = seeds_near(key, dht, relays)
    direct = await dht.lookup_replicas(key, seeds)
    if direct.hs_record is not None:
        return direct.hs_record
    return (await dht.lookup(key, want_value=True, seeds=seeds)).hs_record


async def fetch_onion_descriptor(
    dht: DhtNode,
    host: str,
    relays: Sequence[RelayDescriptor],
    *,
    client_secret: bytes | None = None,
    now: float | None = None,
    deadline: float = FETCH_DEADLINE,
    complete: bool = False,
) -> FetchResult:
    """Find, verify and open the descriptor of the service at `host` (see the module doc).

    By default the first record that verifies and opens wins, as a Tor client takes the first
    HSDir's answer: the connection waits for the fastest replica, not the slowest. `complete`
    waits for every replica (or the deadline) and takes the newest revision (the client's retry
    after a descriptor's introduction points all failed: a replica may have served an old one).
    Records found before the deadline count either way."""
    try:
        service_pk = parse_onion_host(host)
    except BadOnionAddress:
        return FetchResult(FetchOutcome.BAD_ADDRESS)
    _check_channel(dht)
    now = time.time() if now is None else now
    periods = periods_to_fetch(now)
    result = FetchResult(FetchOutcome.NOT_FOUND, service_pk=service_pk, found=dict.fromkeys(periods, 0))
    lookups = {
        asyncio.create_task(_one_key(dht, key, relays), name="onion-descriptor-lookup"): period
        for period in periods
        for key in store_keys(blind_public(service_pk, period), period)
    }
    found: dict[int, list[OuterRecord]] = {p: [] for p in periods}
    errors: list[FetchOutcome] = []
    pending = set(lookups)
    try:
        async with asyncio.timeout(deadline):
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    record = None if task.exception() is not None else task.result()
                    if record is None:
                        continue
                    found[lookups[task]].append(record)
                    result.found[lookups[task]] += 1
                    if not complete and _open(result, record, client_secret, errors):
                        return result
    except TimeoutError:
        pass
    finally:
        for task in pending:
            task.cancel()
    for period in periods:
        records = found[period]
        if records and _open(result, max(records, key=lambda r: r.revision), client_secret, errors):
            return result
    if errors:  # an auth verdict explains more than "invalid"
        result.outcome = min(errors, key=lambda e: (e is FetchOutcome.INVALID, e.value))
    return result


def _open(
    result: FetchResult, record: OuterRecord, client_secret: bytes | None, errors: list[FetchOutcome]
) -> bool:
    """Decrypt `record` into `result` (True), or note why it cannot be opened (False)."""
    assert result.service_pk is not None
    try:
        result.descriptor = decrypt_record(record, result.service_pk, client_secret)
    except DescriptorDecryptError as exc:
        errors.append(FetchOutcome.AUTH_MISSING if exc.auth == "missing" else FetchOutcome.AUTH_WRONG)
        return False
    except OnionmeshError:
        errors.append(FetchOutcome.INVALID)
        return False
    result.outcome, result.record = FetchOutcome.OK, record
    return True
