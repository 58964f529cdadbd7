"""onionmesh against Tor on this machine, in one run: every figure with its ratio and target.

Runs ../shared/bench/tornet/run.sh (a private Tor network on loopback; it installs Debian's
`tor` when missing and it may), then bench/throughput.py's measurements and the physical-limit
probe of bench/limit.py, one after the other so that they never compete for the CPU, and
prints `name value unit` lines, then one `check.*` line per target of issue 5 with PASS/FAIL.
When Tor's harness fails it runs once more (and says so); where Tor cannot run here, it says so
and prints onionmesh's figures alone.

    python bench/vs_tor.py [--quick]
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from limit import probe
from throughput import measure, parser, quick

from onionmesh.app.run import run

TORNET = Path(__file__).resolve().parents[2] / "shared" / "bench" / "tornet" / "run.sh"
# Tor's own harness fails now and then on this machine (its warm-up curl through Tor times out
# after 120 s in about one run of five): a second try, said in the output, not a silent one.
TOR_ATTEMPTS = 2


def run_tor(quick_run: bool) -> dict[str, float]:
    if not TORNET.exists():
        print(f"# skipping Tor: {TORNET} is not here", flush=True)
        return {}
    env = dict(os.environ)
    if quick_run:
        env.update(BULK_MIB="8", BULK_RUNS="1", SMALL_RUNS="5", CIRC_N="5")
    for attempt in range(1, TOR_ATTEMPTS + 1):
        proc = subprocess.run(["bash", str(TORNET)], capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode == 0:
            break
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        what = "running it again" if attempt < TOR_ATTEMPTS else "skipping Tor"
        print(f"# {what}: run.sh exited with {proc.returncode}: {reason}", flush=True)
    else:
        return {}
    figures: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(("tor.", "direct.")):
            print(line, flush=True)
            with contextlib.suppress(ValueError):
                figures[parts[0]] = float(parts[1])
    return figures


def main() -> None:
    args = quick(parser().parse_args())
    tor = run_tor(args.quick)
    om = run(measure(args, emit=lambda line: print(line, flush=True)))
    limit = probe(40 if args.quick else 200, 1 if args.quick else 5)
    if limit is not None:
        print(f"limit.chain_3hop_MBps {limit:.1f} MB/s")

    checks: list[tuple[str, float | None, str, bool | None]] = []

    def check(name: str, value: float | None, unit: str, ok: bool | None) -> None:
        checks.append((name, value, unit, ok))

    def ratio(a: str, b: str) -> float | None:
        return om[a] / tor[b] if tor.get(b) else None

    bulk = ratio("bulk_MBps", "tor.bulk_MBps")
    check("bulk_vs_tor (>= 5)", bulk, "x", None if bulk is None else bulk >= 5)
    frac = om["bulk_MBps"] / limit if limit else None
    check("bulk_vs_limit_probe (>= 0.5)", frac, "ratio", None if frac is None else frac >= 0.5)
    build = ratio("circ_build_ms_median", "tor.circ_build_ms_median")
    check("circ_build_vs_tor (<= 0.5)", build, "x", None if build is None else build <= 0.5)
    small = ratio("small_total_ms", "tor.small_total_ms")
    check("small_1KiB_vs_tor (<= 0.5)", small, "x", None if small is None else small <= 0.5)
    spread = om["small_total_ms_p90"] / om["small_total_ms"]
    check("small_1KiB_p90_over_median (<= 3)", spread, "x", spread <= 3)
    check("ready_s (< 3)", om["ready_s"], "s", om["ready_s"] < 3)
    cpu = tor.get("tor.bulk_cpu_s_per_MB")
    check("cpu_per_MB_vs_tor (<= 1)", om["bulk_cpu_s_per_MB"] / cpu if cpu else None, "x",
          None if not cpu else om["bulk_cpu_s_per_MB"] <= cpu)  # fmt: skip
    agg = ratio("streams200_aggregate_MBps", "tor.bulk_MBps")
    check("streams200_aggregate_vs_tor_bulk (>= 5)", agg, "x", None if agg is None else agg >= 5)
    check("streams200_jain (>= 0.9)", om["streams200_jain"], "index", om["streams200_jain"] >= 0.9)
    rss = om["relay_peak_rss_MB_max"]
    all_open = om["open_streams"] >= args.open
    check("relay_peak_rss_MB_with_1000_streams (< 80)", rss, "MB", rss < 80 and all_open)
    for name, value, unit, ok in checks:
        shown = "n/a" if value is None else f"{value:.3f}"
        verdict = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        print(f"check.{name.split()[0]} {shown} {unit} {verdict} {name.split(' ', 1)[1]}")


if __name__ == "__main__":
    main()
