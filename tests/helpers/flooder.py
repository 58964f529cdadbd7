"""A hostile client, run as its own process: junk connections and CREATE cells against one relay.

    python -m tests.helpers.flooder HOST PORT IDENTITY_HEX ONION_HEX SECONDS JUNK CREATES_PER_S

Prints `{"flooding": true}` once its CREATE links are up and the flood begins, then one JSON line of
what it did. The JUNK connections are spread over SECONDS; the CREATE flood runs at CREATES_PER_S
(a starved flooder catches up in bursts) for SECONDS, until it has sent SECONDS' worth, and on
until stdin is closed (a test ends it when its honest traffic is done, so that traffic is measured
under the flood however slow a loaded machine makes it), at most MAX_SECONDS. At nice 19 on a
loaded machine this process may get no CPU for seconds: the amount is what it promises, not the
rate. Bounded in time and count; loopback targets only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import sys
import threading
import time

from onionmesh.crypto import ntor
from onionmesh.rng import SystemRng
from onionmesh.runtime.transport.link_setup import open_link
from onionmesh.wire.cell import Cell, CellCommand, create_payload

MAX_SECONDS = 120.0  # the CREATE flood's bound, whether or not stdin is closed


def stdin_closed() -> asyncio.Future[None]:
    """Done when stdin reaches EOF; read in a daemon thread, so an open stdin never holds up the exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wait() -> None:
        sys.stdin.read()
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=wait, daemon=True).start()
    return done


class Owner:
    def __init__(self) -> None:
        self.destroys = 0
        self.created = 0

    def cell_received(self, link: object, cell: Cell) -> None:
        if cell.command is CellCommand.DESTROY:
            self.destroys += 1
        elif cell.command is CellCommand.CREATED:
            self.created += 1

    def link_closed(self, link: object) -> None:
        pass


async def junk(host: str, port: int, total: int, deadline: float, stats: dict[str, int]) -> None:
    """`total` junk connections, spread evenly over the flood (each: connect, 64 random bytes, close)."""
    start = time.monotonic()
    rate = total / max(deadline - start - 1.0, 0.5)  # all of them, with a second to spare
    tasks = []

    async def one() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            writer.write(os.urandom(64))
            await writer.drain()
            await asyncio.wait_for(reader.read(1), 2)
            writer.close()
            stats["junk_connected"] += 1
        except (OSError, TimeoutError):
            stats["junk_failed"] += 1

    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)


async def creates(links: list, identity: bytes, onion: bytes, rate: int, deadline: float,
                  quota: int, stop: asyncio.Future, stats: dict[str, int]) -> None:  # fmt: skip
    rng = SystemRng()
    skins = [ntor.client_start(identity, onion, rng)[1] for _ in range(256)]
    sent = 0
    start = time.monotonic()
    limit = start + MAX_SECONDS
    stats["hit_bound"] = False  # True: at MAX_SECONDS, stdin was still open or the quota not sent
    while time.monotonic() < deadline or sent < quota or not stop.done():
        if time.monotonic() >= limit:
            stats["hit_bound"] = True
            break
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            link = links[sent % len(links)]
            link.send_cell(
                Cell(link.allocate_circ_id(), CellCommand.CREATE, create_payload(1, skins[sent % 256]))
            )
            sent += 1
        await asyncio.sleep(0.005)
    stats["creates_sent"] = sent
    stats["seconds"] = round(time.monotonic() - start, 2)
    await asyncio.sleep(0.2)
    for link in links:
        link.close()


async def main() -> None:
    host, port, identity, onion, seconds, total, rate = sys.argv[1:8]
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("the flooder only targets loopback")
    stats = {"junk_connected": 0, "junk_failed": 0, "creates_sent": 0}
    owner = Owner()
    ident, onion_pk = bytes.fromhex(identity), bytes.fromhex(onion)
    # The CREATE links first: once junk fills the relay's per-address link cap, new links are refused.
    links = [await open_link(host, int(port), ident, owner, SystemRng()) for _ in range(4)]
    deadline = time.monotonic() + float(seconds)  # from here: the flood itself lasts SECONDS
    stop = stdin_closed()
    print(json.dumps({"flooding": True}), flush=True)
    await asyncio.gather(
        junk(host, int(port), int(total), deadline, stats),
        creates(links, ident, onion_pk, int(rate), deadline, int(float(seconds) * int(rate)), stop, stats),
    )
    stats["created"] = owner.created
    stats["destroyed"] = owner.destroys
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
