"""A directory source's limits, sans-I/O: so that a flood of clients meets BUSY, never a queue,
and directory service never crowds out relaying (docs/directory-design.md §7.2).

* per circuit: at most `gets_per_window` DIR_GETs per window (an epoch: 16 an hour by default)
  and one SNAPSHOT served per `snapshot_windows` windows (6 h);
* in all: answer bytes from a token bucket of `rate` bytes/s (default: 10 % of the relay's
  bandwidth) holding `burst_seconds` of it.  An answer that does not fit gets BUSY (one cell).

Fed the clock by the caller; keys are opaque (the runtime passes its circuit objects).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

SNAPSHOT = 1  # directory.dir_list.Kind.SNAPSHOT
DIR_SHARE = 0.10
MAX_TRACKED = 65_536


@dataclass
class _Circuit:
    window: int
    gets: int
    snapshot_window: int | None


class DirBudget:
    def __init__(
        self,
        rate: float,
        *,
        window: float = 3600.0,
        gets_per_window: int = 16,
        snapshot_windows: int = 6,
        burst_seconds: float = 60.0,
        now: float = 0.0,
    ) -> None:
        if rate <= 0 or window <= 0:
            raise ValueError("rate and window must be positive")
        self.rate = rate
        self.capacity = rate * burst_seconds
        self.window = window
        self.gets_per_window = gets_per_window
        self.snapshot_windows = snapshot_windows
        self._tokens = self.capacity
        self._at = now
        self._circuits: OrderedDict[Hashable, _Circuit] = OrderedDict()
        self.busy = 0
        self.served_bytes = 0

    def request(self, key: Hashable, kind: int, now: float) -> bool:
        """May this circuit ask for a document of `kind` now?  Counts the request when it may."""
        w = int(now // self.window)
        c = self._circuits.pop(key, None) or _Circuit(w, 0, None)
        if c.window != w:
            c.window, c.gets = w, 0
        self._circuits[key] = c
        while len(self._circuits) > MAX_TRACKED:
            self._circuits.popitem(last=False)
        if c.gets >= self.gets_per_window:
            self.busy += 1
            return False
        if (
            kind == SNAPSHOT
            and c.snapshot_window is not None
            and w - c.snapshot_window < self.snapshot_windows
        ):
            self.busy += 1
            return False
        c.gets += 1
        return True

    def served(self, key: Hashable, kind: int, now: float) -> None:
        """A document of `kind` was sent on this circuit: a SNAPSHOT uses the circuit's allowance
        (one asked for before the source had one, answered NOT_FOUND or BUSY, does not)."""
        c = self._circuits.get(key)
        if kind == SNAPSHOT and c is not None:
            c.snapshot_window = int(now // self.window)

    def spend(self, size: int, now: float) -> bool:
        """Take `size` answer bytes from the source's bucket; False (nothing taken) if they do not fit."""
        self._tokens = min(self.capacity, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = max(self._at, now)
        if size > self._tokens:
            self.busy += 1
            return False
        self._tokens -= size
        self.served_bytes += size
        return True

    def forget(self, key: Hashable) -> None:
        self._circuits.pop(key, None)


__all__ = ["DIR_SHARE", "DirBudget"]
