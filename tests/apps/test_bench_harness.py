"""The benchmark harness itself keeps working (a smoke run with tiny sizes; no figure is judged)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = [
    "ready_s", "bulk_MBps", "bulk_cpu_s_per_MB", "small_total_ms", "small_total_ms_p90",
    "circ_build_ms_median", "circ_build_ms_p90", "streams200_aggregate_MBps", "streams200_jain",
    "streams200_failed", "open_streams", "relay_peak_rss_MB_max",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_throughput_bench_quick_run_prints_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--quick"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    figures = {}
    for line in out.stdout.splitlines():
        name, value, _unit = line.split(" ", 2)
        figures[name.removeprefix("onionmesh.")] = value
    for name in EXPECTED:
        float(figures[name])  # present, and a number
    assert figures["streams200_failed"] == "0"
    assert int(figures["open_streams"]) == 50  # every stream of the quick run opened
