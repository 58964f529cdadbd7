"""Onion services, onionmesh against Tor on this machine: first connection and bulk, with targets.

Tor's half runs bench/tornet_hs.sh (a copy of ../shared/bench/tornet/run.sh with a second tor
publishing a HiddenServiceDir for the same kind of local HTTP server). onionmesh's half starts
`onionmesh testnet`'s relays (bench/throughput.py's way), a second client node that hosts the
service (`ClientNode.add_onion_service`, docs/protocol.md §16), and measures through the
testnet's SOCKS port with curl:

  - first connection: what Tor's half measures after SIGNAL NEWNYM: one client node whose links
    stay open, its onion descriptor cache emptied and its circuits retired before each run, a
    fresh SOCKS username; curl time_starttransfer for 1 KiB from http://<address>.onion/
    (descriptor fetch through circuits, introduction, rendezvous, the HTTP request), median (ms).
    --cold-client: a fresh client node each run instead (no links open yet either)
  - bulk: a MIB file through the joined six-hop circuit, median (MB/s, 10^6 B)

Prints `name value unit` lines, then `check.*` lines: first connection <= 0.5x Tor's, bulk >= 5x
Tor's (issue 17). Where Tor cannot run, or the onion-service runtime is not in this tree, it
says so and prints what it could measure.

    python bench/onion.py [--quick] [--relays 5] [--mib 32] [--runs 3] [--first 3] [--tor-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import onion_mesh
from throughput import curl

from onionmesh.app.run import run

TORNET_HS = Path(__file__).resolve().parent / "tornet_hs.sh"


def run_tor(args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ)
    env.update(
        BULK_MIB=str(args.mib), BULK_RUNS=str(args.runs), SMALL_RUNS="5", CIRC_N="3",
        HS_FIRST_RUNS=str(args.first), SKIP_EXIT_BENCH="1",
    )  # fmt: skip
    proc = subprocess.run(["bash", str(TORNET_HS)], capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"# skipping Tor: tornet_hs.sh exited with {proc.returncode}: {reason}", flush=True)
        return {}
    figures: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("tor."):
            print(line, flush=True)
            with contextlib.suppress(ValueError):
                figures[parts[0]] = float(parts[1])
    return figures


async def pools_full(*nodes: Any, timeout: float = 10.5) -> None:
    """Wait (bounded) until the nodes' pre-built onion-service circuits are all there."""
    deadline = time.monotonic() + timeout
    while not all(n.hs.pool.full() for n in nodes) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def measure_onionmesh(args: argparse.Namespace) -> dict[str, float]:
    try:
        from onionmesh.runtime.client.onion_service import OnionServiceSpec, PortMap
    except ImportError:
        print("# skipping onionmesh: onionmesh.runtime.client.onion_service is not in this tree", flush=True)
        return {}
    from onionmesh.crypto.hs_blinding import ExpandedKey
    from onionmesh.runtime import safelog

    figures: dict[str, float] = {}

    def out(name: str, value: float, unit: str, fmt: str = ".2f") -> None:
        figures[name] = value
        print(f"onionmesh.{name} {value:{fmt}} {unit}", flush=True)

    safelog.configure("error")
    pooled = not args.no_pool
    try:
        from onionmesh.runtime.client import hs_pool
    except ImportError:  # a tree without the pre-built pool
        pooled = False
    else:
        if args.no_pool:  # A/B in one tree: no node keeps pre-built onion-service circuits
            hs_pool.CLIENT_TARGET, hs_pool.SERVICE_TARGET = {}, {}
    files = {"bulk": os.urandom(args.mib * 1024 * 1024), "small": os.urandom(1024)}
    with tempfile.TemporaryDirectory(prefix="onionmesh-onion-bench-") as tmp:
        async with onion_mesh(Path(tmp), args.relays, files) as (port, node):
            host = await node("service-host")
            t0 = time.monotonic()
            spec = OnionServiceSpec(
                key=ExpandedKey.from_seed(os.urandom(32)), ports=(PortMap(80, "127.0.0.1", port),)
            )
            service = await host.add_onion_service(spec)
            if not await service.wait_published(120):
                raise RuntimeError("the onion service was not published within 120 s")
            out("hs_publish_s", time.monotonic() - t0, "s")
            url = f"http://{service.address}"
            firsts = []
            warm = None if args.cold_client else await node("client")
            if warm is not None and pooled:  # a client that has used onion services (Tor's prediction)
                warm.hs.pool.want(client=True)
            for i in range(args.first):
                client = await node(f"client{i}") if warm is None else warm
                if warm is not None:  # as Tor's NEWNYM: no cached descriptor, no circuit to reuse
                    warm.onion._descriptors.clear()
                    warm.circuits.retire_all()
                    if pooled:  # clean pre-built circuits survive NEWNYM, as Tor's; refilled within
                        await pools_full(warm, host)  # Tor's 10.5 s between its runs, at most
                try:
                    got = await curl(f"127.0.0.1:{client.socks.port}", f"{url}/small", user=f"first{i}")
                except RuntimeError as exc:  # counted and said, not hidden in the median
                    why = " ".join(f"{k}={v}" for k, v in sorted(client.onion.stats.items()))
                    print(f"onionmesh.hs_first_failed run={i} {exc} client: {why}", flush=True)
                    continue
                firsts.append(got[1] * 1000)
            out("hs_first_failures", args.first - len(firsts), "", ".0f")
            if not firsts:
                raise RuntimeError("every first connection failed")
            out("hs_first_ttfb_ms", statistics.median(firsts), "ms", ".1f")
            if warm is not None:  # its first part alone: the descriptor fetch through circuits
                from onionmesh.crypto.hs_address import parse_onion_host

                fetches = []
                for _ in range(args.first):
                    warm.onion._descriptors.clear()
                    t = time.monotonic()
                    await warm.onion._descriptor(
                        service.address, service.service_id, parse_onion_host(service.address), True
                    )
                    fetches.append((time.monotonic() - t) * 1000)
                out("hs_desc_fetch_ms", statistics.median(fetches), "ms", ".1f")
            print(f"onionmesh.hs_first_ttfb_ms_runs {','.join(f'{x:.1f}' for x in firsts)} ms", flush=True)
            if pooled:  # pre-built circuits taken (one EXTEND each) and misses (built whole)
                for who, n in (("client", client), ("service", host)):
                    stats = " ".join(f"{k}={v}" for k, v in sorted(n.hs.pool.stats.items()))
                    print(f"onionmesh.hs_pool_{who} {stats}", flush=True)
            socks = f"127.0.0.1:{client.socks.port}"
            await curl(socks, f"{url}/small", user="warm")
            small = [(await curl(socks, f"{url}/small", user="warm"))[1] * 1000 for _ in range(5)]
            out("hs_small_ttfb_ms", statistics.median(small), "ms")
            speeds = [(await curl(socks, f"{url}/bulk", user="warm"))[0] / 1e6 for _ in range(args.runs)]
            out("hs_bulk_MBps", statistics.median(speeds), "MB/s", ".1f")
            print(f"onionmesh.hs_bulk_MBps_runs {','.join(f'{s:.1f}' for s in speeds)} MB/s", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relays", type=int, default=5)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--first", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="8 MiB, 1 bulk run, 2 first connections")
    ap.add_argument("--tor-only", action="store_true")
    ap.add_argument("--cold-client", action="store_true", help="a fresh client node per first connection")
    ap.add_argument("--onionmesh-only", action="store_true")
    ap.add_argument("--no-pool", action="store_true", help="no pre-built onion-service circuits (A/B)")
    args = ap.parse_args(argv)
    if args.quick:
        args.mib, args.runs, args.first = 8, 1, 2
    tor = {} if args.onionmesh_only else run_tor(args)
    om = {} if args.tor_only else run(measure_onionmesh(args))

    def check(name: str, a: str, b: str, target: float, higher: bool) -> None:
        value = om[a] / tor[b] if a in om and tor.get(b) else None
        if value is None:
            print(f"check.{name} n/a x SKIP target {'>=' if higher else '<='} {target}")
            return
        ok = value >= target if higher else value <= target
        sign = ">=" if higher else "<="
        print(f"check.{name} {value:.3f} x {'PASS' if ok else 'FAIL'} target {sign} {target}")

    check("hs_first_connection_vs_tor", "hs_first_ttfb_ms", "tor.hs_first_ttfb_ms", 0.5, higher=False)
    check("hs_bulk_vs_tor", "hs_bulk_MBps", "tor.hs_bulk_MBps", 5.0, higher=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
