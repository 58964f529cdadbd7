"""Throughput and latency through a loopback testnet, as `name value unit` lines.

Starts `onionmesh testnet`'s relays as separate processes (as a user would), the client in
this process, and a static HTTP server; then measures with curl through the SOCKS port:
  - bulk: one stream downloading a large file through 3 hops (MB/s, MB = 10^6 B)
  - ttfb / total: a 1 KiB fetch over an already built circuit (median and p90, ms)
  - circuit build time with links already open (median, ms)
  - time until the testnet can carry traffic (s)
  - time to first byte of the first request after start: with a pre-built circuit (the proxy as
    shipped) and without (a second proxy that builds on demand), and their ratio, in one run

    python bench/throughput.py [--relays 5] [--mb 50] [--runs 3] [--small 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onionmesh.app.testnet import Testnet
from onionmesh.runtime import safelog
from onionmesh.runtime.client_node import ClientConfig, ClientNode


def p90(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]


async def curl(socks: str, url: str) -> tuple[float, float, float]:
    """Returns (bytes/s, time to first byte s, total s) as curl measured them."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "/dev/null", "--max-time", "300", "--socks5-hostname", socks,
        "-w", "%{speed_download} %{time_starttransfer} %{time_total} %{http_code}", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    speed, ttfb, total, code = out.decode().split()
    if code != "200":
        raise RuntimeError(f"curl got HTTP {code}")
    return float(speed), float(ttfb), float(total)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--relays", type=int, default=5)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", type=int, default=50)
    ap.add_argument("--builds", type=int, default=20)
    args = ap.parse_args()
    safelog.configure("error")

    with tempfile.TemporaryDirectory(prefix="onionmesh-bench-") as tmp:
        www = Path(tmp) / "www"
        www.mkdir()
        (www / "bulk").write_bytes(os.urandom(args.mb * 1_000_000))
        (www / "small").write_bytes(os.urandom(1024))
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(www)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
            port = int(line.split(" port ")[1].split()[0])
            net = Testnet(
                Path(tmp) / "net", args.relays, ("127.0.0.1", 0), ("127.0.0.1", 0), log_level="error"
            )
            t0 = time.monotonic()
            info = await net.start()
            print(f"onionmesh.ready_s {time.monotonic() - t0:.2f} s")
            socks = str(info["socks"])
            base = f"http://localhost:{port}"
            try:
                first = (await curl(socks, f"{base}/small"))[1] * 1000
                cold = ClientNode(
                    ClientConfig(
                        data_dir=Path(tmp) / "cold-client",
                        socks_port=0,
                        control_port=0,
                        bootstrap=tuple(
                            (h, int(p)) for h, p in (b.rsplit(":", 1) for b in info["bootstrap"])
                        ),
                        prebuilt_circuits=0,
                    )
                )
                await cold.start()
                await cold.directory.wait_for(args.relays, 30)
                cold_first = (await curl(f"127.0.0.1:{cold.socks.port}", f"{base}/small"))[1] * 1000
                await cold.stop()
                print(f"onionmesh.first_ttfb_ms_prebuilt {first:.2f} ms")
                print(f"onionmesh.first_ttfb_ms_no_prebuilt {cold_first:.2f} ms")
                print(f"onionmesh.first_ttfb_ratio_no_prebuilt_over_prebuilt {cold_first / first:.2f} x")
                speeds = [(await curl(socks, f"{base}/bulk"))[0] / 1e6 for _ in range(args.runs)]
                print(f"onionmesh.bulk_MBps {statistics.median(speeds):.1f} MB/s")
                print(f"onionmesh.bulk_MBps_runs {','.join(f'{s:.1f}' for s in speeds)} MB/s")
                await curl(socks, f"{base}/small")  # warm: circuit and links exist
                small = [await curl(socks, f"{base}/small") for _ in range(args.small)]
                ttfb = [s[1] * 1000 for s in small]
                total = [s[2] * 1000 for s in small]
                print(f"onionmesh.small_ttfb_ms {statistics.median(ttfb):.2f} ms")
                print(f"onionmesh.small_total_ms {statistics.median(total):.2f} ms")
                print(f"onionmesh.small_total_ms_p90 {p90(total):.2f} ms")
                assert net.client is not None
                builds = []
                for _ in range(args.builds):
                    t = time.monotonic()
                    handle = await net.client.circuits.build(port=port)
                    builds.append((time.monotonic() - t) * 1000)
                    net.client.circuits.close_circuit(handle.number)
                print(f"onionmesh.circ_build_ms_median {statistics.median(builds):.2f} ms")
                print(f"onionmesh.circ_build_ms_p90 {p90(builds):.2f} ms")
            finally:
                await net.stop()
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    asyncio.run(main())
