"""The attacker of bench/flood.py, in a process of its own (run at the lowest CPU priority).

    python bench/_flood.py handshakes HOST PORT IDENTITY_HEX --seconds S --rate R [--sources 64]
        valid first link messages (each costs the relay its public-key work) from SOURCES loopback
        addresses 127.66.0.1 ..., at R connections/s for S seconds; each reads the answer and leaves.
    python bench/_flood.py socks PORT --count N --seconds S
        N connections to a SOCKS port, held S seconds: a third say nothing, a third send half a
        greeting, a third a greeting and half a request.
Prints one JSON line of what it did.  Bounded in time and count; loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onionmesh.proto.link import MSG2_LEN, LinkProtocol, LinkRole
from onionmesh.rng import SystemRng

MAX_CONCURRENT = 512


def sources(n: int) -> list[str]:
    return [f"127.66.{i // 250}.{i % 250 + 1}" for i in range(n)]


async def handshakes(args: argparse.Namespace) -> dict[str, int]:
    """Connect, send a valid MSG1, read the answer (or the close), leave; paced at args.rate."""
    rng = SystemRng()
    identity = bytes.fromhex(args.identity)
    msgs = []
    for _ in range(64):  # valid ephemeral keys, reused: the relay cannot tell
        proto = LinkProtocol(LinkRole.INITIATOR, rng, expected_identity=identity)
        proto.initiate()
        msgs.append(proto.data_to_send())
    addrs = sources(args.sources)
    stats = {"attempted": 0, "answered": 0, "closed_unanswered": 0, "failed": 0}
    gate = asyncio.Semaphore(MAX_CONCURRENT)

    async def one(i: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port, local_addr=(addrs[i % len(addrs)], 0)), 3
            )
        except (OSError, TimeoutError):
            stats["failed"] += 1
            return
        try:
            writer.write(msgs[i % len(msgs)])
            data = await asyncio.wait_for(reader.read(MSG2_LEN), 3)
            stats["answered" if len(data) else "closed_unanswered"] += 1
        except (OSError, TimeoutError):
            stats["failed"] += 1
        finally:
            writer.close()

    async def paced(i: int) -> None:
        async with gate:
            await one(i)

    start = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    while (elapsed := time.monotonic() - start) < args.seconds:
        due = int(elapsed * args.rate)
        while stats["attempted"] < due and len(tasks) < 4 * MAX_CONCURRENT:
            task = asyncio.create_task(paced(stats["attempted"]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            stats["attempted"] += 1
        await asyncio.sleep(0.002)
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    stats["seconds"] = round(time.monotonic() - start, 2)
    return stats


async def socks(args: argparse.Namespace) -> dict[str, int]:
    """Hold idle connections and half-handshakes at a SOCKS port."""
    prefixes = [b"", b"\x05", b"\x05\x01\x00\x05\x01\x00\x03"]
    held: list[asyncio.StreamWriter] = []
    stats = {"opened": 0, "failed": 0, "closed_by_proxy": 0}
    start = time.monotonic()
    for i in range(args.count):
        if time.monotonic() - start > args.seconds:
            break
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", args.port), 2)
        except (OSError, TimeoutError):
            stats["failed"] += 1
            continue
        writer.write(prefixes[i % 3])
        held.append(writer)
        stats["opened"] += 1
    print(json.dumps({"opened": stats["opened"]}), flush=True)  # the bench measures from here
    await asyncio.sleep(max(0.0, args.seconds - (time.monotonic() - start)))
    for writer in held:
        if writer.transport.is_closing():
            stats["closed_by_proxy"] += 1
        writer.close()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("handshakes")
    h.add_argument("host")
    h.add_argument("port", type=int)
    h.add_argument("identity")
    h.add_argument("--seconds", type=float, required=True)
    h.add_argument("--rate", type=float, required=True)
    h.add_argument("--sources", type=int, default=64)
    s = sub.add_parser("socks")
    s.add_argument("port", type=int)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    args = ap.parse_args()
    if args.mode == "handshakes" and not ipaddress.ip_address(args.host).is_loopback:
        raise SystemExit("the flooder only targets loopback")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    run = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop  # the attacker's side as fast as it gets here

        run = uvloop.run
    out = run(handshakes(args) if args.mode == "handshakes" else socks(args))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
