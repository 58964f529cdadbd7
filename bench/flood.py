"""Floods against a loopback testnet, as `name value unit` lines (issue 15's acceptance figures).

Starts `onionmesh testnet`'s relays as separate processes and the proxy in this process (as
bench/throughput.py does), then, each bounded in count and time, loopback only:
  - normal: an honest download through one circuit (SOCKS user "honest"), median of runs (MB/s)
  - handshake flood: bench/_flood.py (nice 19) sends valid first link messages from 64 source
    addresses (127.66.0.x) at the circuit's first relay; honest throughput during it as a fraction
    of normal; the relay's RSS before, at its peak during, and how long until back under 80 MB after
    (at most --recover seconds); the rate the relay answered handshakes at
  - SOCKS flood: idle connections and half-handshakes held at the proxy's SOCKS port; honest
    throughput during it as a fraction of normal (new streams: curl opens a SOCKS connection each
    time) and this process's (the proxy's) peak RSS
  - DHT: ping, find_node, find_value and store with fresh node IDs, in every framing
    (bench/dht_reflection.py), from one UDP socket to a relay's DHT port; bytes
    the relay sent back to that unproven address over the bytes it received from it

Targets (issue 15): honest fraction >= 0.5, relay RSS < 120 MB during and < 80 MB within 60 s
after, DHT bytes out / in <= 1.

    python bench/flood.py [--seconds 20] [--rate 2000] [--socks-conns 1000] [--mib 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _load import start_file_server, stop_all, vm_kb
from dht_reflection import burst_round

from onionmesh.app.testnet import Testnet
from onionmesh.runtime import safelog

BENCH = Path(__file__).resolve().parent
RSS_TARGET_AFTER_MB = 80.0


def rss_mb(pid: int) -> float:
    return vm_kb(pid, "VmRSS") / 1024


async def curl_mbps(socks: str, url: str, max_time: float = 60) -> float:
    """MB/s of one download through the honest circuit; 0 when it failed."""
    cmd = ["curl", "-s", "-o", "/dev/null", "--max-time", str(max_time), "--socks5-hostname", socks,
           "--proxy-user", "honest:x", "-w", "%{speed_download} %{http_code}", url]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    speed, code = [*out.decode().split(), "0", "0"][:2]
    return float(speed) / 1e6 if code == "200" else 0.0


async def attacker(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "nice", "-n", "19", sys.executable, str(BENCH / "_flood.py"), *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def during(
    proc: asyncio.subprocess.Process, socks: str, url: str, pids: list[int]
) -> tuple[list[float], float]:
    """Honest downloads back to back while `proc` runs (at least one); the peak RSS of `pids` meanwhile."""
    peak = 0.0
    speeds: list[float] = []

    async def sample() -> None:
        nonlocal peak
        while proc.returncode is None:
            peak = max(peak, *(rss_mb(p) for p in pids))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    while proc.returncode is None or not speeds:
        speeds.append(await curl_mbps(socks, url))
    await proc.wait()
    sampler.cancel()
    return speeds, max(peak, *(vm_kb(p, "VmHWM") / 1024 for p in pids))


async def dht_probe(host: str, port: int, count: int) -> tuple[int, int]:
    """(bytes sent, bytes received back) for `count` rounds of bench/dht_reflection.py's burst:
    ping, find_node, find_value and store with fresh node IDs, in every framing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.66.1.1", 0))
    sock.setblocking(False)
    sent = received = 0
    loop = asyncio.get_running_loop()
    try:
        for i in range(count):
            for datagram in burst_round():
                sock.sendto(datagram, (host, port))
                sent += len(datagram)
            if i % 5 == 4:
                await asyncio.sleep(0.05)  # under the relay's per-address rate limit
        deadline = time.monotonic() + 3.0  # answers, and any request the relay sends us back
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
            except TimeoutError:
                break
            received += len(data)
    finally:
        sock.close()
    return sent, received


async def measure(args: argparse.Namespace, emit=print) -> dict[str, float]:  # type: ignore[no-untyped-def]
    figures: dict[str, float] = {}

    def out(name: str, value: float, unit: str, fmt: str = ".2f") -> None:
        figures[name] = value
        emit(f"flood.{name} {value:{fmt}} {unit}")

    safelog.configure("error")
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the SOCKS flood may exhaust descriptors
    with tempfile.TemporaryDirectory(prefix="onionmesh-flood-") as tmp:
        www = Path(tmp) / "www"
        www.mkdir()
        (www / "blob").write_bytes(os.urandom(args.mib * 1024 * 1024))
        server, port = start_file_server(www)
        url = f"http://localhost:{port}/blob"
        net = Testnet(Path(tmp) / "net", 3, ("127.0.0.1", 0), ("127.0.0.1", 0), log_level="error")
        try:
            info = await net.start()
            socks = str(info["socks"])
            relays = info["relays"]
            assert isinstance(relays, list) and net.client is not None
            await curl_mbps(socks, url)  # builds the honest circuit
            normal = statistics.median([await curl_mbps(socks, url) for _ in range(args.runs)])
            out("normal_MBps", normal, "MB/s", ".1f")
            # With 3 relays and 3 hops, every relay is on the honest circuit: flood its first hop.
            circuits = list(net.client.circuits.circuits.values())
            honest = [h for h in circuits if "honest" in repr(h.isolation)]
            desc = (honest or circuits)[-1].path[0]
            victim = next(r for r in relays if r["fingerprint"] == desc.fingerprint)
            vpid = int(victim["pid"])
            host, lport = desc.link_addresses[0]

            await asyncio.sleep(2)  # the relays' memory checks see idle queues
            Path(f"/proc/{vpid}/clear_refs").write_text("5")
            out("relay_rss_before_MB", rss_mb(vpid), "MB", ".1f")
            proc = await attacker("handshakes", host, str(lport), desc.identity_pk.hex(),
                                  "--seconds", str(args.seconds), "--rate", str(args.rate))  # fmt: skip
            speeds, peak = await during(proc, socks, url, [vpid])
            assert proc.stdout is not None
            report = json.loads((await proc.stdout.read()).decode().strip().splitlines()[-1])
            out("handshake_attempted_per_s", report["attempted"] / report["seconds"], "conn/s", ".0f")
            out("handshake_answered_per_s", report["answered"] / report["seconds"], "handshakes/s", ".0f")
            out("handshake_honest_MBps", statistics.median(speeds), "MB/s", ".1f")
            out("handshake_honest_fraction", statistics.median(speeds) / normal, "of-normal", ".2f")
            out("relay_peak_rss_MB", peak, "MB", ".1f")
            t0 = time.monotonic()
            while rss_mb(vpid) >= RSS_TARGET_AFTER_MB and time.monotonic() - t0 < args.recover:
                await asyncio.sleep(0.5)
            out("relay_rss_after_MB", rss_mb(vpid), "MB", ".1f")
            out("relay_rss_under_80MB_after_s", time.monotonic() - t0, "s", ".1f")

            self_pid = os.getpid()
            Path(f"/proc/{self_pid}/clear_refs").write_text("5")
            proc = await attacker("socks", socks.rsplit(":", 1)[1], "--count", str(args.socks_conns),
                                  "--seconds", str(args.seconds))  # fmt: skip
            assert proc.stdout is not None
            opened = json.loads(await asyncio.wait_for(proc.stdout.readline(), args.seconds + 30))["opened"]
            speeds, peak = await during(proc, socks, url, [self_pid])
            out("socks_held_conns", opened, "conns", ".0f")
            out("socks_honest_fraction", statistics.median(speeds) / normal, "of-normal", ".2f")
            out("proxy_peak_rss_MB", peak, "MB", ".1f")

            dht_host, dht_port = victim["dht"].rsplit(":", 1)
            sent, received = await dht_probe(dht_host, int(dht_port), args.dht)
            out("dht_bytes_sent", sent, "B", ".0f")
            out("dht_bytes_received", received, "B", ".0f")
            out("dht_out_over_in", received / sent, "ratio", ".2f")
        finally:
            await stop_all(net, server)
    return figures


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each flood")
    ap.add_argument("--rate", type=float, default=2000.0, help="handshake flood, connections/s")
    ap.add_argument("--socks-conns", type=int, default=1000, help="connections held at the SOCKS port")
    ap.add_argument("--mib", type=int, default=8, help="size of an honest download")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--recover", type=float, default=60.0, help="longest wait for RSS to fall back")
    ap.add_argument("--dht", type=int, default=50, help="rounds of the DHT burst (4 RPCs, 3 framings)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the harness")
    return ap


def quick(args: argparse.Namespace) -> argparse.Namespace:
    if args.quick:
        args.seconds, args.rate, args.socks_conns, args.mib, args.runs = 2.0, 300.0, 60, 2, 1
        args.recover, args.dht = 2.0, 10
    return args


if __name__ == "__main__":
    from onionmesh.app.run import run

    run(measure(quick(parser().parse_args())))
