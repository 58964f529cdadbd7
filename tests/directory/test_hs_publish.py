"""directory.hs_publish: which periods a service publishes, revisions, re-upload timing, with a
simulated clock (no sockets, no sleeping)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from onionmesh.crypto.hs_blinding import period_start
from onionmesh.directory import hs_publish as hp
from onionmesh.directory.hs_publish import PublishSchedule, periods_to_publish, revision_for
from onionmesh.rng import SeededRng

P = 20450
START = period_start(P)
END = period_start(P + 1)


def test_current_period_and_next_before_the_boundary_previous_after_it() -> None:
    assert periods_to_publish(START + 6 * 3600) == (P,)
    assert periods_to_publish(END - hp.NEXT_LEAD - 1) == (P,)
    assert periods_to_publish(END - hp.NEXT_LEAD) == (P, P + 1)
    assert periods_to_publish(END - 1) == (P, P + 1)
    assert periods_to_publish(END) == (P, P + 1)  # the first hour of P+1: P still published
    assert periods_to_publish(END + hp.PREV_TAIL - 1) == (P, P + 1)
    assert periods_to_publish(END + hp.PREV_TAIL) == (P + 1,)


def test_a_day_of_uploads() -> None:
    """Simulated clock over a whole period: every period that should be published is, each
    re-upload 60-120 min after the last, revisions strictly increasing per period."""
    sched = PublishSchedule(SeededRng(1))
    now = float(START + 2 * 3600)
    log: dict[int, list[tuple[float, int]]] = {}
    while now < END + 2 * 3600:
        for up in sched.due(now):
            log.setdefault(up.period, []).append((now, up.revision))
            assert up.valid_after == int(now) and up.lifetime_min == 180
            sched.uploaded(up, now, accepted=True)
        now = sched.next_wakeup(now)
    assert set(log) == {P, P + 1}
    for period, uploads in log.items():
        revisions = [r for _t, r in uploads]
        assert revisions == sorted(set(revisions))
        gaps = [b[0] - a[0] for a, b in pairwise(uploads)]
        assert all(hp.REUPLOAD_MIN <= g <= hp.REUPLOAD_MAX for g in gaps), (period, gaps)
    assert log[P + 1][0][0] == END - hp.NEXT_LEAD  # the next period's first upload: at the lead
    assert max(t for t, _r in log[P]) < END + hp.PREV_TAIL
    assert len({g for a, b in pairwise(log[P]) for g in [b[0] - a[0]]}) > 1  # jitter


def test_intro_point_change_makes_every_period_due_at_once() -> None:
    sched = PublishSchedule(SeededRng(2))
    now = float(END - 3600)
    ups = sched.due(now)
    assert [u.period for u in ups] == [P, P + 1]
    for up in ups:
        sched.uploaded(up, now, accepted=True)
    assert sched.due(now + 60) == []
    sched.intro_points_changed()
    again = sched.due(now + 60)
    assert [u.period for u in again] == [P, P + 1]
    assert all(a.revision > b.revision for a, b in zip(again, ups, strict=True))


def test_failed_upload_retried_with_backoff() -> None:
    sched = PublishSchedule(SeededRng(3))
    now = float(START + 5 * 3600)
    waits = []
    for _ in range(8):
        (up,) = sched.due(now)
        sched.uploaded(up, now, accepted=False)
        nxt = sched.next_wakeup(now)
        waits.append(nxt - now)
        assert sched.due(nxt - 1) == []
        now = nxt
    assert waits == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]


def test_two_uploads_in_one_second_and_a_restart_keep_the_revision_growing() -> None:
    now = float(START + 100)
    first = PublishSchedule(SeededRng(4))
    (_prev, a) = first.due(now)  # first hour of P: P-1 and P
    first.intro_points_changed()
    (_prev2, b) = first.due(now)
    assert b.revision == a.revision + 1
    restarted = PublishSchedule(SeededRng(5))  # no state on disk: the revision comes from time
    later = [u for u in restarted.due(now + 2) if u.period == P]
    assert later[0].revision > b.revision


@given(st.integers(-3, 3), st.integers(0, 2 * 86400), st.integers(1, 86400))
def test_revision_from_time_is_monotonic(period_offset: int, t: int, dt: int) -> None:
    period = P + period_offset
    base = period_start(P - 4)
    assert revision_for(period, base + t) <= revision_for(period, base + t + dt)
    assert revision_for(period, period_start(period - 1) + t + dt) > revision_for(
        period, period_start(period - 1) + t
    )
