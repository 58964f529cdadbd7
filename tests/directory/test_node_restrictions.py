"""Tests for onionmesh.directory.node_restrictions and its use by path_selection: Tor's
ExitNodes / ExcludeNodes / ExcludeExitNodes / StrictNodes, per-stream `exit=` usernames."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.directory.geoip import GeoIP, GeoIPTable
from onionmesh.directory.node_restrictions import (
    NodeRestrictions,
    RestrictionError,
    RouterSet,
    StreamRestriction,
)
from onionmesh.directory.path_selection import PathRequest, RestrictedExitError, select_path, subnet16
from onionmesh.errors import DirectoryError
from onionmesh.rng import SeededRng
from tests.helpers.descriptors import relay

# 10.1.0.0/16 DE, 10.2.0.0/16 FR, 10.3.0.0/16 US; everything else unknown.
GEO = GeoIP(
    GeoIPTable.from_ranges(
        4,
        [
            (int(ipaddress.ip_address(f"10.{i}.0.0")), int(ipaddress.ip_address(f"10.{i}.255.255")), cc)
            for i, cc in ((1, "DE"), (2, "FR"), (3, "US"))
        ],
    )
)
country = GEO.country

ccs = st.sampled_from(["de", "fr", "us", "??", "GB", "Jp"])
hexfp = st.text(alphabet="0123456789abcdefABCDEF", min_size=40, max_size=40)
nets = st.one_of(
    st.builds(lambda a, p: f"{ipaddress.IPv4Address(a)}/{p}", st.integers(0, 2**32 - 1), st.integers(8, 32)),
    st.builds(
        lambda a, p: f"[{ipaddress.IPv6Address(a)}]/{p}", st.integers(0, 2**128 - 1), st.integers(16, 128)
    ),
)
items = st.one_of(ccs.map(lambda c: f"{{{c}}}"), hexfp.map(lambda f: f"${f}"), hexfp, nets)


@given(st.lists(items, max_size=12))
def test_canonical_text_parses_back_to_the_same_set(parts: list[str]) -> None:
    rs = RouterSet.parse(", ".join(parts))
    assert RouterSet.parse(str(rs)) == rs
    assert bool(rs) == bool(parts)


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_restriction_error(text: str) -> None:
    try:
        rs = RouterSet.parse(text)
    except RestrictionError:
        return
    assert RouterSet.parse(str(rs)) == rs


@pytest.mark.parametrize("bad", ["{deu}", "{d1}", "{de", "$1234", "nickname", "10.0.0.0/33", "{}"])
def test_bad_entries_are_refused(bad: str) -> None:
    with pytest.raises(RestrictionError):
        RouterSet.parse(bad)


def test_tor_syntax() -> None:
    fp = "AB" * 20
    rs = RouterSet.parse(f"{{de}}, {{??}},${fp}~nick, {fp.lower()}, 10.3.0.0/16, 192.0.2.7")
    assert rs.countries == {"DE", "??"}
    assert rs.fingerprints == {fp}
    assert [str(n) for n in rs.networks] == ["10.3.0.0/16", "192.0.2.7/32"]


def test_matching_uses_the_clients_database_first_address_for_exits_any_for_exclusion() -> None:
    two = relay(1, [("10.3.0.1", 9001), ("10.1.0.1", 9001)])  # first address US, second DE
    de = RouterSet.parse("{de}")
    assert not de.matches(two, country, any_address=False)
    assert de.matches(two, country, any_address=True)
    assert RouterSet.parse("{??}").matches(relay(2, "192.0.2.1"), country, any_address=False)
    assert RouterSet.parse(two.fingerprint.lower()).matches(two, country, any_address=False)
    assert RouterSet.parse("10.1.0.0/24").matches(two, country, any_address=False)


def mesh() -> list:
    """Three exits and three middles in each of DE, FR, US (distinct /24s... and /16s per country);
    plus one unknown-country exit."""
    out = []
    i = 0
    for c in (1, 2, 3):
        for k in range(6):
            policy = "accept *:*" if k < 3 else "reject *:*"
            if c == 2 and k < 3:
                policy = "accept *:443; reject *:*"  # French exits serve 443 only
            out.append(relay(i, f"10.{c}.{k}.1", policy=policy))
            i += 1
    out.append(relay(i, "192.0.2.1"))
    return out


def choose(relays: list, rules: NodeRestrictions, port: int | None, seed: int, **kw: object) -> list:
    allowed = rules.resolve(relays, country)
    req = PathRequest(
        hops=3,
        port=port,
        excluded=allowed.excluded,
        exits=allowed.exits,
        restriction=rules.describe(),
        distinct_subnets=False,
        **kw,  # type: ignore[arg-type]
    )
    return select_path(relays, req, SeededRng(seed))


def test_exit_nodes_restrict_the_exit_only() -> None:
    relays = mesh()
    rules = NodeRestrictions.parse(exit_nodes="{de}")
    seen = Counter()
    for seed in range(200):
        path = choose(relays, rules, 80, seed)
        assert country(path[-1].link_addresses[0][0]) == "DE"
        seen.update(country(d.link_addresses[0][0]) for d in path[:-1])
    assert {"FR", "US"} <= set(seen)  # other hops stay unconstrained


def test_excluded_countries_never_appear_at_any_position() -> None:
    relays = mesh()
    rules = NodeRestrictions.parse(exclude_nodes="{us}")
    for seed in range(300):
        path = choose(relays, rules, None, seed)
        assert all(country(d.link_addresses[0][0]) not in ("US", "??") for d in path)  # ?? too: auto


def test_exclude_nodes_wins_over_exit_nodes_and_via() -> None:
    relays = mesh()
    rules = NodeRestrictions.parse(exit_nodes="{de},{us}", exclude_nodes="{de}")
    for seed in range(50):
        assert country(choose(relays, rules, 80, seed)[-1].link_addresses[0][0]) == "US"
    de_relay = relays[0].fingerprint
    with pytest.raises(DirectoryError, match="excluded"):
        choose(relays, rules, 80, 1, via=(de_relay,))


def test_exclude_exit_nodes_keeps_middles() -> None:
    relays = mesh()
    rules = NodeRestrictions.parse(exclude_exit_nodes="{de}")
    middles = Counter()
    for seed in range(200):
        path = choose(relays, rules, 80, seed)
        assert country(path[-1].link_addresses[0][0]) != "DE"
        middles.update(country(d.link_addresses[0][0]) for d in path[:-1])
    assert middles["DE"] > 0


def test_no_exit_in_the_country_for_the_port_is_a_clear_refusal() -> None:
    relays = mesh()
    rules = NodeRestrictions.parse(exit_nodes="{fr}")
    assert country(choose(relays, rules, 443, 0)[-1].link_addresses[0][0]) == "FR"
    with pytest.raises(RestrictedExitError, match=r"ExitNodes \{fr\}.*port 80"):
        choose(relays, rules, 80, 0)
    with pytest.raises(RestrictedExitError):
        choose(relays, NodeRestrictions.parse(exit_nodes="{xx}"), 80, 0)


def test_restrictions_keep_the_subnet_and_family_rules() -> None:
    relays = mesh()
    rules = NodeRestrictions.parse(exit_nodes="{de}")
    allowed = rules.resolve(relays, country)
    for seed in range(100):
        req = PathRequest(hops=3, port=80, excluded=allowed.excluded, exits=allowed.exits)
        path = select_path(relays, req, SeededRng(seed))
        assert len({subnet16(d.link_addresses[0][0]) for d in path}) == 3
    # all of DE's relays share 10.1.0.0/16: a 2-hop path with a DE exit and a DE hop 1 is impossible
    only_de = [d for d in relays if country(d.link_addresses[0][0]) == "DE"]
    req = PathRequest(hops=2, port=80, exits=allowed.exits)
    with pytest.raises(DirectoryError):
        select_path(only_de, req, SeededRng(0))


def test_stream_username_syntax() -> None:
    assert StreamRestriction.from_username(None) is None
    assert StreamRestriction.from_username(b"tab-42") is None  # ordinary isolation usernames
    assert StreamRestriction.from_username(b"\xff\xfe") is None
    s = StreamRestriction.from_username(b"exit={de},{fr};exclude={us};fallback;profile-2")
    assert s is not None
    assert s.exit_nodes.countries == {"DE", "FR"}
    assert s.exclude_exit_nodes.countries == {"US"}
    assert s.fallback
    with pytest.raises(RestrictionError):
        StreamRestriction.from_username(b"exit=")
    with pytest.raises(RestrictionError):
        StreamRestriction.from_username(b"exit={germany}")


@given(st.binary(max_size=100))
def test_any_username_parses_or_raises_restriction_error(username: bytes) -> None:
    try:
        got = StreamRestriction.from_username(username)
    except RestrictionError:
        return
    assert got is None or got.exit_nodes  # a restriction always names some exit


def test_stream_restriction_replaces_exit_nodes_and_keeps_exclusions() -> None:
    base = NodeRestrictions.parse(exit_nodes="{us}", exclude_nodes="{fr}", strict_nodes=True)
    stream = StreamRestriction.from_username("exit={de};fallback")
    merged = base.with_stream(stream)
    assert merged.exit_nodes.countries == {"DE"}
    assert merged.exclude_nodes.countries == {"FR"}
    assert not merged.fallback  # StrictNodes: a stream's fallback is never taken
    assert NodeRestrictions().with_stream(stream).fallback
