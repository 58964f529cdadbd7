"""WAN bench (issue 20): onionmesh against Tor under delayed, lossy paths, with the issue's targets.

    sudo .venv/bin/python bench/wan.py continental intercontinental lossy
    sudo .venv/bin/python bench/wan.py --ready "300 0 3 0"

Profiles: a wrapper around ../shared/bench/wan/run.sh (WAN_RUN_SH overrides the path; its
README describes the emulator and every figure): each profile is one run.sh run in its own
network namespace, Tor then onionmesh, from this checkout.  This prints, per profile, every
figure both sides have with its ratio (onionmesh / Tor) and the issue's target where it sets
one, the load average run.sh recorded, and where the raw outputs are.

`--ready "DELAY JITTER LOSS RATE"`: the issue's "no cliff" acceptance, without Tor: in a fresh
namespace whose lo delays every packet as run.sh's `custom` profile does (nfq_netem, built from
run.sh's directory), bench/wan_ready.py starts `onionmesh testnet --relays 5`, times it to
ready, then fetches READY_FETCHES (20) files of READY_MIB (1) MiB on fresh circuits and checks
each byte for byte.  Target: ready within 30 s, 20 of 20 exact.

Needs root (ip netns); nothing leaves the namespace, which is deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_CANDIDATES = [up / "shared" / "bench" / "wan" / "run.sh" for up in (ROOT.parent, ROOT.parent.parent)]
RUN_SH = Path(os.environ.get("WAN_RUN_SH") or next((c for c in _CANDIDATES if c.exists()), _CANDIDATES[0]))
WORK = Path(os.environ.get("WORK", "/tmp/wan"))

# The targets, as ratios onionmesh / Tor (None: no target, printed for information).
# "max": the ratio must be at most this; "min": at least this.
TARGETS: dict[str, tuple[str, float]] = {
    "bulk_MBps": ("min", 10.0),  # one stream, fresh circuit
    "small_total_ms": ("max", 0.8),  # 1 KiB on an open circuit
    "mix_50KiB_ttlb_ms": ("max", 0.8),
    "circ_build_cold_ms_median": ("max", 1.0),
    "circ_build_ms_median": ("max", 0.8),  # links open
}
LONE_STREAM_TARGET = 0.8  # one stream >= 80 % of four together on one circuit (at 60 ms per hop)


def parse(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line.strip():
            continue
        key, value = line.split(" ", 1)
        values[key] = value.strip()
    return values


def first_number(value: str | None) -> float | None:
    if value is None:
        return None
    m = re.match(r"-?[0-9]+(\.[0-9]+)?(?![0-9.])", value)
    return float(m.group()) if m else None


def verdict(figure: str, ratio: float | None) -> str:
    target = TARGETS.get(figure)
    if target is None or ratio is None:
        return ""
    kind, bound = target
    met = ratio >= bound if kind == "min" else ratio <= bound
    return f"target {'>=' if kind == 'min' else '<='} {bound:g}x: {'met' if met else 'MISSED'}"


def report(profile: str, values: dict[str, str]) -> list[str]:
    lines = [f"== {profile}: {values.get('wan.params', '?')}"]
    for key in ("wan.emulator", "wan.probe_udp_rtt_ms", "wan.loadavg_start", "wan.loadavg_after_tor",
                "wan.loadavg_end"):  # fmt: skip
        if key in values:
            lines.append(f"   {key} {values[key]}")
    figures = sorted(
        {k[4:] for k in values if k.startswith("tor.")} | {k[3:] for k in values if k.startswith("om.")}
    )
    lines.append(f"   {'figure':<30} {'Tor':>12} {'onionmesh':>12} {'om/Tor':>8}  target")
    for fig in figures:
        tor, om = values.get(f"tor.{fig}"), values.get(f"om.{fig}")
        a, b = first_number(tor), first_number(om)
        ratio = b / a if a and b is not None and a > 0 else None
        if tor is None and fig not in TARGETS and not fig.startswith(("bdp", "bootstrap", "first")):
            continue
        r = f"{ratio:.2f}" if ratio is not None else "-"
        ta, ob = "-" if a is None else f"{a:g}", "-" if b is None else f"{b:g}"
        lines.append(f"   {fig:<30} {ta:>12} {ob:>12} {r:>8}  {verdict(fig, ratio)}")
    one = first_number(values.get("om.bdp_streams1_aggregate_MBps"))
    four = first_number(values.get("om.bdp_streams4_aggregate_MBps"))
    if one is not None and four:
        met = one / four >= LONE_STREAM_TARGET
        lines.append(
            f"   {'one stream / four streams':<30} {one:>12g} {four:>12g} {one / four:>8.2f}  "
            f"target >= {LONE_STREAM_TARGET:g} (at 60 ms per hop): {'met' if met else 'MISSED'}"
        )
    return lines


def run_profile(profile: str) -> tuple[dict[str, str], str]:
    out_dir = WORK / "results" / f"{profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    env = dict(os.environ, ONIONMESH_SRC=str(ROOT), OUT_DIR=str(out_dir), WORK=str(WORK))
    proc = subprocess.run(["bash", str(RUN_SH), profile], cwd=ROOT, env=env, capture_output=True, text=True)
    text = proc.stdout
    if proc.returncode != 0:
        text += f"\n# run.sh rc={proc.returncode}: {proc.stderr[-500:]}"
    return parse(text), str(out_dir)


@contextlib.contextmanager
def delayed_namespace(params: str) -> Iterator[str]:
    """A namespace whose lo delays/drops as run.sh's custom profile; deleted on exit."""
    delay, jitter, loss, rate = params.split()
    ns = f"omwanr{os.getpid()}"
    emu = WORK / "nfq_netem"
    src = RUN_SH.parent / "nfq_netem.c"
    WORK.mkdir(parents=True, exist_ok=True)
    if not emu.exists() or src.stat().st_mtime > emu.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(emu), str(src)], check=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        with open(WORK / f"{ns}.emulator.log", "w") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    str(emu),
                    "0",
                    delay,
                    jitter,
                    loss,
                    rate,
                    "200000",
                    str(os.getpid()),
                ],
                stderr=log,
            )
        for _ in range(50):
            if "nfq_netem: queue" in (WORK / f"{ns}.emulator.log").read_text():
                break
            time.sleep(0.1)
        rule = ["-t", "raw", "-A", "PREROUTING", "-i", "lo", "-j", "NFQUEUE", "--queue-num", "0"]
        subprocess.run(["ip", "netns", "exec", ns, "iptables-legacy", *rule], check=True)
        yield ns
    finally:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:  # everything in the namespace was started here
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 15)
        if proc is not None:
            proc.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def ready_check(params: str) -> int:
    print(f'== ready: custom WAN_PARAMS="{params}"; loadavg {Path("/proc/loadavg").read_text().split()[:3]}')
    with delayed_namespace(params) as ns:
        proc = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, str(HERE / "wan_ready.py")],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
    print(proc.stdout, end="")
    values = parse(proc.stdout)
    boot = first_number(values.get("ready.bootstrap_s"))
    ok = values.get("ready.fetch_ok", "0/0")
    good = boot is not None and boot <= 30 and ok.split("/")[0] == ok.split("/")[1]
    print(f"   target: ready <= 30 s and every fetch exact: {'met' if good else 'MISSED'}")
    print(f"   loadavg at end {Path('/proc/loadavg').read_text().split()[:3]}")
    return 0 if good else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profiles", nargs="*", default=["continental", "intercontinental", "lossy"])
    parser.add_argument("--ready", metavar="PARAMS", help='"DELAY JITTER LOSS RATE": the no-cliff check only')
    parser.add_argument(
        "--report", nargs="+", metavar="DIR", help="only print the report of earlier runs' OUT_DIRs"
    )
    args = parser.parse_args()
    if args.report:
        for out_dir in args.report:
            text = "".join((Path(out_dir) / f).read_text() for f in ("wan.txt", "tor.txt", "om.txt"))
            values = parse(text)
            print("\n".join(report(values.get("wan.profile", out_dir), values)))
            print(f"   raw outputs: {out_dir}")
        return 0
    if os.geteuid() != 0:
        print("needs root (ip netns)", file=sys.stderr)
        return 2
    if args.ready:
        return ready_check(args.ready)
    for profile in args.profiles:
        values, out_dir = run_profile(profile)
        print("\n".join(report(profile, values)))
        print(f"   raw outputs: {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
