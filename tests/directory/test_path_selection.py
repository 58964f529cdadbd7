"""Tests for onionmesh.directory.path_selection: constraints, weights, guards, via, avoid, exit_fp."""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import (
    MAX_ADVERTISED_BANDWIDTH,
    PathRequest,
    bandwidth_weight,
    exit_accepts_port,
    relays_conflict,
    same_family,
    select_path,
    subnet16,
    weighted_index,
)
from onionmesh.errors import DirectoryError
from onionmesh.rng import SeededRng
from tests.helpers.descriptors import T0, relay

LOOPBACK_ONLY = "accept 127.0.0.0/8:*; reject *:*"
POLICIES = ["", "accept *:*", LOOPBACK_ONLY, "reject *:25; accept *:*", "accept *:80,443", "reject *:*"]


def fps(path: Sequence[RelayDescriptor]) -> list[str]:
    return [d.fingerprint for d in path]


# --------------------------------------------------------------------------- rule helpers
def test_bandwidth_weight_is_capped_and_positive() -> None:
    assert bandwidth_weight(relay(1, bw=0)) == 1
    assert bandwidth_weight(relay(1, bw=5)) == 5
    assert bandwidth_weight(relay(1, bw=MAX_ADVERTISED_BANDWIDTH)) == MAX_ADVERTISED_BANDWIDTH
    assert bandwidth_weight(relay(1, bw=10 * MAX_ADVERTISED_BANDWIDTH)) == MAX_ADVERTISED_BANDWIDTH
    assert bandwidth_weight(relay(1, bw=2**32 - 1)) == MAX_ADVERTISED_BANDWIDTH


def test_same_family_needs_both_sides() -> None:
    a, b, c = relay(1, family=[2, 3]), relay(2, family=[1]), relay(3)
    assert same_family(a, b) and same_family(b, a)
    assert not same_family(a, c) and not same_family(c, a)  # c never claimed a
    assert not same_family(a, a)


@pytest.mark.parametrize(
    ("ip", "net"),
    [
        ("10.1.2.3", "10.1.0.0/16"),
        ("10.1.255.255", "10.1.0.0/16"),
        ("::ffff:10.1.2.3", "10.1.0.0/16"),
        ("2001:db8:1:2::3", "2001:db8::/32"),
        ("2001:db9::1", "2001:db9::/32"),
        ("::1", "::/32"),
    ],
)
def test_subnet16(ip: str, net: str) -> None:
    assert subnet16(ip) == net


def test_conflict_on_any_shared_subnet() -> None:
    a = relay(1, [("10.1.0.1", 1), ("2001:db8::1", 2)])
    b = relay(2, [("10.2.0.1", 1), ("2001:db8:ffff::1", 2)])
    c = relay(3, [("10.3.0.1", 1)])
    assert relays_conflict(a, b) and not relays_conflict(a, c)
    assert not relays_conflict(a, b, distinct_subnets=False)
    assert relays_conflict(a, a, distinct_subnets=False)


@pytest.mark.parametrize(
    ("policy", "port", "ok"),
    [
        ("", None, False),
        ("", 80, False),
        ("accept *:*", None, True),
        ("reject *:*", None, True),  # port None: any relay that calls itself an exit
        ("accept *:80,443", 443, True),
        ("accept *:80,443", 22, False),
        ("reject *:25; accept *:*", 25, False),
        (LOOPBACK_ONLY, 8080, True),  # a test mesh's loopback exit
        ("accept 127.0.0.1:80; reject *:*", 81, False),
        ("accept 127.0.0.1:80; reject *:*", 80, True),
        ("reject 127.0.0.0/8:25; accept 127.0.0.0/8:*", 25, False),
        ("accept private:*", 8080, True),
        ("accept6 private:*", 8080, True),
        ("accept 18.0.0.0/8:80; reject *:*", 80, True),  # might accept, before DNS
        ("reject *:80; accept 18.0.0.0/8:80", 80, False),
        ("this is not a policy", 80, False),
    ],
)
def test_exit_accepts_port(policy: str, port: int | None, ok: bool) -> None:
    assert exit_accepts_port(relay(1, policy=policy), port) is ok


class ScriptedRng:
    def __init__(self, values: list[int]) -> None:
        self.values, self.asked = values, []

    def random_bytes(self, n: int) -> bytes:
        raise AssertionError("not used")

    def randbelow(self, n: int) -> int:
        self.asked.append(n)
        return self.values.pop(0)


def test_weighted_index_is_exact() -> None:
    weights = [3, 0, 2, 5]
    picks = [weighted_index(ScriptedRng([r]), weights) for r in range(10)]
    assert picks == [0, 0, 0, 2, 2, 3, 3, 3, 3, 3]
    with pytest.raises(ValueError):
        weighted_index(ScriptedRng([0]), [0, 0])


def test_select_path_draws_with_capped_integer_weights() -> None:
    relays = [relay(1, bw=7), relay(2, bw=10 * MAX_ADVERTISED_BANDWIDTH), relay(3, bw=0)]
    rng = ScriptedRng([7])
    (pick,) = select_path(relays, PathRequest(hops=1), rng)
    assert rng.asked == [7 + MAX_ADVERTISED_BANDWIDTH + 1]
    assert pick.fingerprint == relays[1].fingerprint
    assert fps(select_path(relays, PathRequest(hops=1), ScriptedRng([6]))) == fps(relays[:1])
    top = 7 + MAX_ADVERTISED_BANDWIDTH
    assert fps(select_path(relays, PathRequest(hops=1), ScriptedRng([top]))) == fps(relays[2:])


# --------------------------------------------------------------------------- chi-squared
CHI2_CRITICAL_DF7_P001 = 24.322  # chi-squared upper 0.001 point, 7 degrees of freedom


def chi2(observed: list[int], weights: list[int]) -> float:
    n, total = sum(observed), sum(weights)
    expected = [n * w / total for w in weights]
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def test_exit_frequencies_follow_capped_weights() -> None:
    bws = [500_000, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 2_500_000, 10 * MAX_ADVERTISED_BANDWIDTH]
    bws.append(MAX_ADVERTISED_BANDWIDTH)
    relays = [relay(i, bw=bw) for i, bw in enumerate(bws)]
    weights = [min(bw, MAX_ADVERTISED_BANDWIDTH) for bw in bws]
    rng, draws = SeededRng(42), 20_000
    counts = Counter(fps(select_path(relays, PathRequest(hops=1), rng))[0] for _ in range(draws))
    observed = [counts[d.fingerprint] for d in relays]
    assert sum(observed) == draws
    assert chi2(observed, weights) < CHI2_CRITICAL_DF7_P001
    # The liar (10x the cap) is drawn as often as the honest relay at the cap, not 10x as often.
    assert 0.9 < observed[6] / observed[7] < 1.1
    # The test has power: the uncapped weights, or uniform ones, are rejected by a wide margin.
    assert chi2(observed, bws) > 10 * CHI2_CRITICAL_DF7_P001
    assert chi2(observed, [1] * 8) > 10 * CHI2_CRITICAL_DF7_P001


# --------------------------------------------------------------------------- request features
def mesh(n: int = 8) -> list[RelayDescriptor]:
    return [relay(i) for i in range(n)]


def test_shape_and_distinctness() -> None:
    relays = mesh()
    for seed in range(50):
        path = select_path(relays, PathRequest(hops=3, port=80), SeededRng(seed))
        assert len(path) == 3 and len(set(fps(path))) == 3


def test_exit_fp_and_unknown_relays() -> None:
    relays = mesh()
    target = relays[5].fingerprint
    for seed in range(20):
        assert select_path(relays, PathRequest(exit_fp=target.lower()), SeededRng(seed))[-1] == relays[5]
    with pytest.raises(DirectoryError, match="unknown exit"):
        select_path(relays, PathRequest(exit_fp="AB" * 20), SeededRng(0))
    with pytest.raises(DirectoryError, match="unknown --via"):
        select_path(relays, PathRequest(via=("CD" * 20,)), SeededRng(0))


def test_via_forces_first_hops_in_order() -> None:
    relays = mesh()
    via = (relays[3].fingerprint, relays[1].fingerprint)
    for seed in range(20):
        path = select_path(relays, PathRequest(hops=4, via=via), SeededRng(seed))
        assert fps(path)[:2] == list(via) and len(set(fps(path))) == 4
    with pytest.raises(DirectoryError, match="room"):
        select_path(relays, PathRequest(hops=2, via=via), SeededRng(0))
    same16 = [relay(1, "10.9.0.1"), relay(2, "10.9.0.2"), relay(3, "10.3.0.1")]
    with pytest.raises(DirectoryError, match="--via"):
        select_path(same16, PathRequest(hops=3, via=fps(same16[:2])), SeededRng(0))


def test_guards_first_fitting_guard_is_hop1() -> None:
    relays = [relay(i) for i in range(6)]
    relays.append(relay(6, "10.0.9.9"))  # shares 10.0/16 with relay 0
    guards = (relays[0].fingerprint, relays[1].fingerprint)
    for seed in range(60):
        path = select_path(relays, PathRequest(guards=guards), SeededRng(seed))
        expected = relays[1] if path[-1] in (relays[0], relays[6]) else relays[0]
        assert path[0] == expected
    # Exit 6 conflicts with guard 0 only; with guard 0 alone that exit is never chosen.
    for seed in range(60):
        path = select_path(relays, PathRequest(guards=guards[:1]), SeededRng(seed))
        assert path[0] == relays[0] and path[-1] not in (relays[0], relays[6])
    with pytest.raises(DirectoryError, match="guards"):
        select_path(relays, PathRequest(guards=("EF" * 20,)), SeededRng(0))
    # A guard that conflicts with every exit: no path, and the message says why.
    lonely = [relay(0, "10.0.0.1", policy=""), relay(1, "10.0.0.2"), relay(2, "10.2.0.1", policy="")]
    with pytest.raises(DirectoryError, match="with the given guards"):
        select_path(lonely, PathRequest(guards=(lonely[0].fingerprint,)), SeededRng(0))


def test_one_hop_with_guards_uses_a_guard_as_exit() -> None:
    relays = mesh()
    guards = (relays[2].fingerprint, relays[4].fingerprint)
    assert select_path(relays, PathRequest(hops=1, guards=guards), SeededRng(1)) == [relays[2]]


def test_avoid_is_used_only_as_a_fallback() -> None:
    relays = [relay(0, policy=""), relay(1, policy=""), relay(2), relay(3)]
    avoid = frozenset({relays[2].fingerprint, relays[0].fingerprint})
    for seed in range(40):
        path = select_path(relays, PathRequest(hops=2, avoid=avoid), SeededRng(seed))
        assert fps(path) == [relays[1].fingerprint, relays[3].fingerprint]
    # Only one exit: avoided or not, it must be used.
    solo = relays[:3]
    assert select_path(solo, PathRequest(hops=2, avoid=avoid), SeededRng(0))[-1] == relays[2]
    # Three hops over four relays: the avoided middle is needed.
    path = select_path(relays, PathRequest(hops=4, avoid=avoid), SeededRng(0))
    assert set(fps(path)) == {d.fingerprint for d in relays}


def test_newest_descriptor_of_a_relay_wins_and_duplicates_do_not_double_count() -> None:
    old, new = relay(1, policy="", published=T0), relay(1, published=T0 + 10)
    assert select_path([old, new], PathRequest(hops=1), SeededRng(0)) == [new]
    assert select_path([new, old], PathRequest(hops=1), SeededRng(0)) == [new]
    with pytest.raises(DirectoryError):
        select_path([new, new], PathRequest(hops=2), SeededRng(0))


@pytest.mark.parametrize("hops", [0, 9])
def test_bad_hop_counts(hops: int) -> None:
    with pytest.raises(DirectoryError, match="hop count"):
        select_path(mesh(), PathRequest(hops=hops), SeededRng(0))


def test_no_exit_for_port() -> None:
    relays = [relay(i, policy="accept *:80; reject *:*") for i in range(4)]
    with pytest.raises(DirectoryError, match="port 22"):
        select_path(relays, PathRequest(port=22), SeededRng(0))


def test_loopback_mesh_needs_distinct_subnets_off() -> None:
    relays = [relay(i, [("127.0.0.1", 9000 + i)], policy=LOOPBACK_ONLY) for i in range(5)]
    with pytest.raises(DirectoryError, match="subnets"):
        select_path(relays, PathRequest(port=8080), SeededRng(0))
    path = select_path(relays, PathRequest(port=8080, distinct_subnets=False), SeededRng(0))
    assert len(set(fps(path))) == 3


def test_search_backtracks_instead_of_failing() -> None:
    # The heavy exit is in a family with both non-exits, so it leaves no room for hops 1 and 2;
    # the greedy draw almost always picks it first, and the search must back up to the light exit.
    heavy = relay(0, bw=MAX_ADVERTISED_BANDWIDTH, family=[1, 2])
    a, b = relay(1, policy="", family=[0]), relay(2, policy="", family=[0])
    light = relay(3, bw=1)
    for seed in range(20):
        path = select_path([heavy, a, b, light], PathRequest(hops=3), SeededRng(seed))
        assert path[-1] == light and {path[0], path[1]} == {a, b}


# --------------------------------------------------------------------------- property test
IPV4 = st.builds(lambda b, c, d: f"10.{b}.{c}.{d}", st.integers(0, 2), st.integers(0, 3), st.integers(1, 3))
IPV6 = st.builds(
    lambda b, d: str(ipaddress.ip_address(f"2001:db8:{b:x}::{d:x}")), st.integers(0, 1), st.integers(1, 3)
)
BANDWIDTHS = st.sampled_from([0, 1, 1000, 10**6, MAX_ADVERTISED_BANDWIDTH, 2**32 - 1])


@st.composite
def relay_sets(draw: st.DrawFn) -> list[RelayDescriptor]:
    n = draw(st.integers(1, 7))
    out = []
    for i in range(n):
        ips = draw(st.lists(st.one_of(IPV4, IPV6), min_size=1, max_size=2, unique=True))
        fam = draw(st.lists(st.sampled_from([j for j in range(n) if j != i] or [None]), max_size=3))
        policy = draw(st.sampled_from(POLICIES))
        addrs = [(ip, 9000 + k) for k, ip in enumerate(ips)]
        out.append(
            relay(i, addrs, policy=policy, bw=draw(BANDWIDTHS), family=[j for j in fam if j is not None])
        )
    return out


def subnets_of(desc: RelayDescriptor) -> set[str]:
    out = set()
    for ip, _ in desc.link_addresses:
        addr = ipaddress.ip_address(ip)
        out.add(".".join(ip.split(".")[:2]) if addr.version == 4 else ":".join(addr.exploded.split(":")[:2]))
    return out


def valid(path: Sequence[RelayDescriptor], req: PathRequest) -> bool:
    if len(path) != req.hops:
        return False
    for a, b in itertools.combinations(path, 2):
        if a.identity_pk == b.identity_pk:
            return False
        if a.identity_pk in b.family and b.identity_pk in a.family:
            return False
        if req.distinct_subnets and subnets_of(a) & subnets_of(b):
            return False
    last = path[-1]
    if req.exit_fp is not None:
        if last.fingerprint != req.exit_fp:
            return False
    elif not exit_accepts_port(last, req.port):
        return False
    if req.via:
        return fps(path[: len(req.via)]) == list(req.via)
    if req.hops == 1 and req.exit_fp is not None:  # an explicit one-hop exit overrides guards
        return True
    return not req.guards or path[0].fingerprint in req.guards


def all_valid(relays: Sequence[RelayDescriptor], req: PathRequest) -> list[tuple[RelayDescriptor, ...]]:
    return [p for p in itertools.permutations(relays, req.hops) if valid(p, req)]


@st.composite
def requests(draw: st.DrawFn, relays: list[RelayDescriptor]) -> PathRequest:
    names = [d.fingerprint for d in relays]
    hops = draw(st.integers(1, min(4, len(relays) + 1)))
    some = st.lists(st.sampled_from(names), unique=True, max_size=3)
    return PathRequest(
        hops=hops,
        port=draw(st.sampled_from([None, 25, 80, 443, 8080])),
        exit_fp=draw(st.none() | st.sampled_from(names)),
        via=tuple(draw(some))[: draw(st.integers(0, hops - 1))] if draw(st.booleans()) else (),
        avoid=frozenset(draw(some)),
        guards=tuple(draw(some)),
        distinct_subnets=draw(st.booleans()),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), relays=relay_sets(), seed=st.integers(0, 2**32))
def test_paths_obey_every_rule_and_fail_only_when_impossible(
    data: st.DataObject, relays: list[RelayDescriptor], seed: int
) -> None:
    req = data.draw(requests(relays))
    solutions = all_valid(relays, req)
    try:
        path = select_path(relays, req, SeededRng(seed))
    except DirectoryError:
        event("no path")
        assert solutions == [], f"a valid path existed: {[fps(s) for s in solutions[:3]]}"
        return
    event(f"path of {req.hops} hops")
    assert valid(path, req), fps(path)
    exit_relay = path[-1]
    # Hop 1 is the first guard (non-avoided first) that can complete a path with this exit.
    if req.guards and not req.via and req.hops > 1:
        order = [g for g in req.guards if g not in req.avoid] + [g for g in req.guards if g in req.avoid]
        for g in order[: order.index(path[0].fingerprint)]:
            assert not any(s[0].fingerprint == g and s[-1] == exit_relay for s in solutions)
    # An avoided exit is chosen only when no other exit can be part of a valid path.
    if req.exit_fp is None and exit_relay.fingerprint in req.avoid:
        assert all(s[-1].fingerprint in req.avoid for s in solutions)


def test_measured_weight_replaces_the_self_report_but_never_exceeds_it() -> None:
    """Stage 4 (docs/directory-design.md §6): a relay advertising the cap but measured at 10 kB/s
    is weighted (and drawn) by its measured weight; a measured weight above the self-report
    counts as the self-report."""
    liar = relay(1, bw=MAX_ADVERTISED_BANDWIDTH)
    assert bandwidth_weight(liar) == MAX_ADVERTISED_BANDWIDTH
    assert bandwidth_weight(liar, 10) == 10_000
    assert bandwidth_weight(relay(2, bw=20_000), 10_000) == 20_000
    relays = [liar, relay(2, bw=7)]
    rng = ScriptedRng([10_000])
    (pick,) = select_path(relays, PathRequest(hops=1, weights={liar.fingerprint: 10}), rng)
    assert rng.asked == [10_000 + 7]
    assert pick.fingerprint == relays[1].fingerprint
