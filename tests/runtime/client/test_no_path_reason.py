"""A proxy whose known relays share one /16 says why no circuit can be built (issue 15, item 14)."""

from __future__ import annotations

from pathlib import Path

from onionmesh.runtime.client.node import PREBUILT_CIRCUITS
from tests.helpers.mesh import eventually, start_mesh, stop_mesh


async def test_relays_in_one_16_are_explained(tmp_path: Path) -> None:
    # the scheme a hand-run mesh follows naively: all in 127.0.0.0/16
    hosts = [f"127.0.0.{i + 1}" for i in range(3)]
    mesh, extras = await start_mesh(tmp_path, relays=3, exits=3, hosts=hosts, prebuilt=PREBUILT_CIRCUITS)
    client = mesh.client
    try:
        await eventually(lambda: client.no_path is not None, 20)
        assert client.no_path == "3 relays known, all in 127.0.0.0/16: no path satisfies the /16 rule"
        assert client.status()["no_path"] == client.no_path
        assert client.prebuild_attempts <= 5  # and it backs off meanwhile
    finally:
        await stop_mesh(mesh, extras)
