"""Token buckets keyed by source: how a node stops one peer from taking all of its time."""

from __future__ import annotations

from collections import OrderedDict


class TokenBuckets:
    """Per-source request budgets, bounded in how many sources they remember."""

    def __init__(self, rate: float, burst: float, max_sources: int) -> None:
        self.rate, self.burst, self.max_sources = rate, burst, max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed


class ByteBucket:
    """A relay's bandwidth budget in one direction (Tor's BandwidthRate / BandwidthBurst).

    `take` grants what the bucket holds now, up to what was asked; `wait_for` says how long
    until `n` bytes will be there.  A relay with no limit has no bucket at all.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < rate:
            raise ValueError("bandwidth rate must be positive and burst at least the rate")
        self.rate, self.burst = rate, burst
        self.tokens, self.last = burst, now

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def take(self, n: int, now: float) -> int:
        self._refill(now)
        granted = int(min(n, max(0.0, self.tokens)))
        self.tokens -= granted
        return granted

    def wait_for(self, n: int, now: float) -> float:
        self._refill(now)
        return max(0.0, (min(n, self.burst) - self.tokens) / self.rate)
