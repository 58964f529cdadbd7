"""A fresh client's first directory on loopback: the crawl against the directory guards.

For each size N: N relays in this process (127.{i+1}.0.1 ... each its own /16, every relay a
directory source with `--dir-epoch` seconds per epoch), waited for until relay 0's signed state
lists all of them RUNNING; then, for each mode, a fresh proxy (no cache, no prebuilt circuits)
with relay 0 as its bootstrap contact, timed from `start()` until its view holds N relays:

  - dirboot.N.MODE.ready_s: time to a usable view (all N relays)
  - dirboot.N.MODE.bytes: bytes the client sent and received for it (UDP datagrams of its DHT
    socket plus every byte of its links: handshakes, circuits, directory documents)
  - dirboot.N.MODE.relays_contacted: relays that received a datagram or a link from the client

    python bench/dir_bootstrap.py [--sizes 50,200] [--dir-epoch 30]

MODE is `crawl` (`--directory=crawl`, the whole-DHT crawl) or `guards` (the default since
2026-12-03).  Prints `name value unit` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onionmesh.runtime.client.node import ClientConfig, ClientNode
from onionmesh.runtime.relay.node import RelayConfig, RelayNode


def host(i: int) -> str:
    return f"127.{i // 250 + 1}.{i % 250 + 1}.1" if i >= 250 else f"127.{i + 1}.0.1"


async def start_relays(tmp: Path, n: int, epoch: float) -> list[RelayNode]:
    relays: list[RelayNode] = []
    first = RelayNode(RelayConfig(host(0), 0, tmp / "relay0", dir_epoch=epoch))
    await first.start()
    relays.append(first)
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> RelayNode:
        async with sem:
            node = RelayNode(
                RelayConfig(host(i), 0, tmp / f"relay{i}", bootstrap=(first.dht.address,), dir_epoch=epoch)
            )
            await node.start()
            return node

    relays += await asyncio.gather(*(one(i) for i in range(1, n)))
    return relays


async def sources_ready(relays: list[RelayNode], timeout: float) -> float:
    """Until relay 0's newest signed state lists every relay RUNNING; its progress on stderr."""
    start = time.monotonic()
    said = 0.0
    running = 0
    while time.monotonic() - start < timeout:
        state = relays[0].dir_source.newest() if relays[0].dir_source else None
        running = 0 if state is None else sum(e.running for e in state.entries.values())
        if running >= len(relays):
            return time.monotonic() - start
        if time.monotonic() - said > 15:
            said = time.monotonic()
            print(
                f"# {said - start:.0f} s: relay 0 lists {running} of {len(relays)} RUNNING", file=sys.stderr
            )
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the sources did not list every relay ({running} of {len(relays)})")


async def fresh_client(tmp: Path, relays: list[RelayNode], mode: str, epoch: float) -> dict[str, float]:
    n = len(relays)
    client = ClientNode(
        ClientConfig(
            data_dir=tmp / f"client-{mode}", socks_port=0, control_port=0, bootstrap=(relays[0].dht.address,),
            prebuilt_circuits=0, directory=mode, dir_epoch=epoch,
        )
    )  # fmt: skip
    udp = [0]
    seen: set[str] = set()
    t0 = time.monotonic()
    await client.start()
    protocol = client.directory.dht.protocol
    assert protocol is not None and protocol.transport is not None
    transport = protocol.transport
    sendto = transport.sendto

    def counted(data: bytes, addr: tuple[str, int] | None = None) -> None:
        udp[0] += len(data)
        if addr is not None:
            seen.add(addr[0])
        sendto(data, addr)

    transport.sendto = counted  # type: ignore[method-assign]
    received = protocol.datagram_received

    def counted_in(data: bytes, addr: tuple[str, int]) -> None:
        udp[0] += len(data)
        received(data, addr)

    protocol.datagram_received = counted_in  # type: ignore[method-assign]
    got = await client.directory.wait_for(n, 300)
    ready = time.monotonic() - t0
    mgrs = [client.circuits, getattr(client.directory, "circuits", None)]
    links = [link for mgr in mgrs if mgr is not None for link in mgr.links.links]
    link_bytes = sum(link.proto.bytes_sent + link.proto.bytes_received for link in links)
    by_host = {host(i): relays[i].keys.identity.public for i in range(n)}
    contacted = {by_host[h] for h in seen if h in by_host} | {link.peer_identity for link in links}
    contacted.discard(None)
    await client.stop()
    if got < n:
        raise TimeoutError(f"{mode}: the view holds {got} of {n} relays")
    return {"ready_s": ready, "bytes": udp[0] + link_bytes, "relays_contacted": len(contacted)}


async def measure(sizes: list[int], epoch: float) -> None:
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            relays = await start_relays(tmp, n, epoch)
            try:
                await sources_ready(relays, 20 * epoch + 120)
                for mode in ("crawl", "guards"):
                    figures = await fresh_client(tmp, relays, mode, epoch)
                    units = {"ready_s": "s", "bytes": "B", "relays_contacted": "relays"}
                    for name, value in figures.items():
                        print(f"dirboot.{n}.{mode}.{name} {value:.3f} {units[name]}", flush=True)
            finally:
                for relay in relays:
                    await relay.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50,200")
    ap.add_argument("--dir-epoch", type=float, default=30.0)
    args = ap.parse_args()
    asyncio.run(measure([int(s) for s in args.sizes.split(",")], args.dir_epoch))


if __name__ == "__main__":
    main()
