"""When an onion service builds and uploads its descriptors (sans-I/O: fed the time, returns work).

* **Which periods.** Always the current one; in the last `NEXT_LEAD` seconds of a period also the
  next one, and in the first `PREV_TAIL` seconds of a period also the previous one, so that a
  client whose clock is ahead (it already computes the next period's keys) or behind (it still
  computes the last one's) finds a current record (rend-spec-v3 §2.2.2 publishes current and
  next; storing nodes accept periods within one of theirs, and keep a record until its period's
  end plus `hs_placement.PERIOD_SLACK`).
* **Revision counter.** Derived from time, so it keeps increasing across restarts without a file
  (Tor's OPE-free variant, as Arti: seconds since a fixed point before the period):
  `revision = now - period_start(period - 1)`, and at least one more than the last this process
  used for the period (two uploads in one second).  It reveals no more than the record's
  `valid_after`, which storing nodes see anyway.  A service whose clock jumps back by more than
  the time since its last upload has its new record refused as OLDER until the clock catches up.
* **When.** A period's descriptor is uploaded as soon as the period enters the set, then again
  after a random interval in [`REUPLOAD_MIN`, `REUPLOAD_MAX`] (Tor's 60-120 minutes, so uploads
  of many services do not line up), and at once when the set of introduction points changes.
  An upload that no replica accepted is retried after `RETRY_MIN` seconds, doubling to
  `RETRY_MAX`.
"""

from __future__ import annotations

from dataclasses import dataclass

from onionmesh.crypto.hs_blinding import PERIOD_LENGTH_MIN, period_num, period_start
from onionmesh.directory.hs_descriptor import MAX_LIFETIME_MIN
from onionmesh.rng import Rng

NEXT_LEAD = 3 * 3600  # the last hours of a period: also the next period's descriptor
PREV_TAIL = 3600  # the first hour of a period: also the previous period's (hs_placement.PERIOD_SLACK)
REUPLOAD_MIN = 60 * 60
REUPLOAD_MAX = 120 * 60
RETRY_MIN = 30.0
RETRY_MAX = 15 * 60.0
LIFETIME_MIN = MAX_LIFETIME_MIN  # 180 minutes, Tor's descriptor-lifetime


@dataclass(frozen=True)
class Upload:
    """One descriptor to build (`hs_descriptor.build_record` with these fields) and upload."""

    period: int
    revision: int
    valid_after: int
    lifetime_min: int = LIFETIME_MIN


@dataclass
class _PeriodState:
    next_at: float = 0.0  # due at once
    last_revision: int = -1
    failures: int = 0


def periods_to_publish(now: float, length_min: int = PERIOD_LENGTH_MIN) -> tuple[int, ...]:
    """The periods whose descriptors should be in the DHT at `now`, oldest first."""
    current = period_num(int(now), length_min)
    out = []
    if now < period_start(current, length_min) + PREV_TAIL:
        out.append(current - 1)
    out.append(current)
    if now >= period_start(current + 1, length_min) - NEXT_LEAD:
        out.append(current + 1)
    return tuple(out)


def revision_for(period: int, now: float, length_min: int = PERIOD_LENGTH_MIN) -> int:
    """The time-derived revision counter: seconds since the start of the period before `period`."""
    return max(0, int(now) - period_start(period - 1, length_min))


class PublishSchedule:
    def __init__(self, rng: Rng, length_min: int = PERIOD_LENGTH_MIN) -> None:
        self.rng = rng
        self.length_min = length_min
        self._periods: dict[int, _PeriodState] = {}

    def _sync(self, now: float) -> list[int]:
        wanted = periods_to_publish(now, self.length_min)
        for period in list(self._periods):
            if period not in wanted:
                del self._periods[period]
        for period in wanted:
            self._periods.setdefault(period, _PeriodState())
        return list(wanted)

    def due(self, now: float) -> list[Upload]:
        """What to build and upload now (each with a fresh revision); call `uploaded` for each."""
        out = []
        for period in self._sync(now):
            state = self._periods[period]
            if now >= state.next_at:
                revision = max(revision_for(period, now, self.length_min), state.last_revision + 1)
                state.last_revision = revision
                out.append(Upload(period, revision, int(now)))
        return out

    def uploaded(self, upload: Upload, now: float, accepted: bool) -> None:
        """The outcome of an upload: `accepted` if at least one replica stored it."""
        state = self._periods.get(upload.period)
        if state is None:
            return
        if accepted:
            state.failures = 0
            state.next_at = now + REUPLOAD_MIN + self.rng.randbelow(REUPLOAD_MAX - REUPLOAD_MIN + 1)
        else:
            state.failures += 1
            state.next_at = now + min(RETRY_MAX, RETRY_MIN * 2 ** (state.failures - 1))

    def intro_points_changed(self) -> None:
        """Every period's descriptor is due at once (the next `due` rebuilds them)."""
        for state in self._periods.values():
            state.next_at = 0.0

    def next_wakeup(self, now: float) -> float:
        """When `due` next returns something (a period may also enter the set before then)."""
        self._sync(now)
        soonest = min(state.next_at for state in self._periods.values())
        start_next = period_start(period_num(int(now), self.length_min) + 1, self.length_min)
        boundaries = [t for t in (start_next - NEXT_LEAD, start_next, start_next + PREV_TAIL) if t > now]
        return max(now, min([soonest, *boundaries]))
