"""Established inbound links are capped over all addresses (issue 15 item 3's gap: 64 addresses x
64 links could hold ~4,096 idle descriptors until the idle timeout).  Past the cap the idlest inbound
link without circuits is closed cleanly to make room, and counted; over real sockets."""

from __future__ import annotations

from pathlib import Path

from onionmesh.rng import SystemRng
from onionmesh.runtime.fd_budget import descriptor_budget
from onionmesh.runtime.relay.node import RelayConfig, RelayNode
from onionmesh.runtime.transport.link import Link
from onionmesh.runtime.transport.link_setup import open_link
from tests.helpers.mesh import eventually

CAP = 4


class Owner:
    def cell_received(self, link: object, cell: object) -> None:
        pass

    def link_closed(self, link: object) -> None:
        pass


async def test_past_the_cap_the_idlest_inbound_link_is_shed(tmp_path: Path) -> None:
    relay = RelayNode(
        RelayConfig(
            listen_host="127.0.0.1", listen_port=0, data_dir=tmp_path / "relay", max_inbound_links=CAP
        )
    )
    await relay.start()
    links: list[Link] = []
    try:
        for i in range(3 * CAP):
            source = f"127.88.0.{i + 1}"  # many addresses: the per-address bound is not what acts
            link = await open_link(
                relay.config.listen_host,
                relay.config.listen_port,
                relay.keys.identity.public,
                Owner(),
                SystemRng(),
                local_host=source,
            )
            assert link.established.is_set() and not link.closed
            links.append(link)
            assert len(relay._inbound_ip) <= CAP
        assert relay.inbound_links_shed == 2 * CAP
        assert relay.stats["links_shed_cap"] == 2 * CAP
        # the oldest (idlest) were closed, cleanly: their peers see the link end; the newest live on
        assert await eventually(lambda: all(link.closed for link in links[: 2 * CAP]))
        assert not any(link.closed for link in links[2 * CAP :])
        assert len(relay._inbound_ip) == CAP
    finally:
        for link in links:
            link.close()
        await relay.stop()


def test_the_default_cap_comes_from_the_shared_descriptor_budget(tmp_path: Path) -> None:
    relay = RelayNode(RelayConfig(listen_host="127.0.0.1", listen_port=0, data_dir=tmp_path / "relay"))
    assert relay.max_inbound_links == descriptor_budget() // 2
    assert descriptor_budget(1024) == 768 and descriptor_budget(256) == 128
