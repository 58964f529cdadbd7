"""The onion service's suggested PoW effort (proto.hs_pow_effort) on a simulated clock: Tor's
AIMD update (prop 327, hs_service.c update_suggested_effort) and its 15 % re-upload rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from onionmesh.crypto.hs_pow import IntroQueue
from onionmesh.proto.hs_pow_effort import MAX_EFFORT, UPDATE_PERIOD, EffortController


def test_nothing_moves_before_the_period_ends() -> None:
    ctl = EffortController(now=1000.0)
    ctl.trimmed(50)
    assert not ctl.update(1000.0 + UPDATE_PERIOD - 1, queue_len=0)
    assert ctl.suggested == 0 and ctl.updates == []


def test_trimmed_requests_raise_the_effort_to_the_average_handled() -> None:
    ctl = EffortController(now=0.0)
    for effort in (10, 20, 30):
        ctl.handled(effort, backlog=5)
    ctl.trimmed(7)  # more than the suggested 0
    assert ctl.update(UPDATE_PERIOD, queue_len=5, head_effort=30)
    assert ctl.suggested == 20 and ctl.updates == [("increase", 20)]  # max(0 + 1, 60 // 3)
    assert ctl.next_update == 2 * UPDATE_PERIOD


def test_a_backlog_with_a_worthwhile_head_raises_by_at_least_one() -> None:
    ctl = EffortController(now=0.0, initial=40)
    ctl.handled(40, backlog=3)  # average 40: not above the suggested effort
    assert ctl.update(UPDATE_PERIOD, queue_len=3, head_effort=40)
    assert ctl.suggested == 41
    # a backlog whose head pays less than suggested: no change (flood of cheap requests)
    ctl.handled(0, backlog=3)
    assert not ctl.update(2 * UPDATE_PERIOD, queue_len=3, head_effort=0)
    assert ctl.suggested == 41 and ctl.updates[-1] == ("none", 41)


def test_an_idle_service_decays_to_zero_by_two_thirds() -> None:
    ctl = EffortController(now=0.0, initial=100)
    seen = []
    for i in range(1, 14):
        ctl.update(i * UPDATE_PERIOD, queue_len=0)
        seen.append(ctl.suggested)
    assert seen == [66, 44, 29, 19, 12, 8, 5, 3, 2, 1, 0, 0, 0]


def test_a_long_queue_without_backlog_holds_the_effort() -> None:
    ctl = EffortController(now=0.0, queue_capacity=256, initial=9)  # low level: 64
    assert not ctl.update(UPDATE_PERIOD, queue_len=64)
    assert ctl.suggested == 9 and ctl.updates == [("none", 9)]


def test_descriptor_re_uploaded_only_on_a_change_above_15_percent() -> None:
    ctl = EffortController(now=0.0, initial=100)
    assert ctl.publish() == 100
    ctl.handled(110, backlog=1)
    ctl.update(UPDATE_PERIOD, queue_len=1, head_effort=110)
    assert ctl.suggested == 110 and not ctl.republish_due()  # +10 %
    ctl.handled(200, backlog=1)
    ctl.update(2 * UPDATE_PERIOD, queue_len=1, head_effort=200)
    assert ctl.suggested == 200 and ctl.republish_due()
    assert ctl.publish() == 200 and not ctl.republish_due()
    zero = EffortController(now=0.0)
    zero.publish()
    zero.trimmed(1)
    zero.update(UPDATE_PERIOD, queue_len=0)
    assert zero.suggested == 1 and zero.republish_due()  # from 0, any rise


def test_a_flood_then_quiet_on_the_service_queue() -> None:
    """The queue and the controller together: a flood of effort-0 requests fills the queue; the
    effort rises once (cheap requests trimmed above the suggested 0 are none, but the backlog's
    head was worth serving), then holds while honest clients paying it are served first (a cheap
    head is not worth raising for, as Tor's), and decays once the flood stops."""
    ctl = EffortController(now=0.0, queue_capacity=16, period=10.0)
    queue: IntroQueue[str] = IntroQueue(16, ctl.trimmed)
    now, honest_served = 0.0, 0
    for _period in range(3):  # flood: 40 cheap and 2 honest arrivals, 4 served per period
        for _ in range(40):
            queue.push("attacker", 0)
        for _ in range(2):
            queue.push("honest", ctl.suggested)
        for _ in range(4):
            item, effort = queue.pop()
            honest_served += item == "honest"
            ctl.handled(effort, len(queue))
        now += 10.0
        ctl.update(now, len(queue), queue.head_effort())
    assert ctl.updates == [("increase", 1), ("none", 1), ("none", 1)]
    assert honest_served == 4  # all but the first period's (effort 0 then: dropped as the newest)
    assert queue.dropped == 26 + 38 + 38  # 42 arrivals for 16 places, then for 4 (2 by eviction)
    while len(queue):  # the flood stops: the queue drains
        _item, effort = queue.pop()
        ctl.handled(effort, 0)
    for _ in range(2):
        now += 10.0
        ctl.update(now, 0)
    assert ctl.updates[-2:] == [("decrease", 0), ("decrease", 0)]


def test_trimming_requests_that_paid_raises_the_effort_each_period() -> None:
    """Honest clients paying the suggested effort are themselves trimmed (a flood that pays as
    much): the effort climbs period after period, each time at least by one."""
    ctl = EffortController(now=0.0, queue_capacity=16, period=10.0)
    queue: IntroQueue[str] = IntroQueue(16, ctl.trimmed)
    efforts = []
    for period in range(1, 5):
        for _ in range(40):
            queue.push("flood", ctl.suggested + 1)
        for _ in range(4):
            _item, effort = queue.pop()
            ctl.handled(effort, len(queue))
        ctl.update(period * 10.0, len(queue), queue.head_effort())
        efforts.append(ctl.suggested)
    assert all(e == "increase" for e, _ in ctl.updates)
    assert efforts == sorted(set(efforts)) and efforts[0] >= 1


@given(
    st.integers(0, MAX_EFFORT),
    st.lists(st.tuples(st.integers(0, MAX_EFFORT), st.integers(0, 300)), max_size=30),
    st.lists(st.integers(0, MAX_EFFORT), max_size=5),
    st.integers(0, 300),
)
def test_effort_stays_a_u32_and_moves_only_as_tor_does(
    initial: int, handled: list[tuple[int, int]], trimmed: list[int], queue_len: int
) -> None:
    ctl = EffortController(now=0.0, initial=initial)
    for effort, backlog in handled:
        ctl.handled(effort, backlog)
    for effort in trimmed:
        ctl.trimmed(effort)
    ctl.update(UPDATE_PERIOD, queue_len, head_effort=initial if queue_len else None)
    assert 0 <= ctl.suggested <= MAX_EFFORT
    event = ctl.updates[-1][0]
    if event == "increase":
        assert ctl.suggested > initial or initial == MAX_EFFORT
    elif event == "decrease":
        assert ctl.suggested == 2 * initial // 3
    else:
        assert ctl.suggested == initial
