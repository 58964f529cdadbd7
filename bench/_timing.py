"""Timing helpers shared by the per-call benchmarks (bench/crypto.py, bench/metrics_scrape.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    """Best of 5 loops of about seconds/5 each: the machine's quiet-moment cost."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.05:
        fn()
        n += 1
    calls = max(1, int(n * seconds / 5 / 0.05))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6
