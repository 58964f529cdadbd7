"""Circuits users can rely on: isolation, new identity, guards across restarts, routing around failure."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from onionmesh.errors import OnionmeshError
from onionmesh.runtime.client.node import ClientConfig, ClientNode
from tests.helpers.mesh import (
    Mesh,
    eventually,
    http_get_on,
    http_get_via_socks,
    socks5_connect,
    start_mesh,
    stop_mesh,
)


def fetch_as(port: int, user: str, dport: int, path: str) -> bytes:
    s = socks5_connect(port, "localhost", dport, timeout=30, username=user, password="pw")
    return http_get_on(s, "localhost", path)[1]


def exit_host(handle) -> str:
    return handle.exit.link_addresses[0][0]


async def test_different_usernames_leave_through_different_circuits(mesh: Mesh) -> None:
    port = mesh.origin.port
    a, b = await asyncio.gather(
        asyncio.to_thread(fetch_as, mesh.socks_port, "alice", port, "/blob/1001"),
        asyncio.to_thread(fetch_as, mesh.socks_port, "bob", port, "/blob/1002"),
    )
    assert a == mesh.origin.blob(1001) and b == mesh.origin.blob(1002)
    by_user = {h.isolation[0]: h for h in mesh.client.circuits.circuits.values()}
    assert set(by_user) == {b"alice", b"bob"}
    assert by_user[b"alice"].number != by_user[b"bob"].number
    served = dict(mesh.origin.served)
    # The destination saw each fetch come from the exit of that user's own circuit.
    assert served["/blob/1001"] == exit_host(by_user[b"alice"])
    assert served["/blob/1002"] == exit_host(by_user[b"bob"])


async def test_streams_stay_on_the_circuit_in_use_while_clean_ones_wait(tmp_path: Path) -> None:
    """As Tor: a new stream goes to the circuit that already carries the user's streams, not to a
    clean pre-built one (fewer exits see them; the streams take turns at one window)."""
    m, extras = await start_mesh(tmp_path, prebuilt=2)
    try:
        port = m.origin.port
        circuits = m.client.circuits
        await asyncio.to_thread(http_get_via_socks, m.socks_port, "localhost", port, "/blob/10")
        (used,) = [h for h in circuits.circuits.values() if h.dirty_since is not None]
        for _ in range(100):  # the client replaces the pre-built circuit the first stream took
            if sum(h.dirty_since is None and h.built_at is not None for h in circuits.circuits.values()) >= 2:
                break
            await asyncio.sleep(0.1)
        clean = [h for h in circuits.circuits.values() if h.dirty_since is None and h.built_at is not None]
        assert len(clean) >= 2, "the client keeps clean circuits ready"
        attached: list[int] = []
        circuits.stream_listeners.append(
            lambda what, h, _sid: attached.append(h.number) if what == "attached" else None
        )
        bodies = await asyncio.gather(
            *(
                asyncio.to_thread(http_get_via_socks, m.socks_port, "localhost", port, f"/blob/{200_000 + i}")
                for i in range(12)
            )
        )
        assert bodies == [m.origin.blob(200_000 + i) for i in range(12)]
        assert attached == [used.number] * 12
        assert all(h.dirty_since is None for h in clean if h.number in circuits.circuits)
    finally:
        await stop_mesh(m, extras)


async def test_new_identity_moves_the_next_fetch_to_a_new_circuit_and_exit(mesh: Mesh) -> None:
    port = mesh.origin.port
    await asyncio.to_thread(fetch_as, mesh.socks_port, "carol", port, "/blob/2001")
    (before,) = [h for h in mesh.client.circuits.circuits.values() if h.isolation[0] == b"carol"]
    mesh.client.circuits.retire_all()  # what `onionmesh circuit new` asks for
    await asyncio.to_thread(fetch_as, mesh.socks_port, "carol", port, "/blob/2002")
    after = [
        h for h in mesh.client.circuits.circuits.values() if h.isolation[0] == b"carol" and h is not before
    ]
    assert len(after) == 1
    assert after[0].exit.fingerprint != before.exit.fingerprint
    assert dict(mesh.origin.served)["/blob/2002"] == exit_host(after[0])


async def test_guards_survive_a_restart_and_change_only_when_unusable(tmp_path: Path) -> None:
    m, extras = await start_mesh(tmp_path, relays=8, exits=3)
    try:
        first = m.client.policy.primary_guards(m.client.relays)
        handle = await m.client.circuits.build(port=m.origin.port)
        assert handle.path[0].fingerprint in first
        data_dir = Path(m.client.config.data_dir)
        state = json.loads((data_dir / "guards.json").read_text())
        assert state and (data_dir / "guards.json").stat().st_mode & 0o777 == 0o600
        await m.client.stop()
        again = ClientNode(
            ClientConfig(
                data_dir=data_dir,
                socks_port=0,
                control_port=0,
                bootstrap=(m.relays[0].dht.address,),
                prebuilt_circuits=0,
            )
        )
        await again.start()
        await again.directory.wait_for(8, 20)
        assert again.policy.primary_guards(again.relays) == first  # same guards after a restart
        # The first guard dies: it is replaced only now, and the other two stay.
        victim = next(r for r in m.relays if r.fingerprint == first[0])
        await victim.stop()
        # Builds meet the dead guard whenever it is the first guard that fits the exit drawn.
        for _ in range(20):
            if first[0] not in again.policy.primary_guards(again.relays):
                break
            with contextlib.suppress(OSError, TimeoutError, OnionmeshError):
                await again.circuits.build(port=m.origin.port)
        handle = await again.circuits.build(port=m.origin.port)
        now_guards = again.policy.primary_guards(again.relays)
        assert first[0] not in now_guards and set(first[1:]) <= set(now_guards)
        assert handle.path[0].fingerprint in now_guards
        m.client = again
    finally:
        await stop_mesh(m, extras)


async def test_a_dead_relay_is_routed_around_for_new_streams(tmp_path: Path) -> None:
    m, extras = await start_mesh(tmp_path, relays=10, exits=4)
    try:
        port = m.origin.port
        body = await asyncio.to_thread(fetch_as, m.socks_port, "dave", port, "/blob/3000")
        assert body == m.origin.blob(3000)
        (handle,) = [h for h in m.client.circuits.circuits.values() if h.isolation[0] == b"dave"]
        middle = m.relay(handle.path[1].fingerprint)
        await middle.stop()
        # torn down promptly, not left to time out
        assert await eventually(lambda: handle.closed_reason is not None, 2.0, interval=0.02)
        ok = 0
        for i in range(20):  # the dead relay stays in the directory until the next crawls
            try:
                got = await asyncio.to_thread(fetch_as, m.socks_port, f"user{i}", port, "/blob/3000")
                ok += got == m.origin.blob(3000)
            except OSError:
                pass
        assert ok == 20
    finally:
        await stop_mesh(m, extras)


async def test_an_interrupted_stream_ends_with_a_clean_close(mesh: Mesh) -> None:
    size = 20_000_000
    mesh.origin.blob(size)

    def download() -> int:
        s = socks5_connect(mesh.socks_port, "localhost", mesh.origin.port, timeout=30)
        s.sendall(f"GET /blob/{size} HTTP/1.0\r\n\r\n".encode())
        got = 0
        try:
            while chunk := s.recv(65536):
                got += len(chunk)
        except OSError:
            pass
        s.close()
        return got

    task = asyncio.create_task(asyncio.to_thread(download))
    for _ in range(200):
        circuits = [h for h in mesh.client.circuits.circuits.values() if h.pumps]
        if circuits and circuits[0].circ.bytes_in > 500_000:
            break
        await asyncio.sleep(0.01)
    await mesh.relay(circuits[0].path[1].fingerprint).stop()
    got = await asyncio.wait_for(task, 10)  # ends promptly, no hang
    assert 0 < got < size
