"""When a simulated user opens streams, and so when its client builds circuits.

A TorPS-like "typical" user, as an assumption of this project (Johnson et al.'s own traces were
not available here): 2-4 browsing sessions a day, starting at uniform times between 08:00 and
24:00, each lasting a log-normal time (median 30 min); within a session a stream every 2 min on
average (exponential gaps), to port 443 (90 %) or 80.  A circuit is reused for new streams for
10 minutes after it was built (Tor's MaxCircuitDirtiness); every exit in the studies accepts
both ports, so the port never forces a new circuit.
"""

from __future__ import annotations

import random

DAY = 86_400.0
CIRCUIT_REUSE = 600.0


def stream_times(rng: random.Random, days: int) -> list[float]:
    """Seconds since the start of day 0 at which the user opens a stream, sorted."""
    times: list[float] = []
    for day in range(days):
        for _ in range(rng.randint(2, 4)):
            t = day * DAY + rng.uniform(8 * 3600, 24 * 3600)
            end = t + 1800 * rng.lognormvariate(0.0, 0.7)
            while t < end:
                times.append(t)
                t += rng.expovariate(1 / 120)
    return sorted(times)


def circuit_times(streams: list[float]) -> list[float]:
    """When circuits are built: at a stream when no circuit younger than CIRCUIT_REUSE exists."""
    built: list[float] = []
    for t in streams:
        if not built or t - built[-1] >= CIRCUIT_REUSE:
            built.append(t)
    return built
