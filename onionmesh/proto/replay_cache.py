"""A bounded replay cache: has this value been seen within the horizon?

Onion services keep two, as Tor's do: the clients' handshake keys X per introduction point (for
the point's lifetime: a captured INTRODUCE2 replayed at that point is dropped), and the
rendezvous cookies per service (Tor's `replay_cache_rend_cookie`, 5 minutes: without it, many
INTRODUCE2s that differ only in X but name one rendezvous cookie would make the service build a
circuit to the same rendezvous point again and again, a pattern an observer there can count).

Sans-I/O: the caller passes the time.  Memory is bounded by `cap`; when it is full the oldest
entry is forgotten first, so a replay older than `cap` newer values is no longer caught (the
cost of bounded memory, stated rather than hidden).
"""

from __future__ import annotations

import math
from collections import OrderedDict


class ReplayCache:
    """Values seen in the last `horizon` seconds (at most `cap` of them, oldest dropped first)."""

    def __init__(self, cap: int, horizon: float = math.inf) -> None:
        if cap < 1 or horizon <= 0:
            raise ValueError("a replay cache needs room for one value and a positive horizon")
        self.cap, self.horizon = cap, horizon
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, value: bytes, now: float) -> bool:
        """True if `value` was seen within the horizon; else remember it (at `now`) and say False."""
        self._expire(now)
        if value in self._seen:
            return True
        self._seen[value] = now
        while len(self._seen) > self.cap:
            self._seen.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        while self._seen:
            first, when = next(iter(self._seen.items()))
            if now - when < self.horizon:
                return
            del self._seen[first]
