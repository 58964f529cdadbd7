"""The physical-limit probe for onionmesh's cell size, and onionmesh's bulk figure against it.

../shared/bench/limits/tcp_chain.py pushes bytes through 3 forwarding processes on loopback,
each adding one ChaCha20 layer per cell of our size (one libsodium call per cell) and the sink
peeling all three, as a client would: what Python can move through 3 hops here with the least
crypto an onion design needs.  onionmesh's own layer is a MAC pass and a stream pass per layer
and cell (docs/protocol.md §6) plus link-record encryption; on a CPU with AES instructions both
are AES-based (AES-256-GCM's GHASH and CTR, AEGIS-256 links), cheaper per byte than the probe's
ChaCha20, elsewhere ChaCha-based.  So its fraction of the probe is the price of that design plus
everything else a real relay does, with the cheapest primitives the machine offers.  Both are
measured in this one run, with the event loop the relays use.

    python bench/limit.py [--mb 200] [--runs 5] [--mib 64] [--bulk-runs 5]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import measure, parser

from onionmesh.app.run import event_loop_name, run
from onionmesh.wire.cell import CELL_LEN

PROBE = Path(__file__).resolve().parents[2] / "shared" / "bench" / "limits" / "tcp_chain.py"


def probe(mb: float, runs: int) -> float | None:
    """Median MB/s of the 3-hop chain at CELL_LEN with client peeling; None if the probe is missing."""
    if not PROBE.exists():
        print(f"# the probe {PROBE} is not here; skipping it", file=sys.stderr)
        return None
    cmd = [sys.executable, str(PROBE), "--hops", "3", "--cell", str(CELL_LEN), "--peel",
           "--mb", str(mb), "--runs", str(runs), "--loop", event_loop_name()]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    found = re.search(r"([\d.]+) MB/s", out)
    return float(found.group(1)) if found else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200, help="MB per probe run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--bulk-runs", type=int, default=5)
    args = ap.parse_args()
    limit = probe(args.mb, args.runs)
    if limit is not None:
        print(f"limit.chain_3hop_cell{CELL_LEN}_MBps {limit:.1f} MB/s")
    bench = parser().parse_args(["--mib", str(args.mib), "--runs", str(args.bulk_runs)])
    bench.bulk_only = True
    figures = run(measure(bench))
    if limit:
        print(f"limit.onionmesh_fraction_of_limit {figures['bulk_MBps'] / limit:.2f} ratio")


if __name__ == "__main__":
    main()
