"""directory.vanguards (prop 333 vanguards-lite) with a simulated clock, and its state file."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from onionmesh.directory.path_selection import relays_conflict
from onionmesh.directory.vanguards import (
    DAY,
    MAX_LIFETIME,
    MIN_LIFETIME,
    NUM_LAYER2,
    HsPurpose,
    VanguardSet,
    draw_lifetime,
)
from onionmesh.rng import SeededRng
from onionmesh.runtime.client.vanguard_state import load_vanguards, save_vanguards
from tests.helpers.descriptors import T0, make


def relays(n: int = 20) -> list:  # type: ignore[type-arg]
    return [make(i + 1, published=T0, lifetime=3 * DAY - 1, ip=f"10.{i + 1}.0.1") for i in range(n)]


def test_lifetimes_are_max_of_two_uniforms_in_1_to_12_days() -> None:
    rng = SeededRng(1)
    draws = [draw_lifetime(rng) for _ in range(4000)]
    assert all(MIN_LIFETIME <= d <= MAX_LIFETIME for d in draws)
    mean = sum(draws) / len(draws) / DAY
    assert 8.0 < mean < 8.7  # max(x, x) on [1, 12]: 1 + 11 * 2/3 = 8.33 days (prop 333: "about a week")


def test_four_kept_until_they_expire_or_leave_the_directory() -> None:
    rs = relays()
    vs = VanguardSet(rng=SeededRng(2))
    first = vs.update(T0, rs)
    assert len(first) == NUM_LAYER2 == len(set(first))
    chosen = [r for r in rs if r.fingerprint in first]
    assert not any(relays_conflict(a, b) for a in chosen for b in chosen if a is not b)
    assert vs.update(T0 + DAY - 1, rs) == first  # nobody leaves before a day
    gone = first[0]
    kept = vs.update(T0 + 10, [r for r in rs if r.fingerprint != gone])
    assert gone not in kept and kept[:3] == first[1:] and len(kept) == 4
    soonest = min(v.expires_at for v in vs.vanguards)
    survivors = {v.fingerprint for v in vs.vanguards if v.expires_at > soonest}
    after = vs.update(soonest, rs)
    assert survivors <= set(after) and len(after) == 4
    vs.update(T0 + MAX_LIFETIME + DAY, rs)
    assert all(v.added_at > T0 + DAY for v in vs.vanguards)  # after 12 days every one was redrawn
    # with a simulated clock over 60 days, no vanguard is ever older than 12 days
    now = T0 + MAX_LIFETIME + DAY
    while now < T0 + 60 * DAY:
        vs.update(now, rs)
        assert all(now - v.added_at < MAX_LIFETIME and v.expires_at > now for v in vs.vanguards)
        now += 3600


def test_paths_guard_l2_then_last_hop() -> None:
    rs = relays()
    vs = VanguardSet(rng=SeededRng(3))
    layer2 = set(vs.update(T0, rs))
    guard = next(r.fingerprint for r in rs if r.fingerprint not in layer2)
    last = next(r.fingerprint for r in rs if r.fingerprint not in layer2 and r.fingerprint != guard)
    rng = SeededRng(4)
    for purpose in HsPurpose:
        for _ in range(20):
            path = vs.path(purpose, rs, guard, last, T0, rng)
            assert path[0].fingerprint == guard and path[-1].fingerprint == last
            assert path[1].fingerprint in layer2
            assert len(path) == (3 if purpose is HsPurpose.CLIENT_REND else 4)
            assert not any(relays_conflict(a, b) for i, a in enumerate(path) for b in path[i + 1 :])
    # a guard in the /16 of one vanguard: that vanguard is never its second hop
    l2 = [r for r in rs if r.fingerprint in layer2]
    ip = l2[0].link_addresses[0][0].rsplit(".", 2)[0] + ".9.9"
    twin = make(99, published=T0, lifetime=3 * DAY - 1, ip=ip)
    assert relays_conflict(twin, l2[0])
    seconds = {vs.path(HsPurpose.CLIENT_REND, [*rs, twin], twin.fingerprint, last, T0, rng)[1].fingerprint
               for _ in range(40)}  # fmt: skip
    assert seconds and l2[0].fingerprint not in seconds and seconds <= layer2


def test_state_survives_a_restart(tmp_path: Path) -> None:
    rs = relays()
    vs = VanguardSet(rng=SeededRng(5))
    first = vs.update(T0, rs)
    save_vanguards(tmp_path, vs)
    assert (tmp_path / "vanguards.json").stat().st_mode & 0o777 == 0o600
    again = load_vanguards(tmp_path, SeededRng(6))  # another rng: the set comes from the file
    assert again.update(T0 + 3600, rs) == first
    (tmp_path / "vanguards.json").write_text("{junk")
    assert load_vanguards(tmp_path, SeededRng(7)).vanguards == ()


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_state_parser_never_raises(text: str) -> None:
    vs = VanguardSet.from_json(text)
    assert len(vs.vanguards) <= NUM_LAYER2


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "fingerprint": st.sampled_from(["A" * 40, "B" * 40, "c" * 40, "1" * 39]),
                "added_at": st.one_of(st.floats(allow_nan=True), st.integers(-5, 2**70)),
                "expires_at": st.one_of(st.floats(allow_nan=True), st.integers(-5, 2**70)),
            }
        ),
        max_size=8,
    )
)
def test_state_entries_checked(entries: list) -> None:  # type: ignore[type-arg]
    import json

    vs = VanguardSet.from_json(json.dumps({"version": 1, "layer2": entries}))
    for v in vs.vanguards:
        assert v.fingerprint in ("A" * 40, "B" * 40)
        assert v.added_at < v.expires_at <= v.added_at + MAX_LIFETIME
