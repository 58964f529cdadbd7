"""Tests for onionmesh.directory.guards: sampling, primaries, retries, expiry, state file."""

from __future__ import annotations

import json
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.directory.guards import (
    GUARD_LIFETIME,
    MAX_STATE_CHARS,
    N_PRIMARY_GUARDS,
    REMOVE_UNLISTED_GUARDS_AFTER,
    RETRY_EARLY_INTERVAL,
    RETRY_EARLY_PERIOD,
    RETRY_LATE_INTERVAL,
    SAMPLE_SIZE,
    GuardSet,
    SampledGuard,
    retry_interval,
)
from onionmesh.directory.path_selection import MAX_ADVERTISED_BANDWIDTH
from onionmesh.rng import SeededRng
from tests.helpers.descriptors import relay

NOW = 1_700_000_000.0
HOUR = 3600.0


def relays(n: int = 10, start: int = 0) -> list:
    return [relay(i) for i in range(start, start + n)]


def fresh(seed: int = 1) -> GuardSet:
    return GuardSet(rng=SeededRng(seed))


def test_primary_samples_three_distinct_listed_guards() -> None:
    rs = relays()
    gs = fresh()
    primary = gs.primary(NOW, rs)
    assert len(primary) == N_PRIMARY_GUARDS == len(set(primary))
    assert set(primary) <= {d.fingerprint for d in rs}
    assert [g.fingerprint for g in gs.sampled] == primary
    for g in gs.sampled:  # backdated by at most a tenth of the lifetime, as in Tor
        assert NOW - GUARD_LIFETIME / 10 <= g.added_at <= NOW
        assert g.confirmed_at is None and g.retry_at() is None
    assert gs.primary(NOW + 60, rs) == primary  # stable, no re-sampling
    assert len(gs.sampled) == N_PRIMARY_GUARDS


def test_restart_gives_same_primaries_and_never_resamples() -> None:
    rs = relays(12)
    gs = fresh(7)
    primary = gs.primary(NOW, rs)
    gs.mark_success(primary[0], NOW + 1)
    gs.mark_failure(primary[2], NOW + 2)
    before = gs.primary(NOW + 3, rs)  # the failing guard's stand-in is sampled now, once
    assert before[:2] == primary[:2] and before[2] not in primary
    text = gs.to_json()
    for seed in range(5):  # a different rng after the restart does not matter
        again = GuardSet.from_json(text, rng=SeededRng(100 + seed))
        assert again.sampled == gs.sampled
        assert again.primary(NOW + 4, rs) == before
        assert again.to_json() == text
        assert again.primary(NOW + 2 + RETRY_EARLY_INTERVAL, rs) == primary  # the retry is due
    # New relays joining the directory do not displace anyone.
    assert gs.primary(NOW + 4, rs + relays(20, start=50))[:2] == primary[:2]


def test_sampling_is_bandwidth_weighted() -> None:
    rs = [relay(i, bw=1000) for i in range(9)] + [relay(9, bw=10 * MAX_ADVERTISED_BANDWIDTH)]
    heavy = rs[-1].fingerprint
    counts = Counter(fp for seed in range(100) for fp in fresh(seed).primary(NOW, rs))
    assert counts[heavy] == 100  # weight 10^7 against 9 x 1000: always among the first three


def test_absent_guard_is_skipped_then_takes_its_place_back() -> None:
    rs = relays()
    gs = fresh(3)
    a, b, c = gs.primary(NOW, rs)
    without_b = [d for d in rs if d.fingerprint != b]
    replaced = gs.primary(NOW + 60, without_b)
    assert replaced[:2] == [a, c] and replaced[2] not in (a, b, c)
    d = replaced[2]
    assert gs.primary(NOW + 120, rs) == [a, b, c]  # b is back; d stays sampled, not primary
    assert [g.fingerprint for g in gs.sampled] == [a, b, c, d]
    assert gs.primary(NOW + 180, without_b) == [a, c, d]  # d is reused, nothing new sampled
    assert len(gs.sampled) == 4


def test_failure_backoff_schedule() -> None:
    assert retry_interval(0) == RETRY_EARLY_INTERVAL == 600
    assert retry_interval(RETRY_EARLY_PERIOD - 1) == 600
    assert retry_interval(RETRY_EARLY_PERIOD) == RETRY_LATE_INTERVAL == 5400
    rs = relays()
    gs = fresh(4)
    a, b, c = gs.primary(NOW, rs)
    gs.mark_failure(a, NOW)
    during = gs.primary(NOW + RETRY_EARLY_INTERVAL - 1, rs)
    assert a not in during and during[:2] == [b, c]
    assert gs.primary(NOW + RETRY_EARLY_INTERVAL, rs) == [a, b, c]  # retry due: a is tried again
    # Keep failing every retry: after 6 h the interval becomes 90 min.
    t = NOW
    while t - NOW < RETRY_EARLY_PERIOD:
        t = gs.get(a).retry_at()  # type: ignore[union-attr]
        gs.mark_failure(a, t)
    guard = gs.get(a)
    assert guard is not None and guard.failing_since == NOW
    assert guard.retry_at() == t + RETRY_LATE_INTERVAL
    assert a not in gs.primary(t + RETRY_LATE_INTERVAL - 1, rs)
    assert gs.primary(t + RETRY_LATE_INTERVAL, rs)[0] == a
    gs.mark_success(a, t + RETRY_LATE_INTERVAL)
    guard = gs.get(a)
    assert guard is not None and guard.retry_at() is None and guard.confirmed_at == t + RETRY_LATE_INTERVAL
    gs.mark_success(a, t + 2 * RETRY_LATE_INTERVAL)  # the first confirmation is kept
    assert gs.get(a).confirmed_at == t + RETRY_LATE_INTERVAL  # type: ignore[union-attr]


def test_unknown_fingerprints_are_ignored() -> None:
    gs = fresh()
    gs.mark_failure("AB" * 20, NOW)
    gs.mark_success("AB" * 20, NOW)
    assert gs.sampled == () and gs.get("AB" * 20) is None


def test_expired_guards_are_replaced() -> None:
    rs = relays()
    gs = fresh(5)
    first = gs.primary(NOW, rs)
    oldest = min(gs.sampled, key=lambda g: g.added_at)
    later = gs.primary(oldest.expires_at - 1, rs)
    assert later == first
    after = gs.primary(oldest.expires_at, rs)
    assert oldest.fingerprint not in {g.fingerprint for g in gs.sampled}
    assert len(after) == N_PRIMARY_GUARDS and [fp for fp in first if fp != oldest.fingerprint] == [
        fp for fp in after if fp in first
    ]


def test_remove_unlisted_after_twenty_days() -> None:
    rs = relays()
    gs = fresh(6)
    a, b, c = gs.primary(NOW, rs)
    without_a = [d for d in rs if d.fingerprint != a]
    assert gs.remove_unlisted(without_a, NOW) == []
    assert gs.get(a).unlisted_since == NOW  # type: ignore[union-attr]
    assert gs.remove_unlisted(without_a, NOW + REMOVE_UNLISTED_GUARDS_AFTER - 1) == []
    assert gs.remove_unlisted(rs, NOW + REMOVE_UNLISTED_GUARDS_AFTER - 1) == []  # back: clock resets
    assert gs.get(a).unlisted_since is None  # type: ignore[union-attr]
    t = NOW + 2 * REMOVE_UNLISTED_GUARDS_AFTER
    assert gs.remove_unlisted(without_a, t) == []
    assert gs.remove_unlisted(without_a, t + REMOVE_UNLISTED_GUARDS_AFTER) == [a]
    assert gs.get(a) is None and [g.fingerprint for g in gs.sampled] == [b, c]


def test_sample_size_is_respected() -> None:
    rs = relays(40)
    gs = fresh(8)
    t = NOW
    for _ in range(30):  # every guard keeps failing
        for fp in gs.primary(t, rs):
            gs.mark_failure(fp, t)
        t += 1
    assert len(gs.sampled) == SAMPLE_SIZE
    assert gs.primary(t, rs) == []  # all sampled guards back off; no sampling beyond the cap
    assert len(gs.primary(t + RETRY_EARLY_INTERVAL, rs)) == N_PRIMARY_GUARDS  # retries are due


def test_small_directory() -> None:
    gs = fresh()
    assert gs.primary(NOW, []) == []
    assert sorted(gs.primary(NOW, relays(2))) == sorted(d.fingerprint for d in relays(2))
    two = gs.primary(NOW, relays(5))
    assert len(two) == 3 and len(gs.sampled) == 3


# --------------------------------------------------------------------------- state file
def test_state_file_shape_and_partial_junk() -> None:
    gs = fresh()
    gs.primary(NOW, relays())
    data = json.loads(gs.to_json())
    assert data["version"] == 1 and len(data["guards"]) == 3
    good = data["guards"][0]
    entries = [
        good,
        good,  # duplicate: dropped
        {**good, "fingerprint": "xyz"},
        {**good, "fingerprint": good["fingerprint"].lower()},
        {**good, "fingerprint": "AA" * 20, "added_at": None},
        {**good, "fingerprint": "BB" * 20, "added_at": True},
        {**good, "fingerprint": "CC" * 20, "confirmed_at": "yesterday"},
        {**good, "fingerprint": "DD" * 20, "last_failure": 1e300},
        {**good, "fingerprint": "EE" * 20, "last_failure": NOW},  # failing_since missing: not failing
        {**good, "fingerprint": "FF" * 20, "last_failure": NOW, "failing_since": NOW + 5},
        [1, 2],
        "junk",
    ]
    gs2 = GuardSet.from_json(json.dumps({"version": 1, "guards": entries}))
    assert [g.fingerprint for g in gs2.sampled] == [good["fingerprint"], "EE" * 20, "FF" * 20]
    assert gs2.get("EE" * 20).retry_at() is None  # type: ignore[union-attr]
    assert gs2.get("FF" * 20).failing_since == NOW  # type: ignore[union-attr]
    many = [{**good, "fingerprint": f"{i:040X}"} for i in range(50)]
    assert len(GuardSet.from_json(json.dumps({"version": 1, "guards": many})).sampled) == SAMPLE_SIZE


def test_junk_state_is_empty() -> None:
    for junk in [
        "",
        "null",
        "[]",
        '{"version": 2, "guards": []}',
        '{"version": 1, "guards": {}}',
        '{"version": 1, "guards": [NaN]}',
        "[" * 100_000 + "]" * 100_000,
        '{"version": 1, "guards": ' + "[" * 30_000 + "]" * 30_000 + "}",
        " " * (MAX_STATE_CHARS + 1) + "{}",
        "1" * 10_000,
        b'{"version": 1}',
        None,
    ]:
        assert GuardSet.from_json(junk).sampled == ()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=6),
    max_leaves=30,
)
FIELDS = st.sampled_from(["fingerprint", "added_at", "confirmed_at", "last_failure", "failing_since"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_from_json_never_raises_on_text(text: str) -> None:
    GuardSet.from_json(text).to_json()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(FIELDS | st.text(max_size=5), JSON, max_size=6) | JSON, max_size=8))
def test_from_json_never_raises_on_json_shaped_junk(entries: list) -> None:
    text = json.dumps({"version": 1, "guards": entries})
    gs = GuardSet.from_json(text)
    assert len(gs.sampled) <= SAMPLE_SIZE
    assert GuardSet.from_json(gs.to_json()).sampled == gs.sampled


TIME = st.floats(0, 2e9, allow_nan=False)
GUARD = st.builds(
    SampledGuard,
    fingerprint=st.from_regex(r"[0-9A-F]{40}", fullmatch=True),
    added_at=TIME,
    confirmed_at=st.none() | TIME,
    unlisted_since=st.none() | TIME,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(GUARD, max_size=SAMPLE_SIZE, unique_by=lambda g: g.fingerprint), st.none() | TIME)
def test_state_round_trips(guards: list[SampledGuard], failed_at: float | None) -> None:
    gs = GuardSet(guards)
    if guards and failed_at is not None:
        gs.mark_failure(guards[0].fingerprint, failed_at)
    again = GuardSet.from_json(gs.to_json())
    assert again.sampled == gs.sampled


def test_sampling_uses_measured_weights_when_given() -> None:
    """Stage 4: a relay advertising the cap but measured at 1 kB/s is no longer a near-certain guard."""
    rs = [relay(i, bw=1000) for i in range(9)] + [relay(9, bw=10 * MAX_ADVERTISED_BANDWIDTH)]
    heavy = rs[-1].fingerprint
    measured = {heavy: 1}  # kB/s: as much as each of the others
    counts = Counter(fp for seed in range(100) for fp in fresh(seed).primary(NOW, rs, measured))
    assert counts[heavy] < 60  # a uniform draw of 3 of 10 takes it about 30 times in 100
