"""Onion-descriptor fetches ask the view's nearest relays directly first (issue 19, stage 5):
on a mesh whose every relay is in the client's view, no iterative lookup is needed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from onionmesh.crypto import hs_address, hs_blinding
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.directory.hs_publish import revision_for
from onionmesh.runtime.client.dht_over_circuits import CircuitDhtChannel
from onionmesh.runtime.client.hs_fetch import FetchOutcome, circuit_dht_node, fetch_onion_descriptor
from tests.helpers.mesh import start_mesh, stop_mesh
from tests.runtime.conftest import eventually
from tests.runtime.test_hs_dht import inner_for, publish, record


async def test_fetch_asks_the_views_nearest_relays_before_any_iterative_lookup(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=5, exits=1)
    try:
        service = circuit_dht_node(CircuitDhtChannel(mesh.client.circuits))
        relays = mesh.client.directory.relays()
        ident = ExpandedKey.from_seed(os.urandom(32))
        now = time.time()
        period = hs_blinding.period_num(int(now))
        raw = record(ident, inner_for(mesh), revision_for(period, now))
        assert all(n >= 1 for n in await publish(service, raw, relays))

        client_dht = circuit_dht_node(CircuitDhtChannel(mesh.client.circuits))
        iterative: list[bytes] = []
        direct: list[int] = []
        real_lookup, real_direct = client_dht.lookup, client_dht.lookup_replicas

        async def counting_lookup(key: bytes, **kw: Any) -> Any:
            iterative.append(key)
            return await real_lookup(key, **kw)

        async def counting_direct(key: bytes, replicas: Any, batch: int = 4) -> Any:
            result = await real_direct(key, replicas, batch)
            direct.append(result.queries)
            return result

        client_dht.lookup = counting_lookup  # type: ignore[method-assign]
        client_dht.lookup_replicas = counting_direct  # type: ignore[method-assign]
        got = await fetch_onion_descriptor(client_dht, hs_address.encode_address(ident.public), relays)
        assert got.outcome is FetchOutcome.OK
        assert iterative == []  # every store key answered by the view's nearest relays
        assert direct and all(q <= 4 for q in direct)  # and in the first round of four
    finally:
        await stop_mesh(mesh, extras)


def one_replica_never_answers(client_dht: Any) -> tuple[list[bytes], list[bytes]]:
    """Make the first replica key looked up hang until cancelled: (keys stuck, keys cancelled)."""
    real_direct, stuck, cancelled = client_dht.lookup_replicas, [], []

    async def lookup_replicas(key: bytes, replicas: Any, batch: int = 4) -> Any:
        if not stuck or stuck[0] == key:
            stuck.append(key)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(key)
                raise
        return await real_direct(key, replicas, batch)

    client_dht.lookup_replicas = lookup_replicas
    return stuck, cancelled


async def test_the_first_replica_that_answers_wins_and_a_deadline_keeps_what_was_found(
    tmp_path: Path,
) -> None:
    """One of the four replica keys never answers (a dead or withholding neighbourhood): the
    default fetch opens the first record that verifies without waiting for it (Tor takes the first
    HSDir's answer), and cancels it; a complete fetch waits until its deadline and still opens
    what the other three returned (before, a deadline threw every found record away: 0xF0)."""
    mesh, extras = await start_mesh(tmp_path, relays=5, exits=1)
    try:
        service = circuit_dht_node(CircuitDhtChannel(mesh.client.circuits))
        relays = mesh.client.directory.relays()
        ident = ExpandedKey.from_seed(os.urandom(32))
        now = time.time()
        period = hs_blinding.period_num(int(now))
        raw = record(ident, inner_for(mesh), revision_for(period, now))
        assert all(n >= 1 for n in await publish(service, raw, relays))
        address = hs_address.encode_address(ident.public)
        for complete in (False, True):
            client_dht = circuit_dht_node(CircuitDhtChannel(mesh.client.circuits))
            stuck, cancelled = one_replica_never_answers(client_dht)
            got = await fetch_onion_descriptor(
                client_dht, address, relays, deadline=8.0 if complete else 120.0, complete=complete
            )
            assert got.outcome is FetchOutcome.OK, (complete, got.outcome)
            assert await eventually(lambda s=stuck, c=cancelled: bool(s) and c == s[:1], 10), (
                stuck,
                cancelled,
            )
            if complete:
                assert got.found[period] == 3, got.found
    finally:
        await stop_mesh(mesh, extras)
