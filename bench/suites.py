"""End-to-end cost of the crypto suites: the bulk download of `bench/throughput.py` through a
testnet whose relays run the AES suites (AES_GCM layers, AEGIS-256 links) and through one whose
relays run as machines without AES instructions (`ONIONMESH_DISABLE_AES=1` in their environment:
every hop then falls back to XCHACHA and every link to ChaCha20-Poly1305), in one run, with the
ratios.

    python bench/suites.py [--mib 64] [--runs 3]

Prints `name value unit` lines.  On a machine without AES instructions both testnets run the
ChaCha suites, and the script says so.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import measure, parser

from onionmesh.app.run import run
from onionmesh.crypto.sodium import HARDWARE_AES


def bulk(mib: int, runs: int, relays_have_aes: bool) -> dict[str, float]:
    """Bulk figures with the relay processes' AES switched on or off (they inherit this environment)."""
    if relays_have_aes:
        os.environ.pop("ONIONMESH_DISABLE_AES", None)
    else:
        os.environ["ONIONMESH_DISABLE_AES"] = "1"
    try:
        args = parser().parse_args(["--mib", str(mib), "--runs", str(runs)])
        args.bulk_only = True
        return run(measure(args, emit=lambda line: None))
    finally:
        os.environ.pop("ONIONMESH_DISABLE_AES", None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not HARDWARE_AES:
        print("# this machine has no AES instructions: both testnets run the ChaCha suites", file=sys.stderr)
    figures = {name: bulk(args.mib, args.runs, aes) for name, aes in (("aes", True), ("chacha", False))}
    for name, f in figures.items():
        print(f"suites.{name}_bulk_MBps {f['bulk_MBps']:.1f} MB/s")
        print(f"suites.{name}_cpu_s_per_MB {f['bulk_cpu_s_per_MB']:.4f} CPU-s/MB")
    aes, chacha = figures["aes"], figures["chacha"]
    cpu_ratio = aes["bulk_cpu_s_per_MB"] / chacha["bulk_cpu_s_per_MB"]
    print(f"suites.bulk_aes_over_chacha {aes['bulk_MBps'] / chacha['bulk_MBps']:.2f} ratio")
    print(f"suites.cpu_per_MB_aes_over_chacha {cpu_ratio:.2f} ratio")


if __name__ == "__main__":
    main()
