"""Unit tests for onionmesh.proto.scheduler: circuit queues, EWMA order, caps and the byte budget."""

from __future__ import annotations

from collections import defaultdict, deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.proto.scheduler import (
    CIRCUIT_QUEUE_MAX_CELLS,
    EWMA_HALFLIFE,
    QUANTUM,
    LinkScheduler,
    QueueBudget,
)
from onionmesh.wire.cell import CELL_LEN


def cell(circ: int, n: int) -> bytes:
    return circ.to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(CELL_LEN - 8)


def origin(c: bytes) -> tuple[int, int]:
    return int.from_bytes(c[:4], "big"), int.from_bytes(c[4:8], "big")


def test_link_level_cells_go_first() -> None:
    s = LinkScheduler()
    s.push(7, cell(7, 0), 0.0)
    s.push_control(b"destroy")
    assert s.pop(2, 0.0) == [b"destroy", cell(7, 0)]
    assert len(s) == 0


def test_one_circuit_is_first_in_first_out() -> None:
    s = LinkScheduler()
    for i in range(100):
        s.push(1, cell(1, i), float(i))
    out = s.pop(1000, 100.0)
    assert [origin(c)[1] for c in out] == list(range(100))


def test_an_interactive_circuit_goes_ahead_of_a_bulk_one() -> None:
    """The bulk circuit has sent 2,000 cells; one cell of a quiet circuit leaves after at most one
    quantum of bulk, not behind the 1,000 bulk cells already queued."""
    s = LinkScheduler()
    now = 0.0
    for i in range(3000):
        s.push(1, cell(1, i), now)
    for _ in range(2000 // 64):
        s.pop(64, now)
        now += 0.001
    s.push(2, cell(2, 0), now)
    out = s.pop(64, now)
    position = [origin(c)[0] for c in out].index(2)
    assert position <= QUANTUM


def test_two_bulk_circuits_share_the_link_evenly() -> None:
    s = LinkScheduler()
    for i in range(5000):
        s.push(1, cell(1, i), 0.0)
        s.push(2, cell(2, i), 0.0)
    sent: dict[int, int] = defaultdict(int)
    now = 0.0
    for _ in range(100):
        for c in s.pop(64, now):
            sent[origin(c)[0]] += 1
        now += 0.01
    assert abs(sent[1] - sent[2]) <= 2 * QUANTUM


def test_the_past_fades_with_the_half_life() -> None:
    """A circuit that was busy long ago counts as quiet again: after many half-lives its average
    is negligible next to one cell sent now."""
    s = LinkScheduler()
    for i in range(1000):
        s.push(1, cell(1, i), 0.0)
    s.pop(1000, 0.0)
    later = 20 * EWMA_HALFLIFE
    s.push(2, cell(2, 0), later)
    s.push(2, cell(2, 1), later)
    s.pop(1, later)  # circuit 2 sends one cell now
    s.push(1, cell(1, 1000), later)
    assert origin(s.pop(1, later)[0])[0] == 1  # 1000 cells 20 half-lives ago < 1 cell now


def test_averages_survive_a_rescale() -> None:
    s = LinkScheduler()
    s.push(1, cell(1, 0), 0.0)
    s.pop(1, 0.0)
    far = 100 * EWMA_HALFLIFE  # 2^100: the scheduler renormalises instead of overflowing
    for i in range(10):
        s.push(1, cell(1, i), far)
        s.push(2, cell(2, i), far)
    out = s.pop(20, far)
    assert sorted(origin(c) for c in out) == sorted([(1, i) for i in range(10)] + [(2, i) for i in range(10)])
    assert all(q.ewma < 2**64 for q in s.queues.values())


def test_a_full_circuit_queue_refuses_more() -> None:
    s = LinkScheduler()
    for i in range(CIRCUIT_QUEUE_MAX_CELLS):
        assert s.push(3, cell(3, i), 0.0)
    assert not s.push(3, cell(3, -1 % 2**32), 0.0)
    assert s.push(4, cell(4, 0), 0.0)  # other circuits are unaffected
    assert len(s) == CIRCUIT_QUEUE_MAX_CELLS + 1


def test_budget_counts_every_queued_byte_across_links() -> None:
    budget = QueueBudget(10 * CELL_LEN)
    a, b = LinkScheduler(budget), LinkScheduler(budget)
    for i in range(6):
        a.push(1, cell(1, i), 0.0)
        b.push(1, cell(1, i), 0.0)
    assert budget.used == 12 * CELL_LEN and budget.over()
    a.pop(3, 0.0)
    assert budget.used == 9 * CELL_LEN and not budget.over()
    assert b.drop(1) == 6 * CELL_LEN
    assert budget.used == 3 * CELL_LEN
    assert b.drop(1) == 0


def test_oldest_reports_each_circuit_head() -> None:
    s = LinkScheduler()
    s.push(1, cell(1, 0), 5.0)
    s.push(1, cell(1, 1), 6.0)
    s.push(2, cell(2, 0), 3.0)
    assert sorted(s.oldest()) == [(3.0, 2), (5.0, 1)]
    s.pop(1, 7.0)  # equal averages: the circuit that became active first sends first
    assert sorted(s.oldest()) == [(3.0, 2), (6.0, 1)]
    assert s.queued_bytes(1) == len(cell(1, 0)) and s.queued_bytes(9) == 0


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(st.sampled_from(["push", "pop", "drop", "control"]), st.integers(1, 5), st.integers(1, 80)),
        max_size=400,
    )
)
def test_nothing_is_lost_duplicated_or_reordered(ops: list[tuple[str, int, int]]) -> None:
    budget = QueueBudget(2**40)
    s = LinkScheduler(budget)
    expected: dict[int, deque[bytes]] = defaultdict(deque)
    counters: dict[int, int] = defaultdict(int)
    now = 0.0
    for op, circ, n in ops:
        now += 0.5
        if op == "push":
            for _ in range(n):
                c = cell(circ, counters[circ])
                counters[circ] += 1
                assert s.push(circ, c, now)
                expected[circ].append(c)
        elif op == "pop":
            for c in s.pop(n, now):
                if len(c) != CELL_LEN:
                    continue  # a control cell
                circ_of = origin(c)[0]
                assert expected[circ_of].popleft() == c  # per-circuit order kept, nothing invented
        elif op == "drop":
            s.drop(circ)
            expected[circ].clear()
        else:
            s.push_control(b"ctl")
        queued = sum(len(q) for q in expected.values())
        assert budget.used == queued * CELL_LEN
        assert len(s) - len(s.control) == queued


@pytest.mark.parametrize("max_cells", [1, 3, 64])
def test_pop_never_exceeds_its_limit(max_cells: int) -> None:
    s = LinkScheduler()
    for circ in range(1, 4):
        for i in range(50):
            s.push(circ, cell(circ, i), 0.0)
    while len(s):
        assert 1 <= len(s.pop(max_cells, 1.0)) <= max_cells
