"""Round-trip time estimation (RFC 6298's SRTT/RTTVAR/RTO), sans-I/O: fed samples and timeouts.

Why: a timeout fixed for loopback becomes a cliff on a real path (issue 20: a 0.5 s DHT timeout
discarded every answer on 600 ms links, and a testnet never found a relay).  Every timeout that
waits for the network is derived from an estimator instead: `rto()` is SRTT + max(G, K·RTTVAR)
clamped to [floor, ceiling], doubled per consecutive timeout (RFC 6298 §5.5, also capped at the
ceiling) and reset by the next sample.  `deadline(rounds)` scales it for an exchange of several
round trips (a circuit build, a crawl).

Before any sample, `rto()` is `initial` (RFC 6298 says 1 s).  Samples from a retransmitted
request are the caller's to drop (Karn's rule); callers that retry with a fresh ID need not.
`RttTable` keeps one estimator per peer (bounded, least recently used evicted) and one for the
whole path population, whose RTO is what an unknown peer gets.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

ALPHA = 1 / 8  # RFC 6298's gains
BETA = 1 / 4
K = 4
GRANULARITY = 0.010  # G: the clock's granularity in seconds
MAX_BACKOFF_DOUBLINGS = 6


class RttEstimator:
    """SRTT, RTTVAR and the retransmission timeout of one path (or of all paths)."""

    def __init__(self, *, initial: float = 1.0, floor: float = 0.2, ceiling: float = 60.0) -> None:
        if not (0 < floor <= ceiling and math.isfinite(ceiling) and floor <= initial <= ceiling):
            raise ValueError("need 0 < floor <= initial <= ceiling < inf")
        self.initial, self.floor, self.ceiling = initial, floor, ceiling
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0
        self.backoff = 0  # consecutive timeouts since the last sample

    def sample(self, rtt: float) -> None:
        """A request answered after `rtt` seconds (negative or non-finite samples are ignored)."""
        if not (math.isfinite(rtt) and rtt >= 0):
            return
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self.samples += 1
        self.backoff = 0

    def timed_out(self) -> None:
        """A request went unanswered for `rto()`: back off (exponentially, bounded)."""
        self.backoff = min(self.backoff + 1, MAX_BACKOFF_DOUBLINGS)

    def base_rto(self) -> float:
        """The RTO without backoff, clamped to [floor, ceiling]."""
        if self.srtt is None:
            return self.initial
        return min(max(self.srtt + max(GRANULARITY, K * self.rttvar), self.floor), self.ceiling)

    def rto(self) -> float:
        """How long to wait for an answer before counting the request lost."""
        return min(self.base_rto() * 2**self.backoff, self.ceiling)

    def deadline(self, rounds: float, *, floor: float = 0.0, ceiling: float = math.inf) -> float:
        """A deadline for an exchange of `rounds` sequential round trips: rounds × RTO, clamped."""
        return min(max(rounds * self.rto(), floor), ceiling)


class RttTable:
    """One estimator per peer (at most `max_peers`, least recently used evicted) and one for all:
    an unknown peer gets the population's RTO, never less than its own floor."""

    def __init__(
        self, *, max_peers: int = 4096, initial: float = 1.0, floor: float = 0.2, ceiling: float = 60.0
    ):
        if max_peers < 1:
            raise ValueError("max_peers must be >= 1")
        self.max_peers = max_peers
        self._params = {"initial": initial, "floor": floor, "ceiling": ceiling}
        self.all = RttEstimator(**self._params)
        self._peers: OrderedDict[Hashable, RttEstimator] = OrderedDict()

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, peer: Hashable) -> RttEstimator | None:
        return self._peers.get(peer)

    def _peer(self, peer: Hashable) -> RttEstimator:
        est = self._peers.pop(peer, None)
        if est is None:
            est = RttEstimator(**self._params)
        self._peers[peer] = est
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        return est

    def rto(self, peer: Hashable) -> float:
        est = self._peers.get(peer)
        if est is None or est.samples == 0:
            backoff = est.backoff if est is not None else 0
            return min(self.all.base_rto() * 2**backoff, self.all.ceiling)
        return est.rto()

    def sample(self, peer: Hashable, rtt: float) -> None:
        self._peer(peer).sample(rtt)
        self.all.sample(rtt)

    def timed_out(self, peer: Hashable) -> None:
        """Backs off this peer only: one dead peer must not slow the requests to live ones."""
        self._peer(peer).timed_out()


def scaled_timeout(rtt: float, *, rounds: float, base: float = 0.0, floor: float, ceiling: float) -> float:
    """A timeout for an exchange of `rounds` round trips of `rtt` seconds plus `base` seconds of
    work, clamped to [floor, ceiling]; an unknown `rtt` (0, negative, NaN) gives the floor."""
    if not (math.isfinite(rtt) and rtt > 0):
        return floor
    return min(max(base + rounds * rtt, floor), ceiling)
