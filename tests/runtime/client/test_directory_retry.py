"""A directory whose first crawl found nothing (offline first start) tries again soon, with backoff,
instead of waiting the full refresh interval (600 s): a real relay whose DHT comes up only after
that first crawl failed is found within a bounded wait."""

from __future__ import annotations

import socket
from pathlib import Path

from onionmesh.runtime.client.directory import DhtDirectory
from onionmesh.runtime.relay.node import RelayConfig, RelayNode
from tests.helpers.mesh import eventually


def _free_udp_port(host: str) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_an_empty_first_crawl_is_retried_and_finds_a_relay_that_came_up_later(tmp_path: Path) -> None:
    host = "127.1.0.1"
    dht_port = _free_udp_port(host)
    directory = DhtDirectory(tmp_path / "client", [(host, dht_port)], refresh=600.0)
    (tmp_path / "client").mkdir()
    relay = RelayNode(
        RelayConfig(
            listen_host=host,
            listen_port=0,
            data_dir=tmp_path / "relay",
            nickname="late",
            dht=(host, dht_port),
        )
    )
    await directory.start()
    try:
        assert await eventually(lambda: directory.crawls >= 1, 60), "the first crawl never ended"
        assert len(directory.view) == 0  # nothing answered: the bootstrap contact was not up yet
        first = directory.crawls
        await relay.start()
        assert await eventually(lambda: len(directory.view) >= 1, 60), (
            f"the relay was not found after the first crawl failed ({directory.crawls} crawls)"
        )
        assert directory.crawls > first
        assert {d.nickname for d in directory.relays()} == {"late"}
    finally:
        await directory.stop()
        await relay.stop()
