"""Onion services end to end on a real-socket testnet: relays (intro and rendezvous handlers at
their switches), a service run by one ClientNode for a local HTTP server, a client reaching it by
its .onion name through its SOCKS port (pysocks and curl --socks5-hostname), byte-exact.

Also: which relays each side's circuits used (no relay is both sides' first hop, the rendezvous
point is neither side's first hop), Tor's extended SOCKS codes (0xF6 typo, 0xF0 unpublished,
0xF2/0xF0 stopped), an intro point killed and replaced, a restart with the same key."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest
from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import hs_blinding, hs_ntor
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.crypto.hs_intro import seal_introduce1
from onionmesh.directory.guards import GuardSet, SampledGuard
from onionmesh.directory.hs_publish import periods_to_publish
from onionmesh.directory.vanguards import HsPurpose
from onionmesh.runtime.client import onion_client
from onionmesh.runtime.client.circuit_manager import StreamFailed
from onionmesh.runtime.client.node import ClientConfig, ClientNode
from onionmesh.runtime.client.onion_service import OnionService, OnionServiceSpec, PortMap
from onionmesh.wire.hs_cells import Introduce1, IntroduceAck, IntroduceAckStatus
from onionmesh.wire.relay_msg import EndReason, RelayCommand
from tests.runtime.conftest import (
    Mesh,
    eventually,
    http_get_via_socks,
    raw_socks5_reply,
    start_mesh,
    stop_mesh,
)

RELAYS = 8
WAIT = 90.0  # liveness bound only
GATE = 10.0  # how long a gated step waits for the step it should overlap (liveness bound only)


async def service_node(mesh: Mesh, tmp_path: Path, name: str = "service", relays: int = RELAYS) -> ClientNode:
    node = ClientNode(
        ClientConfig(data_dir=tmp_path / name, socks_port=0, control_port=0,
                     bootstrap=(mesh.relays[0].dht.address,), prebuilt_circuits=0)
    )  # fmt: skip
    await node.start()
    assert await node.directory.wait_for(relays, 30) >= relays
    return node


def separate_guards(service: ClientNode, client: ClientNode) -> None:
    """The test's client must not share a guard with the service (two users of one network
    usually do not); the property checked is what the runtime then adds on top.  Each node's guard
    sample is pinned: its own primaries usable, the other's sampled and failing (not due for a
    retry within the test), so that a guard which fails under load is replaced by one of the
    node's own, never by the other's.  Circuits the client built before (the mesh's proxy
    pre-builds) are closed, so none starts at a guard of the service."""
    now = time.time()
    theirs = service.circuits.policy.primary_guards(service.relays)
    ours = [d.fingerprint for d in client.relays if d.fingerprint not in theirs]
    for node, usable, blocked in ((service, theirs, ours), (client, ours, theirs)):
        guards = GuardSet([SampledGuard(fp, added_at=now) for fp in [*usable, *blocked]])
        for fp in blocked:
            guards.mark_failure(fp, now)
        node.circuits.policy.guards = guards
    for number in list(client.circuits.circuits):
        client.circuits.close_circuit(number)


async def fetch_in_tries(client: ClientNode, address: str, path: str, tries: int = 5) -> tuple[bytes, int]:
    """(body, failed tries): with a relay killed a moment before still in the directories, a first
    try may build through it (0xF3 when the service's side does), as Tor's can until its consensus
    drops the relay; counted, not timed."""
    failed = 0
    for _ in range(tries):
        try:
            return await asyncio.to_thread(http_get_via_socks, client.socks.port, address, 80, path), failed
        except OSError:
            failed += 1
    return b"", failed


async def publish(node: ClientNode, mesh: Mesh, key: ExpandedKey | None = None) -> OnionService:
    key = key or ExpandedKey.from_seed(os.urandom(32))
    spec = OnionServiceSpec(key, (PortMap(80, "127.0.0.1", mesh.origin.port),))
    service = await node.add_onion_service(spec)
    assert await service.wait_published(WAIT), service.stats
    return service


def paths(node: ClientNode, purpose: str) -> list[list[str]]:
    return [[d.fingerprint for d in h.path] for h in node.circuits.circuits.values() if h.purpose == purpose]


async def test_service_reached_by_name_through_socks_byte_exact(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    node = await service_node(mesh, tmp_path)
    try:
        separate_guards(node, mesh.client)
        service = await publish(node, mesh)
        assert service.state == "published" and len(service.address) == 62
        assert len([s for s in service.intros if s.established.is_set()]) == 3
        body = await asyncio.to_thread(
            http_get_via_socks, mesh.socks_port, service.address, 80, "/blob/300000"
        )
        assert body == mesh.origin.blob(300000)
        # curl resolves nothing itself (--socks5-hostname): the name goes to the proxy
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--fail", "--max-time", "60",
            "--socks5-hostname", f"127.0.0.1:{mesh.socks_port}",
            f"http://{service.address}/blob/70000",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert out == mesh.origin.blob(70000)
        # one rendezvous circuit, reused by the second stream
        assert mesh.client.onion.stats.get("joined") == 1
        # Who saw whom: each side's first hop sees its address; nobody else does.
        client_rend = paths(mesh.client, "hs_client_rend")
        service_rend = paths(node, "hs_service_rend")
        assert len(client_rend) == 1 and len(service_rend) >= 1
        rp = client_rend[0][-1]
        assert any(p[-1] == rp for p in service_rend)
        client_firsts = {p[0] for p in client_rend} | {p[0] for p in paths(mesh.client, "general")}
        service_firsts = {p[0] for p in service_rend} | {p[0] for p in paths(node, "hs_service_intro")}
        # The client never makes its own guard the rendezvous point, and the service's path to it
        # never starts there. (The point, chosen by the client, may be a guard of the service's
        # introduction circuits, as in Tor: the client cannot know the service's guards.)
        assert rp not in client_firsts and all(p[0] != rp for p in service_rend)
        assert not client_firsts & service_firsts
        assert len(client_rend[0]) == 3 and all(len(p) == 4 for p in service_rend)
        # the rendezvous point joined two circuits; the intro points forwarded one introduction
        stats = mesh.relay(rp).stats
        assert stats.get("hs_rend_joined") == 1
        assert sum(r.stats.get("hs_introduce_forwarded", 0) for r in mesh.relays) == 1
    finally:
        await node.stop()
        await stop_mesh(mesh, extras)


async def test_socks_codes_typo_unpublished_stopped(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    node = await service_node(mesh, tmp_path)
    try:
        separate_guards(node, mesh.client)
        service = await publish(node, mesh)
        typo = service.address[:10] + ("a" if service.address[10] != "a" else "b") + service.address[11:]
        assert await asyncio.to_thread(raw_socks5_reply, mesh.socks_port, typo, 80) == 0xF6
        assert await asyncio.to_thread(raw_socks5_reply, mesh.socks_port, "nonsense.onion", 80) == 0xF6
        unpublished = OnionServiceSpec(ExpandedKey.from_seed(os.urandom(32)), (PortMap(80, "127.0.0.1", 1),))
        other = OnionService(unpublished, node.hs, node.hs_dht(), node.rng).address
        assert await asyncio.to_thread(raw_socks5_reply, mesh.socks_port, other, 80) == 0xF0
        await node.remove_onion_service(service.service_id)
        await asyncio.sleep(0.5)
        code = await asyncio.to_thread(raw_socks5_reply, mesh.socks_port, service.address, 80, 120)
        assert code in (0xF2, 0xF0), hex(code)
    finally:
        await node.stop()
        await stop_mesh(mesh, extras)


async def test_killed_intro_point_replaced_and_restart_keeps_address(tmp_path: Path) -> None:
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    node = await service_node(mesh, tmp_path)
    try:
        separate_guards(node, mesh.client)
        key = ExpandedKey.from_seed(os.urandom(32))
        service = await publish(node, mesh, key)
        body = await asyncio.to_thread(http_get_via_socks, mesh.socks_port, service.address, 80, "/blob/1000")
        assert body == mesh.origin.blob(1000)
        # kill one intro point that is nobody's guard and not the DHT's bootstrap node
        guards = set(mesh.client.circuits.policy.primary_guards(mesh.client.relays))
        guards |= set(node.circuits.policy.primary_guards(node.relays))
        intro_fps = [
            s.relay.fingerprint for s in service.intros if s.relay.fingerprint != mesh.relays[0].fingerprint
        ]
        victim = sorted(intro_fps, key=lambda fp: fp in guards)[0]  # not a guard if it can help
        uploads = service.stats.get("desc_uploaded", 0)
        await mesh.relay(victim).stop()
        assert await eventually(
            lambda: (
                len([s for s in service.intros if s.established.is_set()]) == 3
                and victim not in {s.relay.fingerprint for s in service.intros}
                and service.stats.get("desc_uploaded", 0) > uploads
            ),
            WAIT,
        ), service.stats
        assert service.stats.get("intro_lost", 0) >= 1
        # a fresh client (no cached descriptor) reaches it through the new descriptor
        fresh = await service_node(mesh, tmp_path, "fresh", RELAYS - 1)
        try:
            separate_guards(node, fresh)
            got, failed = await fetch_in_tries(fresh, service.address, "/blob/2000")
            assert got == mesh.origin.blob(2000) and failed <= 3, failed
            # restart with the same key: same address, reachable again (the client's cached
            # descriptor names intro points that are gone: it fetches the new one)
            address = service.address
            await node.remove_onion_service(service.service_id)
            await asyncio.sleep(1.1)  # the time-derived revision must grow (directory.hs_publish)
            again = await publish(node, mesh, key)
            assert again.address == address
            got, failed = await fetch_in_tries(fresh, address, "/blob/3000")
            assert got == mesh.origin.blob(3000) and failed <= 3, failed
            assert fresh.onion.stats.get("descriptor_refetch", 0) >= 1
        finally:
            await fresh.stop()
    finally:
        await node.stop()
        await stop_mesh(mesh, extras)


async def test_client_builds_rendezvous_while_fetching_and_introducing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Tor: the rendezvous circuit is launched before the descriptor has arrived, and the
    introduction circuit is launched before the rendezvous circuit is built.  Each step is held
    (bounded) until the step it should overlap has begun, so a client that ran them one after the
    other shows the wrong order (an order of events, not a time)."""
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    node = await service_node(mesh, tmp_path)
    try:
        separate_guards(node, mesh.client)
        service = await publish(node, mesh)
        connector = mesh.client.onion
        events: list[str] = []
        rend_launched, intro_launched = asyncio.Event(), asyncio.Event()
        real_build, real_fetch = connector.hs.build, onion_client.fetch_onion_descriptor

        async def held_until(event: asyncio.Event) -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GATE):
                    await event.wait()

        async def build(purpose, last_hop, service_id, on_message=None):  # type: ignore[no-untyped-def]
            events.append(f"{purpose.name} launched")
            if purpose is HsPurpose.CLIENT_REND:
                rend_launched.set()
                await held_until(intro_launched)
            elif purpose is HsPurpose.CLIENT_INTRO:
                intro_launched.set()
            handle = await real_build(purpose, last_hop, service_id, on_message)
            events.append(f"{purpose.name} built")
            return handle

        async def fetch(*args, **kwargs):  # type: ignore[no-untyped-def]
            events.append("fetch started")
            await held_until(rend_launched)
            result = await real_fetch(*args, **kwargs)
            events.append("fetch done")
            return result

        monkeypatch.setattr(connector.hs, "build", build)
        monkeypatch.setattr(onion_client, "fetch_onion_descriptor", fetch)
        body = await asyncio.to_thread(http_get_via_socks, mesh.socks_port, service.address, 80, "/blob/1000")
        assert body == mesh.origin.blob(1000)
        assert connector.stats.get("joined") == 1, connector.stats
        assert [events.count(f"{p} launched") for p in ("CLIENT_REND", "CLIENT_INTRO")] == [1, 1], events
        assert events.index("CLIENT_REND launched") < events.index("fetch done"), events
        assert events.index("CLIENT_INTRO launched") < events.index("CLIENT_REND built"), events
    finally:
        await node.stop()
        await stop_mesh(mesh, extras)


async def test_service_refuses_replayed_introduction_and_unmapped_port_and_never_sees_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over real sockets: (1) an INTRODUCE1 captured from an honest client and sent again through
    the same intro point, from a new circuit, reaches the service as INTRODUCE2 and is refused as a
    replay (counted; no second rendezvous), and so is a fresh INTRODUCE1 (a new X) that names the
    same rendezvous cookie (Tor's rendezvous-cookie replay cache); (2) a stream to a port the
    service does not map gets END DONE (Tor's reason, not EXITPOLICY) and the SOCKS client 0x05,
    and the circuit still carries the next stream to a mapped port; (3) every BEGIN reaching the
    service carries no address, only the port (Tor's `:port`)."""
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    node = await service_node(mesh, tmp_path)
    try:
        separate_guards(node, mesh.client)
        service = await publish(node, mesh)
        sealed: list[Introduce1] = []
        plaintexts: list[object] = []
        real_seal, real_begin = onion_client.seal_introduce1, service.streams.begin
        begin_hosts: list[object] = []

        def seal(*args, **kwargs):  # type: ignore[no-untyped-def]
            plaintexts.append(args[1])
            sealed.append(real_seal(*args, **kwargs))
            return sealed[-1]

        def begin(handle, event):  # type: ignore[no-untyped-def]
            begin_hosts.append(event.begin.host)
            real_begin(handle, event)

        monkeypatch.setattr(onion_client, "seal_introduce1", seal)
        monkeypatch.setattr(service.streams, "begin", begin)
        body = await asyncio.to_thread(http_get_via_socks, mesh.socks_port, service.address, 80, "/blob/1000")
        assert body == mesh.origin.blob(1000)
        assert len(sealed) == 1 and service.stats.get("rend_joined") == 1, service.stats
        # (1) the replay, from a new circuit through the same intro point
        slot = next(s for s in service.intros if s.auth.public == sealed[0].auth_key)
        pk = service.spec.key.public
        blinded = hs_blinding.blind_public(pk, periods_to_publish(time.time())[0])
        subcred = hs_blinding.subcredential(pk, blinded)
        fresh = hs_ntor.client_start(slot.auth.public, slot.enc_pub, subcred, mesh.client.rng)
        same_cookie = seal_introduce1(fresh, plaintexts[0])  # type: ignore[arg-type]
        assert same_cookie.client_pk != sealed[0].client_pk
        hs = mesh.client.hs
        for n, cell in enumerate((sealed[0], same_cookie), start=1):
            intro = await hs.build(HsPurpose.CLIENT_INTRO, slot.relay, None)
            try:
                intro.circ.send_message(RelayCommand.INTRODUCE1, cell.encode())
                ack = await hs.expect(intro, RelayCommand.INTRODUCE_ACK, WAIT)
                assert IntroduceAck.decode(ack.body).status is IntroduceAckStatus.SUCCESS  # forwarded
            finally:
                hs.forget(intro)
                mesh.client.circuits.close_circuit(intro.number)
            assert await eventually(lambda n=n: service.stats.get("introduce2") == 1 + n, WAIT), service.stats
        replays = ("introduce2_replayed", "introduce2_cookie_replayed")
        assert await eventually(lambda: all(service.stats.get(k) == 1 for k in replays), WAIT), service.stats
        assert service.stats.get("rend_joined") == 1, service.stats
        # (2) an unmapped port, on the rendezvous circuit the first stream used
        ends: list[EndReason] = []
        streams = mesh.client.circuits.streams
        real_open = streams.open_stream

        async def open_stream(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                return await real_open(*args, **kwargs)
            except StreamFailed as failed:
                ends.append(failed.reason)
                raise

        monkeypatch.setattr(streams, "open_stream", open_stream)
        joined = [h for h in mesh.client.onion._circuits.values() if h.closed_reason is None]
        assert len(joined) == 1
        code = await asyncio.to_thread(raw_socks5_reply, mesh.socks_port, service.address, 81)
        assert code == 0x05, (code, ends, service.stats)
        assert ends == [EndReason.DONE], ends
        assert service.stats.get("stream_unmapped_port") == 1, service.stats
        # the circuit stays open (closing it broke Chromium's page load): the next stream uses it
        assert joined[0].closed_reason is None and len(service.rend_circuits) == 1
        body = await asyncio.to_thread(http_get_via_socks, mesh.socks_port, service.address, 80, "/blob/2000")
        assert body == mesh.origin.blob(2000) and service.stats.get("rend_joined") == 1, service.stats
        # (3) the service never learned the name the client typed
        assert len(begin_hosts) == 3 and set(begin_hosts) == {None}, begin_hosts
    finally:
        await node.stop()
        await stop_mesh(mesh, extras)


async def test_socks_codes_wrong_client_key_and_introduction_timed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tor's extended SOCKS replies through the real SOCKS port: a service with restricted
    discovery gives 0xF4 without a key and 0xF5 with the wrong one (the descriptor cannot be
    decrypted), and serves the page with the right one; intro points that swallow INTRODUCE1
    (they accept the circuit, never answer) give 0xF7, introduction timed out."""
    mesh, extras = await start_mesh(tmp_path, relays=RELAYS, exits=1)
    node = await service_node(mesh, tmp_path)
    try:
        separate_guards(node, mesh.client)
        secret = os.urandom(32)
        spec = OnionServiceSpec(
            ExpandedKey.from_seed(os.urandom(32)), (PortMap(80, "127.0.0.1", mesh.origin.port),),
            client_auth=(crypto_scalarmult_base(secret),),
        )  # fmt: skip
        service = await node.add_onion_service(spec)
        assert await service.wait_published(WAIT), service.stats
        socks = mesh.socks_port
        assert await asyncio.to_thread(raw_socks5_reply, socks, service.address, 80) == 0xF4
        mesh.client.client_auth[service.service_id] = os.urandom(32)
        assert await asyncio.to_thread(raw_socks5_reply, socks, service.address, 80) == 0xF5
        assert mesh.client.onion.stats.get("fetch_auth_wrong") == 1, mesh.client.onion.stats
        mesh.client.client_auth[service.service_id] = secret
        body = await asyncio.to_thread(http_get_via_socks, socks, service.address, 80, "/blob/1000")
        assert body == mesh.origin.blob(1000)

        # every intro point swallows INTRODUCE1 (from now on, on each relay): 0xF7
        open_service = await publish(node, mesh)
        swallowed: list[int] = []
        for relay in mesh.relays:
            relay.switch.handlers[RelayCommand.INTRODUCE1] = lambda entry, msg: swallowed.append(1)
        monkeypatch.setattr(onion_client, "STEP_TIMEOUT", 2.0)  # each intro point's wait, shortened
        code = await asyncio.to_thread(raw_socks5_reply, socks, open_service.address, 80, 120)
        assert code == 0xF7, hex(code)
        assert len(swallowed) == 3 and mesh.client.onion.stats.get("intro_point_failed") == 3
        assert open_service.stats.get("introduce2", 0) == 0
    finally:
        await node.stop()
        await stop_mesh(mesh, extras)
