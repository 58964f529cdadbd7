"""Tests for onionmesh.directory.exit_policy: Tor-syntax exit policies."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from onionmesh.directory.exit_policy import (
    DEFAULT_EXIT_POLICY,
    MAX_POLICY_CHARS,
    MAX_POLICY_RULES,
    PRIVATE_NETWORKS,
    ExitPolicy,
    PolicyRule,
    is_loopback_address,
    is_private_address,
    summary_allows,
)
from onionmesh.errors import PolicyError

P = ExitPolicy.parse


# --------------------------------------------------------------------------- parsing & text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("reject *:25", "reject *:25"),
        ("accept 18.0.0.0/8:*", "accept 18.0.0.0/8:*"),
        ("reject 192.168.0.0/255.255.0.0:*", "reject 192.168.0.0/16:*"),
        ("accept [::1]:80", "accept [::1]:80"),
        ("accept6 *6:443", "accept *6:443"),
        ("accept6 *:443", "accept *6:443"),
        ("reject private:*", "reject private:*"),
        ("reject6 private:*", "reject6 private:*"),
        ("accept *:80,443; reject *:*", "accept *:80; accept *:443; reject *:*"),
        ("accept *:80,accept *:443,reject *:*", "accept *:80; accept *:443; reject *:*"),
        ("accept *:80, accept *:443, reject *:*", "accept *:80; accept *:443; reject *:*"),
        ("accept [::1]:1-1024", "accept [::1]:1-1024"),
        ("accept [2001:DB8::]/32:443", "accept [2001:db8::]/32:443"),
        ("accept [2001:db8::1]/128", "accept [2001:db8::1]:*"),
        ("accept *4", "accept *4:*"),
        ("reject 10.0.0.1/8", "reject 10.0.0.0/8:*"),
        ("reject 1.2.3.4/32:80-80", "reject 1.2.3.4:80"),
        ("accept 0.0.0.0/0:22", "accept 0.0.0.0/0:22"),
        ("reject 1.2.3.4/0.0.0.0:*", "reject 0.0.0.0/0:*"),
        ("accept *:08080", "accept *:8080"),
        ("accept *:1-65535", "accept *:*"),
        ("accept [::ffff:10.0.0.0]/104:80", "accept 10.0.0.0/8:80"),
        ("accept [::ffff:1.2.3.4]:80", "accept 1.2.3.4:80"),
        ("ACCEPT *:80; Reject6 PRIVATE:*", "accept *:80; reject6 private:*"),
        ("  accept   *:80 , 443 ;\n\n reject *:* ;", "accept *:80; accept *:443; reject *:*"),
        ("accept *:80,\naccept *:443\r\nreject *:*", "accept *:80; accept *:443; reject *:*"),
        ("accept [::1] : 22", "accept [::1]:22"),
        ("", ""),
        (" ;\n; ", ""),
    ],
)
def test_parse_canonical_text(text: str, canonical: str) -> None:
    policy = P(text)
    assert str(policy) == canonical
    assert P(str(policy)) == policy
    assert P(canonical) == policy


def test_rule_str_forms() -> None:
    assert str(PolicyRule(True, port_lo=80, port_hi=80)) == "accept *:80"
    assert str(PolicyRule(False, ipaddress.ip_network("10.0.0.0/8"))) == "reject 10.0.0.0/8:*"
    assert str(PolicyRule(True, ipaddress.ip_network("::1/128"), port_lo=1, port_hi=1024)) == (
        "accept [::1]:1-1024"
    )
    assert str(PolicyRule(False, private=True)) == "reject private:*"
    assert str(PolicyRule(False, private=True, family=6)) == "reject6 private:*"
    assert str(PolicyRule(True, family=4)) == "accept *4:*"
    assert str(PolicyRule(True, family=6)) == "accept *6:*"


def test_rule_family_is_filled_from_network() -> None:
    rule = PolicyRule(True, ipaddress.ip_network("1.2.3.0/24"))
    assert rule.family == 4
    assert rule == PolicyRule(True, ipaddress.ip_network("1.2.3.0/24"), 4)
    assert P("accept6 [::1]:80").rules[0].family == 6


def test_port_lists_expand_to_one_rule_per_range() -> None:
    policy = P("accept *:80,443,1000-2000")
    assert [(r.port_lo, r.port_hi) for r in policy.rules] == [(80, 80), (443, 443), (1000, 2000)]
    assert P("accept *:80,443") == P("accept *:80; accept *:443")


def test_missing_port_means_all_ports() -> None:
    assert P("accept 1.2.3.4") == P("accept 1.2.3.4:*") == P("accept 1.2.3.4:1-65535")


def test_default_policy_text() -> None:
    policy = P(DEFAULT_EXIT_POLICY)
    assert str(policy.rules[-1]) == "accept *:*"
    rejected = [(r.port_lo, r.port_hi) for r in policy.rules[:-1]]
    assert rejected == [
        (25, 25), (119, 119), (135, 139), (445, 445), (563, 563), (1214, 1214),
        (4661, 4666), (6346, 6429), (6699, 6699), (6881, 6999),
    ]  # fmt: skip
    assert all(not r.accept and r.network is None and r.family is None for r in policy.rules[:-1])


def test_reject_all() -> None:
    policy = ExitPolicy.reject_all()
    assert str(policy) == "reject *:*"
    assert P(str(policy)) == policy
    assert not policy.allows("8.8.8.8", 80)
    assert policy.summary() == "reject 1-65535"


def test_reject_private_flag_prepends_rule() -> None:
    policy = P(DEFAULT_EXIT_POLICY, reject_private=True)
    assert str(policy.rules[0]) == "reject private:*"
    assert not policy.allows("127.0.0.1", 80)
    assert policy.allows("8.8.8.8", 80)
    assert P(DEFAULT_EXIT_POLICY).allows("127.0.0.1", 80)  # without the flag, private is open


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allow *:80", "expected 'accept'"),
        ("accept", "expected 'accept'"),
        ("accept6", "expected 'accept'"),
        ("acceptx *:80", "expected 'accept'"),
        ("*:80", "expected 'accept'"),
        ("accept *:70000", "bad port range '70000'"),
        ("accept *:123456", "bad port range '123456'"),
        ("accept *:0", "bad port range '0'"),
        ("accept *:0-10", "bad port range '0-10'"),
        ("accept *:90-80", "bad port range '90-80'"),
        ("accept *:", "bad port range ''"),
        ("accept *:80,,443", "bad port range ''"),
        ("accept *:80,", "bad port range ''"),
        ("accept *:http", "bad port range 'http'"),
        ("accept *:80 443", "bad port range '80 443'"),
        ("accept *:-80", "bad port range '-80'"),
        ("accept *:80,*", "bad port range '*'"),
        ("accept *:80/8", "bad port range '80/8'"),
        ("accept *:８０", "bad port range"),
        ("accept 1.2.3.4/33", "bad mask '33'"),
        ("accept 1.2.3.4/1234", "bad mask '1234'"),
        ("accept 1.2.3.4/", "bad mask ''"),
        ("accept 1.2.3.4/-1", "bad mask '-1'"),
        ("accept 1.2.3.4/255.0.255.0", "bad mask '255.0.255.0'"),
        ("accept 1.2.3.4/0.0.0.255", "bad mask '0.0.0.255'"),
        ("accept 1.2.3.4/999.0.0.0", "bad mask '999.0.0.0'"),
        ("accept [::1]/129", "bad mask '129'"),
        ("accept [::1]/ff00::", "bad mask"),
        ("accept [::1]/255.255.255.0", "bad mask '255.255.255.0'"),
        ("accept */8:80", "no mask allowed after '*'"),
        ("accept private/8", "no mask allowed after 'private'"),
        ("accept 1.2.3:80", "bad address '1.2.3'"),
        ("accept 01.2.3.4:80", "bad address '01.2.3.4'"),
        ("accept example.com:80", "bad address 'example.com'"),
        ("accept ::1:80", "IPv6 addresses must be written in [brackets]"),
        ("accept [::1:80", "unclosed '['"),
        ("accept [zz::1]:80", "bad IPv6 address '[zz::1]'"),
        ("accept [1.2.3.4]:80", "bad IPv6 address"),
        ("accept [fe80::1%eth0]:80", "bad IPv6 address"),
        ("accept [::1]x:80", "unexpected 'x' after ']'"),
        ("accept * *:80", "bad address '* *'"),
        ("accept :80", "bad address ''"),
        ("accept6 1.2.3.4:80", "accept6/reject6 needs an IPv6 address"),
        ("reject6 10.0.0.0/8", "accept6/reject6 needs an IPv6 address"),
        ("accept6 *4:80", "cannot use '*4'"),
        ("accept6 [::ffff:1.2.3.4]:80", "IPv4-mapped"),
        ("accept *:80; bogus", "expected 'accept'"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        P(text)
    assert message in str(info.value)


def test_error_names_the_offending_rule() -> None:
    with pytest.raises(PolicyError, match=r"bad port range '70000' in exit policy rule 'reject \*:70000'"):
        P("accept *:80; reject *:70000; accept *:*")
    with pytest.raises(PolicyError, match=r"\.\.\.'$"):
        P("accept *:" + "1" * 200)


def test_input_bounds() -> None:
    P("accept *:80;" + " " * (MAX_POLICY_CHARS - 12))
    with pytest.raises(PolicyError, match="longer than"):
        P("accept *:80;" + " " * (MAX_POLICY_CHARS - 11))
    P("; ".join(["accept *:80"] * MAX_POLICY_RULES))
    with pytest.raises(PolicyError, match="more than 256 rules"):
        P("; ".join(["accept *:80"] * (MAX_POLICY_RULES + 1)))
    with pytest.raises(PolicyError, match="more than 256 rules"):
        P("accept *:" + ",".join(str(port) for port in range(1, 300)))
    with pytest.raises(PolicyError, match="more than 256 rules"):
        P("; ".join(["accept *:80"] * MAX_POLICY_RULES), reject_private=True)
    with pytest.raises(PolicyError, match="must be text"):
        P(b"accept *:*")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"family": 5},
        {"network": ipaddress.ip_network("10.0.0.0/8"), "private": True},
        {"network": ipaddress.ip_network("::ffff:0:0/104")},
        {"network": ipaddress.ip_network("10.0.0.0/8"), "family": 6},
        {"private": True, "family": 4},
        {"port_lo": 0},
        {"port_hi": 65536},
        {"port_lo": 90, "port_hi": 80},
    ],
)
def test_rule_construction_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        PolicyRule(True, **kwargs)  # type: ignore[arg-type]


def test_policy_construction_errors() -> None:
    with pytest.raises(PolicyError):
        ExitPolicy((PolicyRule(True),) * (MAX_POLICY_RULES + 1))
    with pytest.raises(PolicyError):
        ExitPolicy(("accept *:*",))  # type: ignore[arg-type]
    assert ExitPolicy([PolicyRule(True)]).rules == (PolicyRule(True),)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "bogus 1", "accept", "accept 70000", "reject 1-2,x", "allow 80"])
def test_summary_allows_errors(text: str) -> None:
    with pytest.raises(PolicyError):
        summary_allows(text, 80)


# --------------------------------------------------------------------------- private addresses

PRIVATE = [
    "0.0.0.0", "0.1.2.3", "10.1.2.3", "100.64.0.1", "100.127.255.255", "127.0.0.1", "169.254.1.1",
    "172.16.5.4", "172.31.255.255", "192.168.1.1", "192.0.0.1", "198.18.0.1", "198.19.255.255",
    "224.0.0.1", "239.255.255.255", "240.0.0.1", "255.255.255.255",
    "::", "::1", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.1.1", "::10.0.0.1", "64:ff9b::10.0.0.1",
    "192.0.2.1", "2001:db8::1",
]  # fmt: skip
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "11.0.0.1", "100.63.255.255", "100.128.0.1", "172.15.255.255",
    "172.32.0.1", "198.20.0.1", "223.255.255.255", "2001:4860:4860::8888", "2606:4700::1111",
    "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "::8.8.8.8",
]  # fmt: skip


@pytest.mark.parametrize("addr", PRIVATE)
def test_private_addresses(addr: str) -> None:
    assert is_private_address(addr)
    assert is_private_address(ipaddress.ip_address(addr))
    assert not P("reject private:*; accept *:*").allows(addr, 80)


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses(addr: str) -> None:
    assert not is_private_address(addr)
    assert P("reject private:*; accept *:*").allows(addr, 80)


@pytest.mark.parametrize(
    ("addr", "loopback"),
    [
        ("127.0.0.1", True), ("127.255.255.254", True), ("::1", True), ("::ffff:127.0.0.1", True),
        ("::ffff:127.1.2.3", True), ("10.0.0.1", False), ("::", False), ("fe80::1", False),
        ("8.8.8.8", False), ("::ffff:8.8.8.8", False), ("::2", False),
    ],
)  # fmt: skip
def test_loopback_addresses(addr: str, loopback: bool) -> None:
    assert is_loopback_address(addr) is loopback
    assert is_loopback_address(ipaddress.ip_address(addr)) is loopback


def test_private_networks_table() -> None:
    """The ranges refused whole: IANA's special-purpose registries (forms embedding IPv4 aside)."""
    expected = {
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24",
        "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23", "2001:db8::/32",
        "2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    }  # fmt: skip
    assert {str(n) for n in PRIVATE_NETWORKS} == expected


def test_bad_address_text_is_value_error() -> None:
    with pytest.raises(ValueError):
        is_private_address("not an address")
    with pytest.raises(ValueError):
        P("accept *:*").allows("example.com", 80)


# --------------------------------------------------------------------------- matching


def test_first_match_wins() -> None:
    assert P("accept *:80; reject *:80").allows("8.8.8.8", 80)
    assert not P("reject *:80; accept *:80").allows("8.8.8.8", 80)
    policy = P("reject 1.2.3.4:80; accept *:80")
    assert not policy.allows("1.2.3.4", 80)
    assert policy.allows("1.2.3.5", 80)
    policy = P("accept 18.0.0.0/8:*; reject *:*")
    assert policy.allows("18.9.22.169", 22)
    assert not policy.allows("19.0.0.1", 22)


def test_no_matching_rule_rejects() -> None:
    assert not P("accept *:80").allows("8.8.8.8", 443)
    assert not P("").allows("8.8.8.8", 80)
    assert not P("accept *:*").allows("8.8.8.8", 0)
    assert not P("accept *:*").allows("8.8.8.8", 65536)


def test_tor_examples_match() -> None:
    assert not P("reject *:25; accept *:*").allows("8.8.8.8", 25)
    assert P("reject *:25; accept *:*").allows("8.8.8.8", 26)
    netmask = P("reject 192.168.0.0/255.255.0.0:*; accept *:*")
    assert netmask == P("reject 192.168.0.0/16:*; accept *:*")
    assert not netmask.allows("192.168.44.1", 80)
    assert netmask.allows("192.169.0.1", 80)
    loop6 = P("accept [::1]:80")
    assert loop6.allows("::1", 80) and not loop6.allows("::1", 81) and not loop6.allows("127.0.0.1", 80)
    assert P("accept *:80,accept *:443,reject *:*").allows("8.8.8.8", 443)


def test_families() -> None:
    v6 = P("accept6 *:443")
    assert v6.allows("2606:4700::1111", 443)
    assert not v6.allows("8.8.8.8", 443)
    v4 = P("accept *4:443")
    assert v4.allows("8.8.8.8", 443)
    assert not v4.allows("2606:4700::1111", 443)
    both = P("accept *:443")
    assert both.allows("8.8.8.8", 443) and both.allows("2606:4700::1111", 443)
    assert not P("accept 0.0.0.0/0:*").allows("::1", 80)
    assert P("accept [::]/0:*").allows("2001:db8::1", 80)


def test_ipv4_mapped_addresses_match_as_ipv4() -> None:
    policy = P("reject 10.0.0.0/8:*; accept *:*")
    assert not policy.allows("::ffff:10.0.0.1", 80)
    assert policy.allows("::ffff:8.8.8.8", 80)
    assert P("accept [::ffff:10.0.0.0]/104:80").allows("10.1.2.3", 80)
    assert not P("accept6 *:*").allows("::ffff:8.8.8.8", 80)
    assert P("accept *4:*").allows("::ffff:8.8.8.8", 80)


def test_reject6_private_only_covers_ipv6() -> None:
    policy = P("reject6 private:*; accept *:*")
    assert not policy.allows("::1", 80)
    assert not policy.allows("fe80::1", 80)
    assert policy.allows("10.0.0.1", 80)
    assert policy.allows("::ffff:127.0.0.1", 80)  # really 127.0.0.1: an IPv4 destination


def test_default_policy_allows() -> None:
    policy = P(DEFAULT_EXIT_POLICY)
    for port in (25, 119, 135, 139, 445, 563, 1214, 4661, 4666, 6346, 6429, 6699, 6881, 6999):
        assert not policy.allows("8.8.8.8", port), port
    for port in (1, 22, 80, 134, 140, 443, 4660, 4667, 6345, 6430, 6698, 6700, 6880, 7000, 65535):
        assert policy.allows("8.8.8.8", port), port
        assert policy.allows(ipaddress.ip_address("2606:4700::1111"), port)


# --------------------------------------------------------------------------- port summaries


def test_allows_port_somewhere_default() -> None:
    policy = P(DEFAULT_EXIT_POLICY)
    assert policy.allows_port_somewhere(80)
    assert policy.allows_port_somewhere(443)
    assert not policy.allows_port_somewhere(25)
    assert not policy.allows_port_somewhere(6346)
    assert not policy.allows_port_somewhere(6429)
    assert policy.allows_port_somewhere(6430)
    assert not policy.allows_port_somewhere(0)
    assert not policy.allows_port_somewhere(65536)


@pytest.mark.parametrize(
    ("text", "port", "family", "expected"),
    [
        ("accept 1.2.3.4:80; reject *:*", 80, None, False),  # address-specific accepts don't count
        ("reject 1.2.3.0/24:80; accept *:80", 80, None, True),  # small rejects don't count
        ("reject private:*; accept *:443", 443, None, True),
        ("reject 10.0.0.0/8:*; reject 127.0.0.0/8:*; reject 0.0.0.0/8:*; accept *:*", 80, 4, True),
        ("reject [fc00::]/7:*; reject [fe80::]/10:*; accept *6:*", 80, 6, True),
        ("accept 10.0.0.0/8:22; reject *:*", 22, None, False),  # private-only accepts don't count
        ("accept private:22; reject *:*", 22, None, False),
        ("accept 0.0.0.0/0:80", 80, 4, True),
        ("accept 0.0.0.0/0:80", 80, 6, False),
        ("reject *4:80; accept *:*", 80, 4, False),
        ("reject *4:80; accept *:*", 80, 6, True),
        ("reject *4:80; accept *:*", 80, None, True),
        ("reject 0.0.0.0/7:80; accept *:*", 80, 4, False),
        ("reject 11.0.0.0/8:80; accept *:*", 80, 4, True),
        ("reject 11.0.0.0/8:80; reject 12.0.0.0/8:80; accept *:*", 80, 4, False),
        ("reject [2000::]/7:80; accept *:*", 80, 6, False),
        ("reject [2000::]/8:80; accept *:*", 80, 6, True),
        ("accept6 *:443", 443, 4, False),
        ("accept6 *:443", 443, None, True),
        ("", 80, None, False),
    ],
)
def test_allows_port_somewhere(text: str, port: int, family: int | None, expected: bool) -> None:
    assert P(text).allows_port_somewhere(port, family) is expected


@pytest.mark.parametrize(
    ("text", "summary"),
    [
        (DEFAULT_EXIT_POLICY, "reject 25,119,135-139,445,563,1214,4661-4666,6346-6429,6699,6881-6999"),
        ("accept *:80,443; reject *:*", "accept 80,443"),
        ("accept *:1000-2000; accept *:80; accept *:443; reject *:*", "accept 80,443,1000-2000"),
        ("accept *:80; accept *:81-90; reject *:*", "accept 80-90"),
        ("reject *:25,119", "reject 1-65535"),
        ("reject *:25,119; accept *:*", "reject 25,119"),
        ("", "reject 1-65535"),
        ("reject *:*", "reject 1-65535"),
        ("accept *:*", "accept 1-65535"),
        ("reject private:*; accept *:*", "accept 1-65535"),
        ("reject *:1; accept *:*", "reject 1"),
        ("accept *:1-65534", "reject 65535"),
        ("accept 1.2.3.4:*; reject *:*", "reject 1-65535"),
        ("reject 1.2.3.4:22; accept *:22; reject *:*", "accept 22"),
    ],
)
def test_summary(text: str, summary: str) -> None:
    policy = P(text)
    assert policy.summary() == summary
    for port in (1, 22, 25, 80, 443, 6346, 65535):
        assert summary_allows(summary, port) is policy.allows_port_somewhere(port)


def test_summary_per_family() -> None:
    policy = P("accept *4:80; accept *6:443; reject *:*")
    assert policy.summary() == "accept 80,443"
    assert policy.summary(4) == "accept 80"
    assert policy.summary(6) == "accept 443"


def test_summary_allows() -> None:
    assert summary_allows("accept 80,443,1000-2000", 1500)
    assert not summary_allows("accept 80,443,1000-2000", 81)
    assert not summary_allows("reject 25,119", 25)
    assert summary_allows("reject 25,119", 26)
    assert not summary_allows("reject 25", 0)
    assert not summary_allows("reject 1-65535", 80)


# --------------------------------------------------------------------------- hypothesis

POLICY_ALPHABET = "acceptrejc6ACEPTRJ *:;,\n-/[]0123456789.fx%privatePRIV\t"


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=200), st.text(alphabet=POLICY_ALPHABET, max_size=200)))
def test_arbitrary_text_only_raises_policy_error(text: str) -> None:
    try:
        policy = P(text)
    except PolicyError:
        return
    assert P(str(policy)) == policy


@settings(max_examples=300)
@given(st.text(alphabet=POLICY_ALPHABET, max_size=60), st.integers(-5, 70000))
def test_arbitrary_summary_only_raises_policy_error(text: str, port: int) -> None:
    with contextlib.suppress(PolicyError):
        summary_allows(text, port)


@st.composite
def port_ranges(draw: st.DrawFn) -> tuple[int, int]:
    lo = draw(st.sampled_from([1, 22, 25, 80, 443, 1024, 6346, 65535]) | st.integers(1, 65535))
    hi = draw(st.sampled_from([lo, 65535]) | st.integers(lo, min(65535, lo + 2000)))
    return lo, hi


@st.composite
def rules(draw: st.DrawFn) -> PolicyRule:
    accept = draw(st.booleans())
    lo, hi = draw(port_ranges())
    kind = draw(st.sampled_from(["*", "*4", "*6", "private", "private6", "v4", "v6"]))
    if kind in ("*", "*4", "*6"):
        return PolicyRule(accept, None, {"*": None, "*4": 4, "*6": 6}[kind], False, lo, hi)
    if kind.startswith("private"):
        return PolicyRule(accept, None, 6 if kind == "private6" else None, True, lo, hi)
    if kind == "v4":
        addr = draw(st.ip_addresses(v=4) | st.sampled_from([ipaddress.ip_address("10.1.2.3")]))
        net = ipaddress.ip_network((int(addr), draw(st.integers(0, 32))), strict=False)
    else:
        addr = draw(st.ip_addresses(v=6) | st.sampled_from([ipaddress.ip_address("fe80::1")]))
        net = ipaddress.ip_network((addr, draw(st.integers(0, 128))), strict=False)
        assume(not net.subnet_of(ipaddress.ip_network("::ffff:0:0/96")))
    return PolicyRule(accept, net, None, False, lo, hi)


policies = st.lists(rules(), max_size=12).map(lambda rs: ExitPolicy(tuple(rs)))
addresses = st.one_of(
    st.ip_addresses(),
    st.sampled_from([ipaddress.ip_address(a) for a in PRIVATE + PUBLIC if "%" not in a]),
)
ports = st.integers(1, 65535) | st.sampled_from([1, 22, 25, 80, 443, 6346, 65535])


@settings(max_examples=300)
@given(policies, st.lists(st.tuples(addresses, ports), min_size=1, max_size=10))
def test_generated_policies_round_trip(policy: ExitPolicy, probes: list[tuple[object, int]]) -> None:
    text = str(policy)
    again = P(text)
    assert again == policy
    assert str(again) == text
    for addr, port in probes:
        assert again.allows(addr, port) == policy.allows(addr, port)  # type: ignore[arg-type]
        assert policy.allows(str(addr), port) == policy.allows(addr, port)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(policies, st.sampled_from([", ", "\n", " ; "]), addresses, ports)
def test_separator_forms_parse_alike(policy: ExitPolicy, sep: str, addr: object, port: int) -> None:
    text = sep.join(str(rule) for rule in policy.rules)
    assert P(text) == policy
    assert P(text.upper()) == policy
    assert P(text).allows(addr, port) == policy.allows(addr, port)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(policies, st.lists(ports, min_size=1, max_size=20), st.sampled_from([None, 4, 6]))
def test_summary_consistent_with_allows_port_somewhere(
    policy: ExitPolicy, probe_ports: list[int], family: int | None
) -> None:
    summary = policy.summary(family)
    edges = [p for r in policy.rules for p in (r.port_lo - 1, r.port_lo, r.port_hi, r.port_hi + 1)]
    for port in [*probe_ports, *edges]:
        assert summary_allows(summary, port) is policy.allows_port_somewhere(port, family)


@settings(max_examples=200)
@given(policies, addresses, ports)
def test_first_match_semantics(policy: ExitPolicy, addr: object, port: int) -> None:
    decision = next((r.accept for r in policy.rules if r.matches(addr, port)), False)  # type: ignore[arg-type]
    assert policy.allows(addr, port) is decision  # type: ignore[arg-type]
