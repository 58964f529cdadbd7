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

    `take` grants what the bucket holds now, up to what was asked; `settle` gives back what a
    taker did not use; `wait_for` says how long until `n` bytes will be there.  A relay with no
    limit has no bucket at all.  `carried` and `waits` count what the bucket let through and how
    often a taker found it empty: counted evidence (metrics, tests) that traffic went through it.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < rate:
            raise ValueError("bandwidth rate must be positive and burst at least the rate")
        self.rate, self.burst = rate, burst
        self.tokens, self.last = burst, now
        self.carried = 0  # bytes takers used (settled): what passed under this budget
        self.waits = 0  # times a taker had to wait for tokens

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def take(self, n: int, now: float) -> int:
        self._refill(now)
        granted = int(min(n, max(0.0, self.tokens)))
        self.tokens -= granted
        return granted

    def settle(self, taken: int, used: int) -> None:
        """A taker used `used` of the `taken` bytes `take` granted: the rest goes back."""
        self.tokens += taken - used
        self.carried += used

    def wait_for(self, n: int, now: float) -> float:
        self._refill(now)
        wait = max(0.0, (min(n, self.burst) - self.tokens) / self.rate)
        if wait > 0:
            self.waits += 1
        return wait


class HandshakeGate:
    """Global bounds on inbound link handshakes, whatever address they come from.

    Per-address limits (Tor's DoS subsystem) do not stop a flood from many addresses: one IPv6
    /64 is 2^64 of them.  So a relay also bounds, over all peers, the rate of connections that
    may reach the handshake (each costs two X25519 operations and an Ed25519 signature once its
    first message arrives) and how many handshakes are in progress.  At that count the *oldest*
    pending handshake is dropped for a new one (a SYN queue's policy): an honest initiator sends
    its first message at once and finishes within a round trip, while an idle or slow connection
    ages out; refusing the newest instead would let a few thousand idle connections lock every
    honest peer out for a whole handshake timeout.  Links are any hashable (sans-I/O).
    """

    def __init__(self, rate: float, burst: float, max_pending: int) -> None:
        self._rate = TokenBuckets(rate, burst, 1)
        self.max_pending = max_pending
        self._pending: dict[object, None] = {}  # insertion order: oldest first

    def admit(self, now: float) -> bool:
        """May one more connection start a handshake now (the global rate)?"""
        return self._rate.allow("*", now)

    def started(self, link: object) -> object | None:
        """`link` is handshaking; returns the oldest pending one it displaces (to be closed), if any."""
        self._pending[link] = None
        if len(self._pending) <= self.max_pending:
            return None
        oldest = next(iter(self._pending))
        del self._pending[oldest]
        return oldest

    def finished(self, link: object) -> None:
        """`link` established or closed: it holds no slot any more."""
        self._pending.pop(link, None)

    def __len__(self) -> int:
        return len(self._pending)
