"""The client's pre-build loop tells the network's failures from its own bugs: both back off and
neither stops the loop, but a bug is counted apart and logged (rate-limited), not hidden."""

from __future__ import annotations

import asyncio
from pathlib import Path

from onionmesh.errors import DirectoryError
from onionmesh.runtime.client.node import ClientConfig, ClientNode


async def run_prebuild(tmp_path: Path, error: Exception) -> ClientNode:
    node = ClientNode(ClientConfig(tmp_path, socks_port=0, control_port=0))
    node._build_backoff.next_delay = lambda: 0.001  # type: ignore[method-assign]
    node.directory.relays = lambda: [object()]  # type: ignore[method-assign, list-item]

    async def build(**kwargs: object) -> None:
        raise error

    node.circuits.build = build  # type: ignore[assignment, method-assign]
    node._explain_failure = lambda relays, exc: None  # type: ignore[method-assign]
    task = asyncio.create_task(node._prebuild())
    try:
        async with asyncio.timeout(10):  # liveness bound only
            while node.prebuild_attempts < 3:
                await asyncio.sleep(0.001)
    finally:
        task.cancel()
    return node


async def test_a_bug_in_a_build_is_counted_apart_and_the_loop_goes_on(tmp_path: Path) -> None:
    node = await run_prebuild(tmp_path, RuntimeError("a bug"))
    assert node.prebuild_errors >= 3 and node.prebuild_failures == 0
    assert node.status()["prebuild_errors"] == node.prebuild_errors


async def test_a_network_failure_is_a_failure_not_an_error(tmp_path: Path) -> None:
    node = await run_prebuild(tmp_path, DirectoryError("no path"))
    assert node.prebuild_failures >= 3 and node.prebuild_errors == 0
