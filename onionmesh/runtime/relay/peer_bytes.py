"""Per-peer relay-cell byte counts, by UTC day, and the signed daily measurement report.

Why: measured weights (directory.measurement, docs/directory-design.md §6) come from what relays
saw each other carry.  The switch counts every RELAY/RELAY_EARLY cell it receives from, or sends
to, a peer whose identity the link proved; only links this relay opened prove the peer's
identity (the link handshake authenticates the responder only), so a relay reports the peers it
extended circuits to, and is measured by the relays that extended circuits to it.  DHT and
directory traffic is not counted: it is not relay cells on a circuit hop.

Bounded: at most MAX_PEERS_TRACKED peers a day (a relay has far fewer links); the days before
yesterday are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from onionmesh.crypto.keys import IdentityKey, fingerprint
from onionmesh.directory.measurement import Report, sign_report

DAY = 86_400
MAX_PEERS_TRACKED = 8192


class PeerBytes:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._days: dict[int, dict[bytes, int]] = {}
        self.untracked = 0  # bytes of peers beyond MAX_PEERS_TRACKED
        self._fps: dict[bytes, bytes] = {}  # identity key -> fingerprint (20 bytes), bounded like the days

    def add(self, identity_pk: bytes, nbytes: int) -> None:
        day = int(self.clock() // DAY)
        counts = self._days.get(day)
        if counts is None:
            for old in [d for d in self._days if d < day - 1]:
                del self._days[old]
            if len(self._fps) > 2 * MAX_PEERS_TRACKED:
                self._fps.clear()
            counts = self._days[day] = {}
        fp = self._fps.get(identity_pk)
        if fp is None:
            fp = self._fps[identity_pk] = bytes.fromhex(fingerprint(identity_pk))
        if fp not in counts and len(counts) >= MAX_PEERS_TRACKED:
            self.untracked += nbytes
            return
        counts[fp] = counts.get(fp, 0) + nbytes

    def day_counts(self, day: int) -> dict[bytes, int]:
        return dict(self._days.get(day, {}))

    def report(self, identity: IdentityKey) -> Report:
        """Yesterday's (the last complete UTC day's) signed report: what gossip carries (§3.4)."""
        yesterday = int(self.clock() // DAY) - 1
        return sign_report(identity, yesterday, self._days.get(yesterday, {}))
