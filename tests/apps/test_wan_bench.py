"""bench/wan.py's report: every figure with its ratio and issue 20's target, from run.sh's lines."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import wan

RUN = """wan.profile continental
wan.params delay=20ms jitter=2ms loss=0% rate=0bit/s (per crossing of lo)
wan.loadavg_start 5.38 6.74 5.43
tor.version 0.4.9.11
om.version 0.1.0
tor.bulk_MBps 0.7
om.bulk_MBps 7.7
tor.small_total_ms 500.0
om.small_total_ms 300.0
tor.circ_build_cold_ms_median 300
om.circ_build_cold_ms_median 450
om.bdp_streams1_aggregate_MBps 9.0
om.bdp_streams4_aggregate_MBps 10.0
# a comment
"""


def test_report_prints_ratios_and_targets() -> None:
    lines = "\n".join(wan.report("continental", wan.parse(RUN)))
    assert "wan.loadavg_start 5.38 6.74 5.43" in lines
    assert "bulk_MBps" in lines and "11.00" in lines and "target >= 10x: met" in lines
    assert "0.60  target <= 0.8x: met" in lines
    assert "1.50  target <= 1x: MISSED" in lines
    assert "0.90  target >= 0.8 (at 60 ms per hop): met" in lines
    version = next(line for line in lines.splitlines() if line.split()[:1] == ["version"])
    assert version.split()[1:4] == ["-", "-", "-"]  # a version string is not a figure


@given(st.text(max_size=40))
def test_first_number_never_raises(value: str) -> None:
    n = wan.first_number(value)
    assert n is None or isinstance(n, float)


def test_first_number_reads_leading_numbers_only() -> None:
    assert wan.first_number("6.94") == 6.94
    assert wan.first_number("20 ok, 0 failed") == 20.0
    assert wan.first_number("122.14,120.29,158.99") == 122.14
    assert wan.first_number("0.4.9.11") is None
    assert wan.first_number(None) is None
