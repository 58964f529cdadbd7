"""proto.rtt: RFC 6298's estimator, fed simulated RTT samples and timeouts (no clock at all)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.proto.rtt import RttEstimator, RttTable, scaled_timeout


def test_first_sample_and_rfc6298_update() -> None:
    est = RttEstimator(initial=1.0, floor=0.01, ceiling=60.0)
    assert est.rto() == 1.0  # no sample yet
    est.sample(0.6)
    assert est.srtt == 0.6 and est.rttvar == 0.3 and est.rto() == pytest.approx(0.6 + 4 * 0.3)
    est.sample(0.6)
    assert est.rttvar == pytest.approx(0.75 * 0.3) and est.srtt == pytest.approx(0.6)


def test_converges_to_a_steady_path_and_keeps_its_floor() -> None:
    est = RttEstimator(initial=1.0, floor=0.5, ceiling=5.0)
    for _ in range(200):
        est.sample(0.6)
    assert est.rto() == pytest.approx(0.6 + 0.010, abs=1e-3)  # RTTVAR decays to G
    fast = RttEstimator(initial=1.0, floor=0.5, ceiling=5.0)
    for _ in range(50):
        fast.sample(0.001)
    assert fast.rto() == 0.5


def test_timeouts_back_off_until_a_sample() -> None:
    est = RttEstimator(initial=1.0, floor=0.2, ceiling=5.0)
    est.sample(0.5)
    base = est.rto()
    est.timed_out()
    assert est.rto() == 2 * base
    for _ in range(20):
        est.timed_out()
    assert est.rto() == 5.0
    est.sample(0.5)
    assert est.rto() < 2 * base


def test_table_unknown_peers_get_the_population_rto_and_one_dead_peer_does_not_slow_others() -> None:
    table = RttTable(max_peers=2, initial=1.0, floor=0.2, ceiling=30.0)
    table.sample("a", 0.6)
    assert table.rto("new") == table.all.rto() == table.rto("a")
    for _ in range(3):
        table.timed_out("dead")
    assert table.rto("dead") == pytest.approx(8 * table.all.rto())
    assert table.rto("a") == table.all.rto()
    table.sample("b", 0.6)
    assert len(table) == 2 and table.get("a") is None  # least recently used evicted


@given(
    st.lists(
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
        max_size=60,
    )
)
def test_rto_always_within_floor_and_ceiling(events: list[float | None]) -> None:
    est = RttEstimator(initial=1.0, floor=0.3, ceiling=7.0)
    for e in events:
        if e is None:
            est.timed_out()
        else:
            est.sample(e)
        assert 0.3 <= est.rto() <= 7.0
        assert est.deadline(10, floor=2.0, ceiling=50.0) <= 50.0


def test_bad_parameters() -> None:
    for kw in ({"floor": 0.0}, {"floor": 2.0, "initial": 1.0}, {"ceiling": float("inf")}):
        with pytest.raises(ValueError):
            RttEstimator(**kw)  # type: ignore[arg-type]


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 100), st.floats(0, 30))
def test_scaled_timeout_is_clamped_unknown_rtt_gives_floor(rtt: float, rounds: float, base: float) -> None:
    t = scaled_timeout(rtt, rounds=rounds, base=base, floor=2.0, ceiling=60.0)
    assert 2.0 <= t <= 60.0
    if not (rtt > 0 and rtt < float("inf")):
        assert t == 2.0
