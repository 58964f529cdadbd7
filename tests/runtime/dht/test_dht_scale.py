"""The DHT directory at the scale of the acceptance criteria: 50 relays, and 30% of them dying.

These are the crawl's figures and bound (MISSED_CRAWLS_TO_DROP): the client runs `--directory=crawl`
(and the relays' directory sources run slow epochs, so that they do not load the machine meanwhile).
The default directory (guards, runtime.client.dir_fetch) is tested in tests/runtime/test_dir_guards.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from onionmesh.directory.view import MISSED_CRAWLS_TO_DROP
from tests.helpers.mesh import http_get_via_socks, start_mesh, stop_mesh


async def test_fifty_relays_discovered_within_30s_and_circuits_work(tmp_path: Path) -> None:
    t0 = time.monotonic()
    # start_mesh asserts that all 50 are found within 30 s
    m, extras = await start_mesh(tmp_path, relays=50, exits=10, directory="crawl", dir_epoch=600)
    try:
        discovered = time.monotonic() - t0
        assert len(m.client.relays) >= 48
        assert discovered < 60  # start-up of 50 relays plus discovery (discovery alone is bounded at 30 s)
        fresh = await m.client.directory.refresh()  # a second crawl finds the same network
        assert fresh >= 48
        # Circuits through many different relays work.
        used = set()
        for _ in range(25):
            handle = await m.client.circuits.build(port=m.origin.port)
            used.update(d.fingerprint for d in handle.path)
        assert len(used) >= 15  # hop 1 is always one of 3 guards; middles and exits spread over the rest
        bodies = await asyncio.gather(
            *(
                asyncio.to_thread(http_get_via_socks, m.socks_port, "localhost", m.origin.port, "/blob/20000")
                for _ in range(10)
            )
        )
        assert all(b == m.origin.blob(20000) for b in bodies)
    finally:
        await stop_mesh(m, extras)


async def test_dead_relays_leave_the_view_within_the_bound_and_circuits_route_around(tmp_path: Path) -> None:
    refresh = 1.0
    m, extras = await start_mesh(
        tmp_path, relays=20, exits=8, dht_refresh=refresh, directory="crawl", dir_epoch=600
    )
    try:
        victims = m.relays[4:10]  # 30% of the relays; the bootstrap relay and some exits survive
        dead = {v.fingerprint for v in victims}
        for victim in victims:
            await victim.stop()
        # The stated bound: a relay missing from MISSED_CRAWLS_TO_DROP consecutive crawls is dropped.
        bound = MISSED_CRAWLS_TO_DROP * refresh + 5.0  # crawls are `refresh` apart; 5 s for crawl time
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline and dead & {d.fingerprint for d in m.client.relays}:
            await asyncio.sleep(0.2)
        assert not dead & {d.fingerprint for d in m.client.relays}
        assert len(m.client.relays) == 14
        built = 0
        for _ in range(40):
            try:
                await m.client.circuits.build(port=m.origin.port)
                built += 1
            except (OSError, TimeoutError):
                pass
        assert built >= 38  # at least 95% of new circuits build
        body = await asyncio.to_thread(
            http_get_via_socks, m.socks_port, "localhost", m.origin.port, "/blob/5000"
        )
        assert body == m.origin.blob(5000)
    finally:
        await stop_mesh(m, extras)
