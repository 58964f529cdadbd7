"""When the SOCKS proxy may answer success before the exit's CONNECTED (docs/protocol.md §14.6).

An early success saves the application one circuit round trip, but a connect that then fails
reaches it as a connection closed without a byte instead of a SOCKS error.  So it is given only
where failure is unlikely and the exit learns nothing new: for a host:port that this very circuit
connected to (CONNECTED seen) at most MAX_AGE ago, and never after a connect to it failed there.
One `RecentTargets` belongs to one circuit and dies with it, so what it remembers never crosses
circuits (another exit cannot tell from a stream's timing what this client did elsewhere).

Sans-I/O: the caller hands in the time.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_AGE = 600.0  # a circuit takes new streams for 10 minutes (MaxCircuitDirtiness) anyway
MAX_TARGETS = 64  # per circuit; the least recently confirmed is forgotten first


class RecentTargets:
    """host:port a circuit connected to, and when it last saw CONNECTED for one."""

    def __init__(self, max_age: float = MAX_AGE, max_targets: int = MAX_TARGETS) -> None:
        self.max_age = max_age
        self.max_targets = max_targets
        self._seen: OrderedDict[tuple[str, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def succeeded(self, host: str, port: int, now: float) -> None:
        """CONNECTED arrived for a stream to host:port."""
        key = (host.lower(), port)
        self._seen.pop(key, None)
        self._seen[key] = now
        while len(self._seen) > self.max_targets:
            self._seen.popitem(last=False)

    def failed(self, host: str, port: int) -> None:
        """A stream to host:port ended before CONNECTED: the next request waits for the exit."""
        self._seen.pop((host.lower(), port), None)

    def fresh(self, host: str, port: int, now: float) -> bool:
        """True if an early success for host:port is allowed now."""
        key = (host.lower(), port)
        seen = self._seen.get(key)
        if seen is None:
            return False
        if not 0.0 <= now - seen <= self.max_age:
            del self._seen[key]
            return False
        return True
