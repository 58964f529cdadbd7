"""proto.replay_cache: replays within the horizon caught, memory bounded, expiry by time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.proto.replay_cache import ReplayCache


def test_a_value_is_new_once_then_a_replay_until_the_horizon_passes() -> None:
    cache = ReplayCache(cap=8, horizon=300.0)
    assert cache.seen(b"cookie", 0.0) is False
    assert cache.seen(b"cookie", 299.0) is True
    assert cache.seen(b"cookie", 300.0) is False  # expired, remembered again from now
    assert cache.seen(b"cookie", 599.0) is True


def test_without_a_horizon_values_are_kept_until_the_cap_pushes_them_out() -> None:
    cache = ReplayCache(cap=3)
    for value in (b"a", b"b", b"c"):
        assert cache.seen(value, 0.0) is False
    assert cache.seen(b"a", 1e9) is True
    assert cache.seen(b"d", 1e9) is False  # the oldest ("a") is forgotten
    assert len(cache) == 3
    assert cache.seen(b"a", 1e9) is False


def test_it_refuses_an_unusable_shape() -> None:
    with pytest.raises(ValueError):
        ReplayCache(cap=0)
    with pytest.raises(ValueError):
        ReplayCache(cap=1, horizon=0)


@given(
    st.lists(st.tuples(st.binary(min_size=1, max_size=4), st.floats(0, 50)), max_size=200),
    st.integers(1, 16),
    st.floats(1, 100),
)
def test_matches_a_model_within_its_cap(events: list[tuple[bytes, float]], cap: int, horizon: float) -> None:
    """Against a dict model: a value is a replay iff seen within the horizon and not pushed out."""
    cache, now, model = ReplayCache(cap, horizon), 0.0, []  # model: (value, when), oldest first
    for value, step in events:
        now += step
        model = [(v, t) for v, t in model if now - t < horizon]
        expected = any(v == value for v, _ in model)
        assert cache.seen(value, now) is expected
        if not expected:
            model = [*model, (value, now)][-cap:]
        assert len(cache) == len(model) <= cap
