"""Entry guards after Tor's guard-spec, simplified: a persistent sample, primary guards, retries.

This module owns the guard sample (which relays we have ever chosen as guards, when, whether a
circuit through them ever worked, and whether they are failing), the choice of the primary
guards (the first N_PRIMARY_GUARDS usable sampled guards, in sample order), bandwidth-weighted
sampling of new guards when fewer than N_PRIMARY_GUARDS are usable, the primary-guard retry
schedule, expiry, removal of guards long absent from the directory, and the JSON state file
text (bounded; junk reads as an empty state and never raises).

A guard is replaced only when unusable: absent from the directory, expired, or failing and not
yet due for a retry.  When it becomes usable again it takes its place back, because primaries
are always the first usable guards in sample order; the sample only grows (to SAMPLE_SIZE) by
sampling, so a restart (same state, same relay list) yields the same primary guards.

Simplifications of guard-spec: no separate confirmed-guard ordering (`confirmed_at` is kept for
the record), no filtered sample or NUM_USABLE_PRIMARY_GUARDS, one retry schedule for all.

Not in this module: choosing the rest of the path (path_selection.py: pass `primary()` as
`PathRequest.guards`), connecting to guards or timing their failures (runtime), file I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import bandwidth_weight, weighted_index
from onionmesh.rng import DEFAULT_RNG, Rng

DAY = 86_400.0
N_PRIMARY_GUARDS = 3
GUARD_LIFETIME = 120 * DAY
SAMPLE_SIZE = 20  # the most guards ever kept in the sample
REMOVE_UNLISTED_GUARDS_AFTER = 20 * DAY
RETRY_EARLY_PERIOD = 6 * 3600.0  # for the first 6 h of a failure streak ...
RETRY_EARLY_INTERVAL = 10 * 60.0  # ... retry every 10 min,
RETRY_LATE_INTERVAL = 90 * 60.0  # then every 90 min.
STATE_VERSION = 1
MAX_STATE_CHARS = 64 * 1024
_MAX_TIME = 1e12  # seconds since the epoch; anything beyond is junk
_HEX = frozenset("0123456789ABCDEF")


@dataclass(frozen=True)
class SampledGuard:
    """One sampled guard.  `added_at` is randomised up to GUARD_LIFETIME/10 into the past (as in
    Tor) so that guards sampled together do not all expire together."""

    fingerprint: str
    added_at: float
    confirmed_at: float | None = None
    last_failure: float | None = None
    failing_since: float | None = None
    unlisted_since: float | None = None

    @property
    def expires_at(self) -> float:
        return self.added_at + GUARD_LIFETIME

    def retry_at(self) -> float | None:
        """When a failing guard may be tried again (None: not failing)."""
        if self.last_failure is None or self.failing_since is None:
            return None
        return self.last_failure + retry_interval(self.last_failure - self.failing_since)


def retry_interval(failing_for: float) -> float:
    """How long to wait after a failure, given how long the guard has been failing."""
    return RETRY_EARLY_INTERVAL if failing_for < RETRY_EARLY_PERIOD else RETRY_LATE_INTERVAL


class GuardSet:
    """The client's guard state.  Mutated by primary(), mark_*() and remove_unlisted()."""

    def __init__(self, guards: Sequence[SampledGuard] = (), rng: Rng | None = None) -> None:
        self._guards: list[SampledGuard] = list(guards)[:SAMPLE_SIZE]
        self._rng = rng if rng is not None else DEFAULT_RNG

    @property
    def sampled(self) -> tuple[SampledGuard, ...]:
        return tuple(self._guards)

    def get(self, fp: str) -> SampledGuard | None:
        return next((g for g in self._guards if g.fingerprint == fp.upper()), None)

    def _update(self, fp: str, **changes: float | None) -> None:
        fp = fp.upper()
        self._guards = [replace(g, **changes) if g.fingerprint == fp else g for g in self._guards]

    # --- the primary guards --------------------------------------------------------------------
    @staticmethod
    def _usable(guard: SampledGuard, now: float, listed: set[str]) -> bool:
        retry = guard.retry_at()
        return guard.fingerprint in listed and now < guard.expires_at and (retry is None or now >= retry)

    def primary(
        self, now: float, relays: Sequence[RelayDescriptor], weights: Mapping[str, int] | None = None
    ) -> list[str]:
        """The first N_PRIMARY_GUARDS usable guards, sampling new ones (bandwidth-weighted, by the
        measured weights in kB/s when given: `path_selection.bandwidth_weight`) while fewer are
        usable and the sample has room.  Expired guards leave the sample here."""
        by_fp = {d.fingerprint: d for d in relays}
        listed = set(by_fp)
        self._guards = [g for g in self._guards if now < g.expires_at]
        usable = [g.fingerprint for g in self._guards if self._usable(g, now, listed)]
        sampled = {g.fingerprint for g in self._guards}
        fresh = [d for fp, d in by_fp.items() if fp not in sampled]
        while len(usable) < N_PRIMARY_GUARDS and len(self._guards) < SAMPLE_SIZE and fresh:
            known = weights or {}
            pick = fresh.pop(
                weighted_index(self._rng, [bandwidth_weight(d, known.get(d.fingerprint, 0)) for d in fresh])
            )
            backdate = self._rng.randbelow(int(GUARD_LIFETIME // 10) + 1)
            self._guards.append(SampledGuard(pick.fingerprint, added_at=now - backdate))
            usable.append(pick.fingerprint)
        return usable[:N_PRIMARY_GUARDS]

    # --- reachability --------------------------------------------------------------------------
    def mark_success(self, fp: str, now: float) -> None:
        """A circuit through this guard was built: confirm it and end any failure streak."""
        guard = self.get(fp)
        if guard is not None:
            confirmed = guard.confirmed_at if guard.confirmed_at is not None else now
            self._update(fp, confirmed_at=confirmed, last_failure=None, failing_since=None)

    def mark_failure(self, fp: str, now: float) -> None:
        """We could not connect through this guard: back off per the retry schedule."""
        guard = self.get(fp)
        if guard is not None:
            since = guard.failing_since if guard.failing_since is not None else now
            self._update(fp, last_failure=now, failing_since=since)

    def remove_unlisted(self, relays: Sequence[RelayDescriptor], now: float) -> list[str]:
        """Note which guards are missing from the directory; drop those missing for 20 days."""
        listed = {d.fingerprint for d in relays}
        kept, removed = [], []
        for g in self._guards:
            if g.fingerprint in listed:
                g = replace(g, unlisted_since=None)
            elif g.unlisted_since is None:
                g = replace(g, unlisted_since=now)
            elif now - g.unlisted_since >= REMOVE_UNLISTED_GUARDS_AFTER:
                removed.append(g.fingerprint)
                continue
            kept.append(g)
        self._guards = kept
        return removed

    # --- state file ----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "guards": [asdict(g) for g in self._guards]}, indent=1)

    @classmethod
    def from_json(cls, text: object, rng: Rng | None = None) -> GuardSet:
        """Read a state written by to_json.  Junk gives an empty state; bad entries are skipped."""
        guards: list[SampledGuard] = []
        try:
            if isinstance(text, str) and len(text) <= MAX_STATE_CHARS:
                data = json.loads(text)
                if isinstance(data, dict) and data.get("version") == STATE_VERSION:
                    entries = data.get("guards")
                    for entry in entries if isinstance(entries, list) else []:
                        guard = _parse_guard(entry)
                        if guard is not None and all(g.fingerprint != guard.fingerprint for g in guards):
                            guards.append(guard)
        except (ValueError, RecursionError):  # JSONDecodeError, over-long integers, deep nesting
            guards = []
        return cls(guards, rng)


def _time(value: object, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if type(value) not in (int, float):
        raise ValueError("not a time")
    assert isinstance(value, int | float)
    if not -_MAX_TIME <= value <= _MAX_TIME:  # NaN fails too; no float() of a huge int
        raise ValueError("time out of range")
    return float(value)


def _parse_guard(entry: object) -> SampledGuard | None:
    if not isinstance(entry, dict):
        return None
    fp = entry.get("fingerprint")
    if not (isinstance(fp, str) and len(fp) == 40 and set(fp) <= _HEX):
        return None
    try:
        added_at = _time(entry.get("added_at"), optional=False)
        confirmed_at, last_failure, failing_since, unlisted_since = (
            _time(entry.get(key))
            for key in ("confirmed_at", "last_failure", "failing_since", "unlisted_since")
        )
    except ValueError:
        return None
    assert added_at is not None
    if last_failure is None or failing_since is None:
        last_failure = failing_since = None
    else:
        failing_since = min(failing_since, last_failure)
    return SampledGuard(fp, added_at, confirmed_at, last_failure, failing_since, unlisted_since)
