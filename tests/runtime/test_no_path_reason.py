"""A proxy whose known relays share one /16 says why no circuit can be built (issue 15, item 14)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from onionmesh.runtime.client_node import ClientConfig, ClientNode
from onionmesh.runtime.relay_node import RelayConfig, RelayNode
from tests.runtime.conftest import LOOPBACK_EXIT_POLICY


async def test_relays_in_one_16_are_explained(tmp_path: Path) -> None:
    relays: list[RelayNode] = []
    client = None
    try:
        for i in range(3):  # the scheme a hand-run mesh follows naively: all in 127.0.0.0/16
            node = RelayNode(
                RelayConfig(
                    listen_host=f"127.0.0.{i + 1}",
                    listen_port=0,
                    data_dir=tmp_path / f"relay{i}",
                    nickname=f"relay{i}",
                    exit_policy=LOOPBACK_EXIT_POLICY,
                    allow_private_destinations=True,
                    bootstrap=(relays[0].dht.address,) if relays else (),
                )
            )
            await node.start()
            relays.append(node)
        client = ClientNode(
            ClientConfig(
                data_dir=tmp_path / "client",
                socks_port=0,
                control_port=0,
                bootstrap=(relays[0].dht.address,),
            )
        )
        await client.start()
        assert await client.directory.wait_for(3, 30) == 3
        deadline = time.monotonic() + 20
        while client.no_path is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert client.no_path == "3 relays known, all in 127.0.0.0/16: no path satisfies the /16 rule"
        assert client.status()["no_path"] == client.no_path
        assert client.prebuild_attempts <= 5  # and it backs off meanwhile
    finally:
        if client is not None:
            await client.stop()
        for node in relays:
            await node.stop()
