"""`onionmesh dht relays|lookup` with a bootstrap contact that never answers (issue 15, item 12):
one clear line naming the likely mistake (a link port given for a DHT port), and a non-zero exit.
Real subprocesses; a real TCP listener stands for a relay's link port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from onionmesh.runtime.dht.node import DhtNode

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "onionmesh", "dht", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("action", [["relays"], ["lookup", "A" * 40]])
def test_a_link_port_given_as_bootstrap_is_named_and_the_exit_code_is_not_zero(action: list[str]) -> None:
    with socket.socket() as link:  # a relay's TCP link port: no DHT on its UDP twin
        link.bind(("127.0.0.1", 0))
        link.listen()
        port = link.getsockname()[1]
        done = run(*action, "--bootstrap", f"127.0.0.1:{port}")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no bootstrap contact answered" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    assert "DHT (UDP) port" in lines[0] and "link (TCP) port" in lines[0]
    assert "0 relays" not in done.stdout


async def test_a_contact_that_answers_but_knows_no_relay_gets_one_line_and_a_non_zero_exit() -> None:
    """A real DHT node that answers pings but is no relay (a client's node): the crawl finds nothing."""
    node = DhtNode(None)
    await node.listen(0, "127.0.0.1")
    host, port = node.address
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "onionmesh", "dht", "relays", "--bootstrap", f"{host}:{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        node.stop()
    assert proc.returncode not in (0, None)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err.decode(), err
    assert "answered but the crawl found no relay" in lines[0]
    assert b"0 relays" not in out
