"""The token buckets, driven by a given clock: over any stretch of time they grant at most the
burst plus the rate times that time (the DHT's per-source request limits, a relay's bandwidth)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from onionmesh.runtime.ratelimit import ByteBucket, TokenBuckets

steps = st.lists(st.tuples(st.floats(0, 2, allow_nan=False), st.integers(1, 5000)), max_size=200)


@given(steps)
def test_token_buckets_allow_at_most_burst_plus_rate_x_time(calls: list[tuple[float, int]]) -> None:
    buckets = TokenBuckets(rate=200.0, burst=400.0, max_sources=8)
    now, allowed = 1000.0, 0
    for dt, _ in calls:
        now += dt
        allowed += buckets.allow("flooder", now)
    assert allowed <= 400 + 200 * (now - 1000.0) + 1e-6


def test_token_buckets_limit_each_source_on_its_own() -> None:
    buckets = TokenBuckets(rate=10.0, burst=5.0, max_sources=8)
    assert [buckets.allow("a", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert buckets.allow("b", 0.0), "another source still has its whole burst"
    assert buckets.allow("a", 0.1), "a tenth of a second at 10/s gives one back"


@given(steps)
def test_byte_bucket_grants_at_most_burst_plus_rate_x_time(calls: list[tuple[float, int]]) -> None:
    bucket = ByteBucket(rate=1_000_000, burst=1_000_000, now=0.0)
    now, granted = 0.0, 0
    for dt, want in calls:
        now += dt
        got = bucket.take(want, now)
        assert 0 <= got <= want
        granted += got
    assert granted <= 1_000_000 + 1_000_000 * now + 1


def test_byte_bucket_says_how_long_to_wait() -> None:
    bucket = ByteBucket(rate=1000, burst=2000, now=0.0)
    assert bucket.take(5000, 0.0) == 2000  # the burst, not more
    assert bucket.take(1, 0.0) == 0
    assert bucket.wait_for(500, 0.0) == 0.5
    assert bucket.take(5000, 0.5) == 500


@given(st.lists(st.tuples(st.floats(0, 0.1), st.integers(0, 100_000), st.floats(0, 1)), max_size=50))
def test_byte_bucket_counts_what_its_takers_used_and_gives_back_the_rest(
    calls: list[tuple[float, int, float]],
) -> None:
    """`carried` is the sum of what takers used of their grants; what they did not use is back in
    the bucket (the same grant again), so the counters tell an operator what passed under the rate."""
    bucket = ByteBucket(rate=100_000, burst=100_000, now=0.0)
    now, used_total = 0.0, 0
    for dt, want, share in calls:
        now += dt
        got = bucket.take(want, now)
        used = int(got * share)
        before = bucket.tokens
        bucket.settle(got, used)
        assert bucket.tokens == before + (got - used)
        used_total += used
    assert bucket.carried == used_total


def test_byte_bucket_counts_the_waits_it_imposes() -> None:
    bucket = ByteBucket(rate=1000, burst=2000, now=0.0)
    assert bucket.wait_for(500, 0.0) == 0 and bucket.waits == 0  # tokens there: no wait
    bucket.take(2000, 0.0)
    assert bucket.wait_for(500, 0.0) == 0.5 and bucket.waits == 1
    assert bucket.wait_for(500, 0.5) == 0 and bucket.waits == 1
