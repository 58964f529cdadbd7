"""onionmesh's performance figures on a loopback testnet, as `name value unit` lines.

Starts `onionmesh testnet`'s relays as separate processes (as a user would), the proxy in this
process (as `onionmesh testnet` runs it), a static HTTP server, and measures with curl (and
bench/_load.py for many streams) through the SOCKS port, the way ../shared/bench/tornet/run.sh
measures Tor:
  - ready: from launch until the testnet has carried a first 1 KiB fetch (s)
  - bulk: one stream through 3 hops, a 64 MiB file, a fresh circuit per run, median (MB/s, 10^6 B)
  - CPU per MB: utime+stime of all onionmesh processes (relays and proxy) during the bulk runs
  - circuit build with links open (median, p90 of 20, ms)
  - 1 KiB fetch on an open circuit, new stream each time (median, p90 of 20, ms)
  - 200 concurrent streams of 1 MiB: aggregate MB/s and Jain's fairness index of their rates
  - peak RSS (VmHWM, reset first) of each relay while 1,000 streams are opened and held (MB)
  - first request after start with a pre-built circuit against one built on demand

    python bench/throughput.py [--relays 5] [--mib 64] [--runs 5] [--small 20] [--builds 20]
                               [--streams 200] [--open 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _load import start_file_server, stop_all, vm_kb

from onionmesh.app.testnet import Testnet
from onionmesh.runtime import safelog
from onionmesh.runtime.client.node import ClientConfig, ClientNode

BENCH = Path(__file__).resolve().parent
CLK = os.sysconf("SC_CLK_TCK")


def p90(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]


def jain(rates: list[float]) -> float:
    """Jain's fairness index: 1 when every stream got the same rate, 1/n when one got everything."""
    return sum(rates) ** 2 / (len(rates) * sum(r * r for r in rates)) if rates else 0.0


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def curl(socks: str, url: str, user: str | None = None) -> tuple[float, float, float]:
    """(bytes/s, time to first byte s, total s) as curl measured them."""
    cmd = ["curl", "-s", "-o", "/dev/null", "--max-time", "300", "--socks5-hostname", socks]
    if user:
        cmd += ["--proxy-user", f"{user}:x"]  # distinct SOCKS credentials: a fresh circuit
    cmd += ["-w", "%{speed_download} %{time_starttransfer} %{time_total} %{http_code}", url]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    speed, ttfb, total, code = out.decode().split()
    if code != "200":
        raise RuntimeError(f"curl got HTTP {code}")
    return float(speed), float(ttfb), float(total)


async def load(mode: str, socks: int, port: int, streams: int, path: str = "/") -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH / "_load.py"), mode, "--socks", str(socks), "--port", str(port),
        "--path", path, "--streams", str(streams),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def measure(args: argparse.Namespace, emit=print) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Run every measurement; emit each figure as it comes; return them by name."""
    figures: dict[str, float] = {}

    def out(name: str, value: float, unit: str, fmt: str = ".2f") -> None:
        figures[name] = value
        emit(f"onionmesh.{name} {value:{fmt}} {unit}")

    safelog.configure("error")
    with tempfile.TemporaryDirectory(prefix="onionmesh-bench-") as tmp:
        www = Path(tmp) / "www"
        www.mkdir()
        (www / "bulk").write_bytes(os.urandom(args.mib * 1024 * 1024))
        (www / "small").write_bytes(os.urandom(1024))
        (www / "mib").write_bytes(os.urandom(1024 * 1024))
        server, port = start_file_server(www)
        base = f"http://localhost:{port}"
        net = Testnet(Path(tmp) / "net", args.relays, ("127.0.0.1", 0), ("127.0.0.1", 0), log_level="error")
        try:
            t0 = time.monotonic()
            info = await net.start()
            socks = str(info["socks"])
            first = (await curl(socks, f"{base}/small"))[1] * 1000
            out("ready_s", time.monotonic() - t0, "s")
            assert net.client is not None
            pids = [p.pid for p in net.procs]

            speeds, cpu = [], 0.0
            for i in range(args.runs):
                c0 = sum(proc_cpu_s(p) for p in pids) + self_cpu_s()
                speeds.append((await curl(socks, f"{base}/bulk", user=f"bulk{i}"))[0] / 1e6)
                cpu += sum(proc_cpu_s(p) for p in pids) + self_cpu_s() - c0
            megabytes = args.runs * args.mib * 1.048576
            out("bulk_MBps", statistics.median(speeds), "MB/s", ".1f")
            emit(f"onionmesh.bulk_MBps_runs {','.join(f'{s:.1f}' for s in speeds)} MB/s")
            out("bulk_cpu_s_per_MB", cpu / megabytes, "CPU-s/MB", ".4f")
            out("bulk_cpu_util_cores", cpu / sum(args.mib * 1.048576 / s for s in speeds), "cores")
            if getattr(args, "bulk_only", False):
                return figures

            await curl(socks, f"{base}/small")  # warm: circuit and links exist
            small = [await curl(socks, f"{base}/small") for _ in range(args.small)]
            total = [s[2] * 1000 for s in small]
            out("small_ttfb_ms", statistics.median(s[1] * 1000 for s in small), "ms")
            out("small_total_ms", statistics.median(total), "ms")
            out("small_total_ms_p90", p90(total), "ms")

            builds = []
            for _ in range(args.builds):
                t = time.monotonic()
                handle = await net.client.circuits.build(port=port)
                builds.append((time.monotonic() - t) * 1000)
                net.client.circuits.close_circuit(handle.number)
            out("circ_build_ms_median", statistics.median(builds), "ms")
            out("circ_build_ms_p90", p90(builds), "ms")

            sp = net.client.socks.port
            gen = await load("fetch", sp, port, args.streams, "/mib")
            result = json.loads((await gen.communicate())[0])
            rates = [b / s for b, s, _ in result["streams"] if s > 0]
            got = sum(b for b, _, _ in result["streams"])
            out("streams200_aggregate_MBps", got / result["wall_s"] / 1e6, "MB/s", ".1f")
            out("streams200_jain", jain(rates), "index", ".3f")
            out("streams200_failed", result["failed"], "streams", ".0f")

            # The peak below is the 1,000-stream phase's, not the bulk runs': let the relays' once-a-
            # second memory check see their queues drained (and trim the heap) before resetting it.
            await asyncio.sleep(2)
            for pid in pids:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            holder = await load("hold", sp, port, args.open)
            assert holder.stdout is not None and holder.stdin is not None
            opened = int((await holder.stdout.readline()).split()[1])
            await asyncio.sleep(1)
            peaks = [vm_kb(p, "VmHWM") / 1024 for p in pids]
            for i, (pid, peak) in enumerate(zip(pids, peaks, strict=True)):
                emit(f"onionmesh.relay{i}_rss_MB {vm_kb(pid, 'VmRSS') / 1024:.1f} MB (peak {peak:.1f})")
            out("open_streams", opened, "streams", ".0f")
            out("relay_peak_rss_MB_max", max(peaks), "MB", ".1f")
            holder.stdin.close()
            await holder.wait()

            if not args.quick:
                contacts = tuple((h, int(p)) for h, p in (b.rsplit(":", 1) for b in info["bootstrap"]))
                cold = ClientNode(
                    ClientConfig(
                        data_dir=Path(tmp) / "cold-client", socks_port=0, control_port=0, prebuilt_circuits=0,
                        bootstrap=contacts,
                    )
                )  # fmt: skip
                await cold.start()
                await cold.directory.wait_for(args.relays, 30)
                cold_first = (await curl(f"127.0.0.1:{cold.socks.port}", f"{base}/small"))[1] * 1000
                await cold.stop()
                out("first_ttfb_ms_prebuilt", first, "ms")
                out("first_ttfb_ms_no_prebuilt", cold_first, "ms")
        finally:
            await stop_all(net, server)
    return figures


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relays", type=int, default=5)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--builds", type=int, default=20)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--open", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of the harness")
    return ap


def quick(args: argparse.Namespace) -> argparse.Namespace:
    if args.quick:
        args.mib, args.runs, args.small, args.builds, args.streams, args.open = 8, 1, 5, 5, 20, 50
    return args


if __name__ == "__main__":
    from onionmesh.app.run import run

    run(measure(quick(parser().parse_args())))
