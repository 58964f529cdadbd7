"""Queues, memory and the OOM policy over real sockets (in-process relays, real TCP on loopback)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

from onionmesh.runtime.relay.node import RelayNode
from tests.helpers.mesh import start_mesh, stop_mesh

# One stream holds at most its window (500 cells, 2 MB) plus the 256 KB ack threshold: two do not fit.
LIMIT = 3_000_000


async def start_black_hole() -> tuple[asyncio.base_events.Server, list[asyncio.StreamWriter]]:
    """A destination that accepts connections and never reads from them."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    sock = server.sockets[0]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: little kernel slack
    return server, held


def upload_until_stuck(socks_port: int, port: int, user: str, stop: threading.Event) -> int:
    """Send through the proxy as an isolated SOCKS user until the circuit stops taking data."""
    import socks

    s = socks.socksocket()
    s.set_proxy(socks.SOCKS5, "127.0.0.1", socks_port, rdns=True, username=user, password="x")
    s.settimeout(20)
    s.connect(("localhost", port))
    s.settimeout(1.0)
    chunk, sent = b"u" * 65536, 0
    try:
        while not stop.is_set():
            try:
                sent += s.send(chunk)
            except TimeoutError:
                continue
            except OSError:
                break
    finally:
        s.close()
    return sent


async def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_oom_policy_destroys_the_circuit_with_the_oldest_data_first(tmp_path: Path) -> None:
    """Two circuits upload into a destination that never reads.  Their data piles up in the exit's
    stream buffers; when the total passes the exit's limit, the circuit whose data waited longer
    (the first) is destroyed and the other lives on."""
    m, extras = await start_mesh(tmp_path, relays=3, exits=1)
    hole, held = await start_black_hole()
    exit_relay: RelayNode = m.relays[0]
    exit_relay.config.max_mem_in_queues = LIMIT
    assert exit_relay.limits.budget is not None
    exit_relay.limits.budget.limit = LIMIT
    port = hole.sockets[0].getsockname()[1]
    stop = threading.Event()
    try:
        first = second = asyncio.create_task(
            asyncio.to_thread(upload_until_stuck, m.socks_port, port, "first", stop)
        )
        assert await wait_for(lambda: exit_relay.queued_bytes() > 0.4 * LIMIT, 20), exit_relay.queued_bytes()
        await asyncio.sleep(1.5)  # the first stream's buffer reaches its plateau; a memory check passes
        assert exit_relay.stats.get("destroyed_oom", 0) == 0, exit_relay.queued_bytes()  # one alone fits
        handles = {h.isolation: h for h in m.client.circuits.circuits.values()}
        (older,) = handles.values()
        second = asyncio.create_task(
            asyncio.to_thread(upload_until_stuck, m.socks_port, port, "second", stop)
        )
        assert await wait_for(lambda: exit_relay.stats.get("destroyed_oom", 0) >= 1, 20)
        # the DESTROY travels exit -> middle -> guard -> client: wait for it (liveness bound only)
        assert await wait_for(lambda: older.closed_reason is not None, 20), "no DESTROY reached the client"
        assert "RESOURCELIMIT" in str(older.closed_reason), older.closed_reason
        newer = [h for h in m.client.circuits.circuits.values() if h is not older]
        assert len(newer) == 1 and newer[0].closed_reason is None
        assert exit_relay.stats["destroyed_oom"] == 1
        assert exit_relay.queued_bytes() <= LIMIT
    finally:
        stop.set()
        await asyncio.gather(first, second, return_exceptions=True)
        for w in held:
            w.close()
        hole.close()
        await stop_mesh(m, extras)
