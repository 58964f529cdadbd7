"""Pre-built onion-service circuits (runtime.client.hs_pool) on a real-socket testnet.

With both pools warm, a first connection to an onion service sends no CREATE and exactly one
EXTEND on each of its three onion circuits (the client's introduction and rendezvous circuits,
the service's rendezvous circuit), counted at the ClientCircuit that sends them; the paths keep
the shape and the restrictions of vanguards-lite (guard, L2, (middle,) last hop; the rendezvous
point is neither side's first hop; no relay is both sides' first hop)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from onionmesh.directory.hs_prebuilt import PrebuiltKind
from onionmesh.directory.vanguards import HsPurpose
from onionmesh.errors import OnionConnectFailed
from onionmesh.proto.client_circuit import ClientCircuit
from onionmesh.runtime.client.hs_pool import CLIENT_TARGET, POOL_PURPOSE, SERVICE_TARGET
from tests.runtime.conftest import eventually, http_get_via_socks, start_mesh, stop_mesh
from tests.runtime.test_onion_services import RELAYS, WAIT, paths, publish, separate_guards, service_node

ONION_PURPOSES = ("hs_client_intro", "hs_client_rend", "hs_service_rend")


async def test_warm_pools_make_each_onion_circuit_one_extend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    node = await service_node(mesh, tmp_path)
    client = mesh.client
    try:
        separate_guards(node, client)
        service = await publish(node, mesh)  # the service's pool started with the service
        learned, built = client.circuits.policy.cbt.count, []

        def on_built(what: str, handle) -> None:  # type: ignore[no-untyped-def]
            if what == "built":
                built.append(len(handle.path))

        client.circuits.listeners.append(on_built)
        client.hs.pool.want(client=True)  # what the first .onion request does (Tor's predicted HS use)
        assert await eventually(lambda: client.hs.pool.full() and node.hs.pool.full(), WAIT), (
            client.hs.pool.stats, node.hs.pool.stats,
        )  # fmt: skip
        # the build-timeout learner took the 3-hop builds, not the 2-hop guard-L2 ones
        assert built.count(2) >= 2, built
        assert client.circuits.policy.cbt.count - learned == len([n for n in built if n >= 3]), built
        assert all(h.purpose == POOL_PURPOSE and not h.circ.streams for k in client.hs.pool.ready
                   for h in client.hs.pool.ready[k])  # fmt: skip

        # The scenario: a rendezvous point both pools can serve and an introduction point the
        # client's pool can serve (which relays those are is chance; the test picks them so the
        # count below is deterministic).  A point no pooled circuit fits is built whole, as before.
        by_identity = {r.identity_pk: r for r in client.relays}
        real_choose = client.hs.choose_last_hop

        def rendezvous_point(avoid: set[str]):  # type: ignore[no-untyped-def]
            chosen = real_choose(avoid)  # today's rule (never one of the client's guards)
            guards = client.circuits.policy.primary_guards(client.relays)
            ok = [
                r for r in client.relays
                if r.fingerprint not in avoid and r.fingerprint not in guards
                and client.hs.pool.has_fit(HsPurpose.CLIENT_REND, r)
                and node.hs.pool.has_fit(HsPurpose.SERVICE_REND, r)
            ]  # fmt: skip
            assert ok, "no rendezvous point both pools fit"
            return chosen if chosen in ok else ok[0]

        real_introduce_at = client.onion._introduce_at

        async def fitting_intro_point_first(point, *args):  # type: ignore[no-untyped-def]
            if not client.hs.pool.has_fit(HsPurpose.CLIENT_INTRO, by_identity[point.identity_pk]):
                raise OnionConnectFailed(0xF2, "skipped by the test: no pooled circuit fits")
            return await real_introduce_at(point, *args)

        monkeypatch.setattr(client.hs, "choose_last_hop", rendezvous_point)
        monkeypatch.setattr(client.onion, "_introduce_at", fitting_intro_point_first)
        sent: Counter[tuple[int, str]] = Counter()
        real_create, real_extend = ClientCircuit.create, ClientCircuit.extend

        def create(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            sent[(id(self), "CREATE")] += 1
            return real_create(self, *args, **kwargs)

        def extend(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            sent[(id(self), "EXTEND")] += 1
            return real_extend(self, *args, **kwargs)

        monkeypatch.setattr(ClientCircuit, "create", create)
        monkeypatch.setattr(ClientCircuit, "extend", extend)
        onion_handles = []

        def seen(what: str, handle) -> None:  # type: ignore[no-untyped-def]
            if handle.purpose in ONION_PURPOSES and handle not in onion_handles:
                onion_handles.append(handle)

        client.circuits.listeners.append(seen)
        node.circuits.listeners.append(seen)

        body = await asyncio.to_thread(http_get_via_socks, mesh.socks_port, service.address, 80, "/blob/5000")
        assert body == mesh.origin.blob(5000)
        assert client.onion.stats.get("joined") == 1, client.onion.stats
        assert await eventually(lambda: service.stats.get("rend_joined") == 1, WAIT)

        by_purpose = Counter(h.purpose for h in onion_handles)
        assert by_purpose == Counter(ONION_PURPOSES), by_purpose  # one of each, no whole-build retry
        for handle in onion_handles:
            assert sent[(id(handle.circ), "CREATE")] == 0, handle.purpose
            assert sent[(id(handle.circ), "EXTEND")] == 1, handle.purpose
        assert client.hs.pool.stats.get("taken") == 2 and node.hs.pool.stats.get("taken") == 1

        # The path properties of test_onion_services still hold on the cannibalized circuits.
        client_rend = paths(client, "hs_client_rend")
        service_rend = paths(node, "hs_service_rend")
        assert len(client_rend) == 1 and len(service_rend) == 1
        rp = client_rend[0][-1]
        assert service_rend[0][-1] == rp
        client_firsts = {p[0] for p in client_rend} | {p[0] for p in paths(client, "general")}
        client_firsts |= {p[0] for p in paths(client, POOL_PURPOSE)}
        service_firsts = {p[0] for p in service_rend} | {p[0] for p in paths(node, "hs_service_intro")}
        service_firsts |= {p[0] for p in paths(node, POOL_PURPOSE)}
        assert rp not in client_firsts and all(p[0] != rp for p in service_rend)
        assert not client_firsts & service_firsts
        assert len(client_rend[0]) == 3 and len(service_rend[0]) == 4
        l2s = {v.fingerprint for v in client.hs.vanguards.vanguards}
        assert client_rend[0][1] in l2s
        assert service_rend[0][1] in {v.fingerprint for v in node.hs.vanguards.vanguards}
        intro = next(h for h in onion_handles if h.purpose == "hs_client_intro")
        assert len(intro.path) == 4 and intro.path[1].fingerprint in l2s
        # the pools refill in the background
        assert await eventually(lambda: client.hs.pool.full() and node.hs.pool.full(), WAIT)
    finally:
        await node.stop()
        await stop_mesh(mesh, extras)


async def test_the_service_pool_is_closed_after_the_last_service_stops(tmp_path: Path) -> None:
    """A node keeps pre-built service circuits while it runs a service, not after: removing the
    last one closes them and none is rebuilt; a node that also wants client circuits keeps those."""
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    node = await service_node(mesh, tmp_path)
    pool = node.hs.pool
    try:
        separate_guards(node, mesh.client)
        service = await publish(node, mesh)
        assert await eventually(pool.full, WAIT), pool.stats
        assert [len(pool.ready[k]) for k in PrebuiltKind] == [0, SERVICE_TARGET[PrebuiltKind.LONG]]
        pooled = [h for k in PrebuiltKind for h in pool.ready[k]]
        await node.remove_onion_service(service.service_id)
        assert all(h.closed_reason is not None for h in pooled)
        assert not any(pool.ready.values()) and not any(pool.targets.values())
        built = pool.stats.get("built", 0)
        pool.want()  # wakes the refill loop: nothing is wanted, nothing is built
        await asyncio.sleep(0.5)
        assert pool.stats.get("built", 0) == built and not any(pool.ready.values())
        pool.want(client=True)
        assert await eventually(pool.full, WAIT), pool.stats
        assert {k: len(pool.ready[k]) for k in PrebuiltKind} == CLIENT_TARGET
    finally:
        await node.stop()
        await stop_mesh(mesh, extras)
