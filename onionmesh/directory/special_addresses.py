"""Which addresses no exit may reach for a client: IANA's special-purpose registries, in full.

The tables below are the IANA IPv4 and IPv6 Special-Purpose Address Registries (plus multicast
and the deprecated site-local range), each range with the RFC that reserves it.  Python's
``ipaddress`` properties are consulted as well, but only as a second net: they differ between
Python versions and miss ranges (3.11 calls 2002:7f00:1::1, 6to4 for 127.0.0.1, global).

IPv6 forms that carry an IPv4 address are judged by that address, because that is where a
packet to them ends up: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``),
6to4 (``2002:AABB:CCDD::/48``), Teredo (``2001:0:SERVER:FLAGS:PORT:~CLIENT``: both the server
and the client, whose address is stored XOR 0xffffffff) and the NAT64 well-known prefix
(``64:ff9b::a.b.c.d``).  The NAT64 local-use prefix 64:ff9b:1::/48 (RFC 8215) is refused whole:
a translator for it is by definition on the exit's own network, and where inside the /48 the
IPv4 address sits is the operator's choice.

Not in this module: policy rules (exit_policy), the relay's own addresses (runtime.relay.exit_rules).
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (range, RFC) — IANA IPv4 Special-Purpose Address Registry, multicast, limited broadcast.
IPV4_SPECIAL: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "RFC 791 §3.2: this network"),
    ("10.0.0.0/8", "RFC 1918: private use"),
    ("100.64.0.0/10", "RFC 6598: shared address space (CGN)"),
    ("127.0.0.0/8", "RFC 1122 §3.2.1.3: loopback"),
    ("169.254.0.0/16", "RFC 3927: link local"),
    ("172.16.0.0/12", "RFC 1918: private use"),
    ("192.0.0.0/24", "RFC 6890 §2.1: IETF protocol assignments (DS-Lite, PCP, TURN, NAT64 discovery)"),
    ("192.0.2.0/24", "RFC 5737: documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "RFC 7535: AS112-v4"),
    ("192.52.193.0/24", "RFC 7450: AMT"),
    ("192.88.99.0/24", "RFC 7526: deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "RFC 1918: private use"),
    ("192.175.48.0/24", "RFC 7534: direct delegation AS112 service"),
    ("198.18.0.0/15", "RFC 2544: benchmarking"),
    ("198.51.100.0/24", "RFC 5737: documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "RFC 5737: documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "RFC 5771: multicast"),
    ("240.0.0.0/4", "RFC 1112 §4: reserved"),
    ("255.255.255.255/32", "RFC 8190, RFC 919 §7: limited broadcast"),
)

# IANA IPv6 Special-Purpose Address Registry, refused whole (the forms that embed an IPv4
# address are in IPV6_EMBEDDING below, judged by what they embed).
IPV6_SPECIAL: tuple[tuple[str, str], ...] = (
    ("::/128", "RFC 4291: unspecified"),
    ("::1/128", "RFC 4291: loopback"),
    ("64:ff9b:1::/48", "RFC 8215: local-use IPv4/IPv6 translation"),
    ("100::/64", "RFC 6666: discard-only"),
    ("100:0:0:1::/64", "RFC 9780: dummy IPv6 prefix"),
    ("2001::/23", "RFC 2928: IETF protocol assignments (but Teredo, 2001::/32, below)"),
    ("2001:db8::/32", "RFC 3849: documentation"),
    ("2620:4f:8000::/48", "RFC 7534: direct delegation AS112 service"),
    ("3fff::/20", "RFC 9637: documentation"),
    ("5f00::/16", "RFC 9602: segment routing (SRv6) SIDs"),
    ("fc00::/7", "RFC 4193: unique local"),
    ("fe80::/10", "RFC 4291: link-local unicast"),
    ("fec0::/10", "RFC 3879: deprecated site-local"),
    ("ff00::/8", "RFC 4291: multicast"),
)

# IPv6 ranges that carry an IPv4 address: judged by it (see the module docstring).
IPV6_EMBEDDING: tuple[tuple[str, str], ...] = (
    ("::ffff:0:0/96", "RFC 4291 §2.5.5.2: IPv4-mapped"),
    ("::/96", "RFC 4291 §2.5.5.1: IPv4-compatible (deprecated)"),
    ("64:ff9b::/96", "RFC 6052: NAT64 well-known prefix"),
    ("2001::/32", "RFC 4380: Teredo"),
    ("2002::/16", "RFC 3056: 6to4"),
)

_V4: tuple[ipaddress.IPv4Network, ...] = tuple(ipaddress.IPv4Network(n) for n, _ in IPV4_SPECIAL)
_V6: tuple[ipaddress.IPv6Network, ...] = tuple(ipaddress.IPv6Network(n) for n, _ in IPV6_SPECIAL)
SPECIAL_NETWORKS: tuple[IPNetwork, ...] = (*_V4, *_V6)  # refused whole
EMBEDDING_NETWORKS: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(n) for n, _ in IPV6_EMBEDDING
)
_MAPPED, _COMPAT, _NAT64, _TEREDO, _6TO4 = EMBEDDING_NETWORKS


def as_address(addr: IPAddress | str) -> IPAddress:
    """Accept an address object or text; raises ValueError for text that is no IP address."""
    return ipaddress.ip_address(addr) if isinstance(addr, str) else addr


def embedded_v4(addr: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (empty if it is no such form).  ``::`` and
    ``::1`` are IPv6's own unspecified and loopback addresses, not IPv4-compatible ones."""
    value = int(addr)
    if addr in _MAPPED:
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if addr in _COMPAT:
        return (ipaddress.IPv4Address(value),) if value > 1 else ()
    if addr in _NAT64:
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if addr in _6TO4:
        return (ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF),)
    if addr in _TEREDO:  # server, then the client (stored inverted)
        return (
            ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF),
            ipaddress.IPv4Address((value & 0xFFFFFFFF) ^ 0xFFFFFFFF),
        )
    return ()


def _special_v4(ip: ipaddress.IPv4Address) -> bool:
    return (
        any(ip in net for net in _V4)
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def is_private_address(addr: IPAddress | str) -> bool:
    """True for addresses no exit should reach on a client's behalf: every range of IANA's
    special-purpose registries, multicast, and IPv6 forms whose embedded IPv4 address is one."""
    ip = as_address(addr)
    if isinstance(ip, ipaddress.IPv4Address):
        return _special_v4(ip)
    inner = embedded_v4(ip)
    if inner:
        return any(_special_v4(v4) for v4 in inner)
    if ip in _COMPAT:  # :: and ::1
        return True
    return (
        any(ip in net for net in _V6)
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_site_local
        or ip.is_private
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def is_loopback_address(addr: IPAddress | str) -> bool:
    """127.0.0.0/8, ::1, and IPv6 forms embedding a 127.x address (e.g. ``::ffff:127.0.0.1``)."""
    ip = as_address(addr)
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_loopback
    return ip.is_loopback or any(v4.is_loopback for v4 in embedded_v4(ip))


def same_host(addr: IPAddress | str, other: IPAddress | str) -> bool:
    """Do two addresses reach the same host: equal, or one an IPv6 form carrying the other?"""
    a, b = as_address(addr), as_address(other)
    forms_a = {a, *(embedded_v4(a) if isinstance(a, ipaddress.IPv6Address) else ())}
    forms_b = {b, *(embedded_v4(b) if isinstance(b, ipaddress.IPv6Address) else ())}
    return bool(forms_a & forms_b)
