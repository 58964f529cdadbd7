"""A cancellation (shutdown, SIGTERM) is never lost in a timeout wrapper.

On Python 3.11, `asyncio.wait_for` returns the inner result when the cancellation lands in the
iteration the inner work finished, and the task goes on as if never cancelled (issue 15 item 8: a
proxy that ignored SIGTERM).  `asyncio.timeout` runs the work inline and cannot lose it.  The sweep
cancels a real crawl at every loop iteration until it ends: whenever `cancel()` was accepted, the
task must end cancelled.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from onionmesh.runtime.dht.node import DhtNode

ROOT = Path(__file__).resolve().parents[2]


async def test_a_crawl_cancelled_at_any_moment_ends_cancelled() -> None:
    node = DhtNode(None)
    await node.listen(0, "127.0.0.1")
    lost = []
    try:
        for k in range(60):
            task = asyncio.create_task(node.crawl(extra=[]))
            for _ in range(k):
                await asyncio.sleep(0)
            accepted = task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                continue
            if accepted:
                lost.append(k)
    finally:
        node.stop()
    assert lost == [], f"cancellation lost when cancelled after {lost} loop iterations"


def test_no_wait_for_left_in_the_runtime_or_the_apps() -> None:
    """The same mistake elsewhere: every timeout in onionmesh is `asyncio.timeout`."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "onionmesh").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"asyncio\.wait_for\(", line)
    ]
    assert offenders == []
