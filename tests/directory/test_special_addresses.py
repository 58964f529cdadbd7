"""Private addresses in disguise: every special-purpose range, and IPv4 carried inside IPv6.

Issue 15, item 5: ``2002:7f00:1::1`` (6to4 for 127.0.0.1) was judged public, so an exit without
--allow-private-destinations tried to reach it.  Every address of every range in IANA's
special-purpose registries is refused, and so is every wrapper around a refused IPv4 address.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.directory.exit_policy import ExitPolicy
from onionmesh.directory.special_addresses import (
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    embedded_v4,
    is_loopback_address,
    is_private_address,
    same_host,
)

OPEN = ExitPolicy.parse("reject private:*; accept *:*")
V4_RANGES = [ipaddress.IPv4Network(n) for n, _ in IPV4_SPECIAL]
V6_RANGES = [ipaddress.IPv6Network(n) for n, _ in IPV6_SPECIAL]
PUBLIC_V4 = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "11.0.0.1", "100.63.255.255", "100.128.0.1",
             "172.15.255.255", "172.32.0.1", "192.0.1.1", "192.0.3.1", "198.17.255.255", "198.20.0.1",
             "198.51.99.1", "203.0.112.1", "223.255.255.255", "192.88.98.1", "192.31.197.1"]  # fmt: skip
PUBLIC_V6 = ["2001:4860:4860::8888", "2606:4700::1111", "2a00:1450:4001::200e", "2001:200::1",
             "2620:4f:8001::1", "3ffe::1", "2001:db9::1", "2400:cb00::1"]  # fmt: skip


def _in(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> st.SearchStrategy[str]:
    lo, size = int(net.network_address), net.num_addresses
    factory = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    return st.integers(0, size - 1).map(lambda i: str(factory(lo + i)))


any_special = st.one_of(*(_in(n) for n in V4_RANGES + V6_RANGES))
private_v4 = st.one_of(*(_in(n) for n in V4_RANGES)).map(ipaddress.IPv4Address)
public_v4 = st.sampled_from(PUBLIC_V4).map(ipaddress.IPv4Address)


def _wrappers(v4: ipaddress.IPv4Address, low: int, port: int) -> list[str]:
    """Every IPv6 form that carries v4; `low` and `port` fill the bits that do not matter."""
    n = int(v4)
    server = int(ipaddress.IPv4Address("65.54.227.120"))  # a Teredo server
    return [
        str(ipaddress.IPv6Address((0xFFFF << 32) | n)),  # ::ffff:a.b.c.d
        str(ipaddress.IPv6Address(n)) if n > 1 else "::ffff:0:0",  # ::a.b.c.d (compatible)
        str(ipaddress.IPv6Address((0x64FF9B << 96) | n)),  # NAT64 well-known prefix
        str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | low)),  # 6to4
        str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | (port << 32) | (n ^ 0xFFFFFFFF))),
        str(ipaddress.IPv6Address((0x20010000 << 96) | (n << 64) | (port << 32) | 0x9ECFFFFF)),  # as server
    ]


@given(any_special)
def test_every_address_of_every_special_range_is_refused(addr: str) -> None:
    assert is_private_address(addr)
    assert not OPEN.allows(addr, 443)


@given(private_v4, st.integers(0, (1 << 80) - 1), st.integers(0, 0xFFFFFFFF))
def test_a_private_ipv4_address_in_any_ipv6_wrapper_is_refused(
    v4: ipaddress.IPv4Address, low: int, port: int
) -> None:
    for form in _wrappers(v4, low, port):
        assert is_private_address(form), form
        assert not OPEN.allows(form, 80), form


@given(public_v4, st.integers(0, (1 << 80) - 1), st.integers(0, 0xFFFFFFFF))
def test_a_public_ipv4_address_in_a_wrapper_is_judged_by_it(
    v4: ipaddress.IPv4Address, low: int, port: int
) -> None:
    forms = _wrappers(v4, low, port)[:5]  # the last puts v4 as the Teredo server, the client private
    for form in forms:
        assert not is_private_address(form), form
        assert v4 in embedded_v4(ipaddress.IPv6Address(form))


@pytest.mark.parametrize("addr", PUBLIC_V4 + PUBLIC_V6)
def test_known_public_addresses_are_accepted(addr: str) -> None:
    assert not is_private_address(addr)
    assert OPEN.allows(addr, 443)


@pytest.mark.parametrize(
    "addr",
    ["2002:7f00:1::1", "2002:a00:1::", "2002:c0a8:101::1", "2001:0:4136:e378:8000:63bf:80ff:fffe",
     "2001:0:a00:1:0:0:3ebc:bfd7", "64:ff9b:1::8.8.8.8", "64:ff9b:1:ffff::1", "::7f00:1", "::ffff:7f00:1",
     "64:ff9b::7f00:1", "::", "::1", "100::1", "2001:2::1", "2001:10::1", "5f00::1", "3fff:fff::1",
     "2620:4f:8000::1", "192.0.0.9", "192.88.99.1", "192.175.48.1", "192.52.193.1"],
)  # fmt: skip
def test_disguised_private_addresses_from_the_audit(addr: str) -> None:
    """2002:7f00:1::1 is 6to4 for 127.0.0.1; 2001:0:4136:e378:8000:63bf:80ff:fffe is Teredo whose
    client, stored inverted, is 127.0.0.1."""
    assert is_private_address(addr)


def test_loopback_through_wrappers() -> None:
    assert is_loopback_address("2002:7f00:1::1")
    assert is_loopback_address("2001:0:4136:e378:8000:63bf:80ff:fffe")
    assert not is_loopback_address("2002:808:808::1")
    assert not is_loopback_address("::")


def test_same_host_sees_through_wrappers() -> None:
    assert same_host("93.184.216.34", "::ffff:93.184.216.34")
    assert same_host("2002:5db8:d822::1", "93.184.216.34")
    assert same_host("2606:4700::1111", "2606:4700::1111")
    assert not same_host("93.184.216.34", "93.184.216.35")
