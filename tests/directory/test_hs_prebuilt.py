"""directory.hs_prebuilt: pre-built onion-service paths, and which one fits a target (sans-I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.directory.hs_prebuilt import PrebuiltKind, choose, fits, prebuilt_path, still_usable
from onionmesh.directory.path_selection import relays_conflict
from onionmesh.directory.vanguards import DAY, HsPurpose, VanguardSet
from onionmesh.rng import SeededRng
from tests.helpers.descriptors import T0, make


def relays(n: int = 12) -> list:  # type: ignore[type-arg]
    return [make(i + 1, published=T0, lifetime=3 * DAY - 1, ip=f"10.{i + 1}.0.1") for i in range(n)]


def test_paths_are_guard_l2_and_guard_l2_middle() -> None:
    rs, vs = relays(), VanguardSet(rng=SeededRng(1))
    guards = [rs[0].fingerprint, rs[1].fingerprint]
    short = prebuilt_path(PrebuiltKind.SHORT, vs, rs, guards, T0, SeededRng(2))
    long = prebuilt_path(PrebuiltKind.LONG, vs, rs, guards, T0, SeededRng(3))
    l2s = {v.fingerprint for v in vs.vanguards}
    assert len(short) == 2 and len(long) == 3
    assert short[0] is rs[0] and long[0] is rs[0]  # the first primary guard
    assert short[1].fingerprint in l2s and long[1].fingerprint in l2s
    assert not any(relays_conflict(a, b) for i, a in enumerate(long) for b in long[i + 1 :])


def test_fit_refuses_the_guard_a_hop_a_wrong_guard_a_stale_l2_and_a_wrong_kind() -> None:
    rs, vs = relays(), VanguardSet(rng=SeededRng(4))
    guards = [rs[0].fingerprint, rs[1].fingerprint]
    long = prebuilt_path(PrebuiltKind.LONG, vs, rs, guards, T0, SeededRng(5))
    others = [r for r in rs if all(r is not h for h in long) and r is not rs[1]]
    target = others[0]
    assert fits(long, HsPurpose.CLIENT_INTRO, target, vs, rs, guards, T0)
    assert fits(long, HsPurpose.SERVICE_REND, target, vs, rs, guards, T0)
    assert not fits(long, HsPurpose.CLIENT_REND, target, vs, rs, guards, T0)  # G-L2-RP: short only
    assert not fits(long, HsPurpose.SERVICE_INTRO, target, vs, rs, guards, T0)  # not pooled
    for hop in long:  # the target is never a hop of the circuit (the RP is never our guard)
        assert not fits(long, HsPurpose.CLIENT_INTRO, hop, vs, rs, guards, T0)
    # a target in the first guard's /16: today's rule takes the second guard, so the pooled one is wrong
    twin = make(99, published=T0, lifetime=3 * DAY - 1, ip="10.1.9.9")
    assert relays_conflict(twin, rs[0])
    assert not fits(long, HsPurpose.CLIENT_INTRO, twin, vs, [*rs, twin], guards, T0)
    # guards reordered (the first primary changed): no fit, and the pool drops it
    assert not fits(long, HsPurpose.CLIENT_INTRO, target, vs, rs, guards[::-1], T0)
    assert not still_usable(long, vs, rs, guards[::-1], T0)
    # its L2 left the directory: no fit
    gone = [r for r in rs if r is not long[1]]
    assert not fits(long, HsPurpose.CLIENT_INTRO, target, vs, gone, guards, T0)
    assert still_usable(long, vs, rs, guards, T0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(5, 14), which=st.sampled_from(list(HsPurpose)))
def test_a_chosen_circuit_plus_target_is_a_valid_vanguards_path(seed: int, n: int, which: HsPurpose) -> None:
    """Whatever the relays and the pool, what `choose` picks extended by the target is a path
    VanguardSet.path could give: first guard not conflicting with the target, a current L2, no two
    hops conflicting, the right length."""
    rs, rng = relays(n), SeededRng(seed)
    vs = VanguardSet(rng=rng)
    guards = [rs[rng.randbelow(n)].fingerprint]
    pool = []
    for i in range(4):
        kind = PrebuiltKind.SHORT if rng.randbelow(2) else PrebuiltKind.LONG
        pool.append((i, prebuilt_path(kind, vs, rs, guards, T0, rng)))
    target = rs[rng.randbelow(n)]
    key = choose(pool, which, target, vs, rs, guards, T0)
    if key is None:
        return
    path = [*dict(pool)[key], target]
    assert path[0].fingerprint == guards[0]
    assert path[1].fingerprint in {v.fingerprint for v in vs.vanguards}
    assert len(path) == (3 if which is HsPurpose.CLIENT_REND else 4)
    assert which in (HsPurpose.CLIENT_REND, HsPurpose.CLIENT_INTRO, HsPurpose.SERVICE_REND)
    assert not any(relays_conflict(a, b) for i, a in enumerate(path) for b in path[i + 1 :])
