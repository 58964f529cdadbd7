"""The onion service's suggested PoW effort, as Tor's (prop 327, hs_service.c update_suggested_effort).

    ctl = EffortController(now)               # suggested effort 0: clients solve nothing
    ctl.trimmed(effort)                       # the intro queue dropped a request of this effort
    ctl.handled(effort, backlog=len(queue))   # a worker took one; `backlog` still waiting
    if ctl.update(now, len(queue), queue.head_effort()) and ctl.republish_due(): upload again
    desc_effort = ctl.publish()               # the effort the next descriptor carries

Every `period` seconds (Tor's HS_UPDATE_PERIOD, 300 s) the effort moves additive-increase,
multiplicative-decrease, exactly on Tor's conditions:

* INCREASE when a request was trimmed from the full queue with more than the suggested effort,
  or when there was a backlog this period and the request now at the head of the queue has at
  least the suggested effort: the new effort is max(effort + 1, total effort handled / requests
  handled) (effort + 1 when nothing was handled);
* DECREASE to 2/3 (integer) when there was no backlog all period and the queue is below its low
  level (Tor's pqueue_low_level: a quarter of the queue, at least 8): an idle service decays
  back to 0, where clients solve nothing;
* otherwise it stays.

Tor re-uploads its descriptors only when the effort moved by more than 15 % from the one they
carry (`republish_due`), so a noisy effort does not flood the HSDirs.  A plain class fed the time:
the runtime (runtime.client.onion_service) calls it; tests drive it with a simulated clock.
"""

from __future__ import annotations

UPDATE_PERIOD = 300.0  # Tor's HS_UPDATE_PERIOD
MAX_EFFORT = 2**32 - 1  # the descriptor's and the PoW extension's u32
REPUBLISH_CHANGE = 0.15  # "SHOULD NOT upload a new descriptor if [it] changes by less than 15 percent"


class EffortController:
    def __init__(
        self, now: float, queue_capacity: int = 256, period: float = UPDATE_PERIOD, initial: int = 0
    ) -> None:
        self.period = period
        self.low_level = max(8, queue_capacity // 4)
        self.suggested = initial
        self.published = initial  # the effort the last descriptor built carries
        self.next_update = now + period
        self.updates: list[tuple[str, int]] = []  # (event, new effort) per update, for stats and tests
        self._reset()

    def _reset(self) -> None:
        self.total_effort = 0
        self.handled_count = 0
        self.max_trimmed = 0
        self.had_queue = False

    def trimmed(self, effort: int) -> None:
        """The full queue dropped a request of `effort` (the lowest one)."""
        self.max_trimmed = max(self.max_trimmed, effort)

    def handled(self, effort: int, backlog: int) -> None:
        """A request of `effort` was taken from the queue; `backlog` requests still wait (all
        workers busy: Tor's had_queue)."""
        self.total_effort += effort
        self.handled_count += 1
        if backlog > 0:
            self.had_queue = True

    def update(self, now: float, queue_len: int, head_effort: int | None = None) -> bool:
        """At the end of a period (`head_effort`: of the request at the head of the queue): the
        new suggested effort; True if it changed."""
        if now < self.next_update:
            return False
        before = self.suggested
        head = head_effort if queue_len > 0 else None
        if self.max_trimmed > self.suggested:
            event = "increase"
        elif self.had_queue:
            event = "increase" if head is not None and head >= self.suggested else "none"
        elif queue_len < self.low_level:
            event = "decrease"
        else:
            event = "none"
        if event == "increase" and self.suggested < MAX_EFFORT:
            average = self.total_effort // self.handled_count if self.handled_count else 0
            self.suggested = min(MAX_EFFORT, max(self.suggested + 1, average))
        elif event == "decrease":
            self.suggested = 2 * self.suggested // 3
        self.updates.append((event, self.suggested))
        self._reset()
        self.next_update = now + self.period
        return self.suggested != before

    def republish_due(self) -> bool:
        """True when the effort differs from the published one by more than 15 %."""
        new, old = self.suggested, self.published
        return new < old * (1 - REPUBLISH_CHANGE) or old * (1 + REPUBLISH_CHANGE) < new

    def publish(self) -> int:
        """The effort for the descriptor being built (remembered as the published one)."""
        self.published = self.suggested
        return self.suggested
