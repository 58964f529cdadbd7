"""onionmesh-blake2b-1 proof of work and the effort-ordered introduction queue (crypto.hs_pow)."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.crypto import hs_pow
from onionmesh.wire.hs_cells import PowExtension

SEED, BLINDED, X = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def test_hash_is_the_documented_formula() -> None:
    nonce = bytes(range(16))
    expected = hashlib.blake2b(
        SEED + nonce + (100).to_bytes(4, "big") + BLINDED + X, digest_size=32, person=b"om-hs-pow-v1"
    ).digest()
    assert hs_pow.pow_hash(SEED, nonce, 100, BLINDED, X) == expected


def test_solution_verifies_and_is_bound_to_everything() -> None:
    nonce = hs_pow.solve(SEED, 200, BLINDED, X, bytes(16), 100_000)
    assert nonce is not None and hs_pow.is_valid(SEED, nonce, 200, BLINDED, X)
    assert not all(
        hs_pow.is_valid(*args)
        for args in (
            (b"\x09" * 32, nonce, 200, BLINDED, X),
            (SEED, nonce, 200, BLINDED, b"\x04" * 32),
            (SEED, nonce, 200, b"\x05" * 32, X),
        )
    )
    assert not hs_pow.is_valid(SEED, nonce, 0, BLINDED, X) and not hs_pow.is_valid(
        SEED, nonce[:15], 200, BLINDED, X
    )
    ext = PowExtension(hs_pow.VERSION, nonce, 200, SEED[:4])
    assert PowExtension.decode(ext.encode()) == ext


def test_effort_scales_the_work() -> None:
    """Over 2000 nonces, about 1/effort pass: the count for effort 1 is all, for 100 near 20."""
    passes = {
        e: sum(hs_pow.is_valid(SEED, i.to_bytes(16, "big"), e, BLINDED, X) for i in range(2000))
        for e in (1, 100)
    }
    assert passes[1] == 2000
    assert 5 <= passes[100] <= 45


def test_solve_gives_up_after_its_budget() -> None:
    assert hs_pow.solve(SEED, 2**32 - 1, BLINDED, X, bytes(16), 50) is None


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers()), max_size=60), st.integers(1, 20))
@settings(max_examples=200)
def test_queue_serves_highest_effort_first_fifo_within_and_is_bounded(items: list, capacity: int) -> None:
    q: hs_pow.IntroQueue[int] = hs_pow.IntroQueue(capacity)
    for seq, (effort, _) in enumerate(items):
        q.push(seq, effort)
        assert len(q) <= capacity
    out = [q.pop() for _ in range(len(q))]
    efforts = [e for _, e in out]
    assert efforts == sorted(efforts, reverse=True)
    for a, b in itertools.pairwise(out):
        if a[1] == b[1]:
            assert a[0] < b[0]  # FIFO among equal efforts
    if len(items) > capacity:  # what survived is the top `capacity` by effort
        top = sorted((e for e, _ in items), reverse=True)[:capacity]
        assert sorted(efforts, reverse=True) == top
    assert q.dropped == max(0, len(items) - capacity)
