"""View-seeded replica placement (docs/directory-design.md §5): exact nearest, aged only, distinct."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.directory.placement import (
    MIN_AGE,
    PER_POSITION,
    POSITIONS,
    REPLICAS,
    Candidate,
    ReplicaIndex,
    replica_position,
    replica_positions,
    replica_set,
)

NOW = 1_800_000_000.0
ids = st.binary(min_size=20, max_size=20)


def aged(node_id: bytes, item: int = 0) -> Candidate[int]:
    return Candidate(node_id, NOW - MIN_AGE, item)


def brute_nearest(cands: list[Candidate[int]], pos: bytes, count: int, exclude: set[bytes]) -> list[bytes]:
    t = int.from_bytes(pos, "big")
    pool = sorted({c.node_id for c in cands} - exclude, key=lambda n: int.from_bytes(n, "big") ^ t)
    return pool[:count]


@settings(max_examples=200, deadline=None)
@given(st.lists(ids, min_size=0, max_size=120, unique=True), ids, st.integers(1, 20))
def test_nearest_is_exactly_the_xor_nearest(node_ids: list[bytes], pos: bytes, count: int) -> None:
    cands = [aged(n) for n in node_ids]
    index = ReplicaIndex(cands, NOW)
    assert [c.node_id for c in index.nearest(pos, count)] == brute_nearest(cands, pos, count, set())


@settings(max_examples=100, deadline=None)
@given(st.lists(ids, min_size=0, max_size=80, unique=True), ids, st.integers(0, 50_000))
def test_replicas_distinct_bounded_and_cover_positions(node_ids: list[bytes], key: bytes, day: int) -> None:
    cands = [aged(n, i) for i, n in enumerate(node_ids)]
    reps = ReplicaIndex(cands, NOW).replicas(key, day)
    assert len(reps) == min(REPLICAS, len(node_ids))
    assert len({c.node_id for c in reps}) == len(reps)
    # Brute force, position by position, excluding what earlier positions took.
    taken: set[bytes] = set()
    columns = []
    for pos in replica_positions(key, day):
        col = brute_nearest(cands, pos, PER_POSITION, taken)
        taken.update(col)
        columns.append(col)
    assert {c.node_id for c in reps} == taken
    # Asking order: the nearest of each position first.
    if len(node_ids) >= REPLICAS:
        assert [c.node_id for c in reps[:POSITIONS]] == [col[0] for col in columns]


def test_fresh_relays_never_count_however_near() -> None:
    """Sybil IDs ground to sit exactly on the positions, but younger than MIN_AGE, are not replicas."""
    key, day = os.urandom(20), 20_000
    honest = [aged(os.urandom(20), 0) for _ in range(200)]
    sybils = []
    for pos in replica_positions(key, day):
        for j in range(PER_POSITION):
            near = pos[:-1] + bytes([pos[-1] ^ j])  # nearer than any honest ID
            sybils.append(Candidate(near, NOW - MIN_AGE + 1, 1))
    reps = ReplicaIndex(honest + sybils, NOW).replicas(key, day)
    assert len(reps) == REPLICAS and all(c.item == 0 for c in reps)
    # Once aged they do win: the residual risk the design states (targeted grinding, run 72 h ahead).
    later = ReplicaIndex(honest + sybils, NOW + 1).replicas(key, day)
    assert all(c.item == 1 for c in later)


def test_positions_move_daily_and_per_key() -> None:
    key = b"\x01" * 20
    assert replica_positions(key, 1) != replica_positions(key, 2)
    assert replica_positions(key, 1) != replica_positions(b"\x02" * 20, 1)
    assert len(set(replica_positions(key, 1))) == POSITIONS
    with pytest.raises(ValueError):
        replica_position(key, -1, 0)


def test_replica_set_uses_the_day_of_now() -> None:
    cands = [aged(os.urandom(20), i) for i in range(64)]
    key = os.urandom(20)
    day = int(NOW // 86_400)
    assert replica_set(cands, key, NOW) == ReplicaIndex(cands, NOW).replicas(key, day)


def test_bad_id_length_refused() -> None:
    with pytest.raises(ValueError):
        ReplicaIndex([Candidate(b"\x00" * 19, 0.0, 0)], NOW)
