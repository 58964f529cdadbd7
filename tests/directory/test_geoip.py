"""Tests for onionmesh.directory.geoip: Tor's GeoIPFile / GeoIPv6File formats and lookups."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.directory.geoip import UNKNOWN, GeoIP, GeoIPError, GeoIPTable

TOR_V4 = """# Last updated based on January 12 2023 Maxmind GeoLite2 Country
# wc -l geoip = 164955
16777216,16777471,AU
16777472,16778239,CN
"""
TOR_V6 = """# Last updated ...
2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP
2001:67c:2e8::,2001:67c:2e8:ffff:ffff:ffff:ffff:ffff,NL
"""

codes = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)


@st.composite
def disjoint_ranges(draw: st.DrawFn, bits: int) -> list[tuple[int, int, str]]:
    """Sorted disjoint inclusive ranges over a `bits`-bit space."""
    cuts = sorted(draw(st.sets(st.integers(0, (1 << bits) - 1), min_size=2, max_size=40)))
    out = []
    for lo, hi in zip(cuts[::2], cuts[1::2], strict=False):
        out.append((lo, hi, draw(codes)))
    return out


def v4_text(rows: list[tuple[int, int, str]]) -> str:
    return "".join(f"{lo},{hi},{cc}\n" for lo, hi, cc in rows)


def v6_text(rows: list[tuple[int, int, str]]) -> str:
    return "".join(f"{ipaddress.IPv6Address(lo)},{ipaddress.IPv6Address(hi)},{cc}\n" for lo, hi, cc in rows)


def test_tor_files_as_shipped() -> None:
    geo = GeoIP(GeoIPTable.parse_v4(TOR_V4), GeoIPTable.parse_v6(TOR_V6))
    assert geo.country("1.0.0.1") == "AU"  # 16777217
    assert geo.country("1.0.1.0") == "CN"
    assert geo.country("1.0.4.0") == UNKNOWN  # past the last range
    assert geo.country("2001:200::1") == "JP"
    assert geo.country("2001:67c:2e8:1::1") == "NL"
    assert geo.country("::ffff:1.0.0.9") == "AU"  # IPv4-mapped judged as IPv4
    assert geo.country("not an address") == UNKNOWN


def test_tor_old_quoted_form() -> None:
    table = GeoIPTable.parse_v4('"16777216","16777471","AU","Australia"\n')
    assert table.lookup(16777300) == "AU"


@given(disjoint_ranges(32), st.lists(st.integers(0, (1 << 32) - 1), max_size=30))
def test_v4_lookup_matches_a_linear_scan(rows: list[tuple[int, int, str]], probes: list[int]) -> None:
    table = GeoIPTable.parse_v4(v4_text(rows))
    assert len(table) == len(rows)
    for value in probes + [lo for lo, _, _ in rows] + [hi for _, hi, _ in rows]:
        want = next((cc for lo, hi, cc in rows if lo <= value <= hi), None)
        assert table.lookup(value) == want


@given(disjoint_ranges(128), st.lists(st.integers(0, (1 << 128) - 1), max_size=30))
def test_v6_lookup_matches_a_linear_scan(rows: list[tuple[int, int, str]], probes: list[int]) -> None:
    table = GeoIPTable.parse_v6(v6_text(rows))
    geo = GeoIP(v6=table)
    for value in probes + [hi for _, hi, _ in rows]:
        want = next((cc for lo, hi, cc in rows if lo <= value <= hi), None)
        addr = ipaddress.IPv6Address(value)
        if addr.ipv4_mapped is None:
            assert geo.country(str(addr)) == (want or UNKNOWN)


@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_raises_geoip_error(text: str) -> None:
    for parse in (GeoIPTable.parse_v4, GeoIPTable.parse_v6):
        try:
            table = parse(text)
        except GeoIPError:
            continue
        assert list(table.starts) == sorted(table.starts)
        assert all(lo <= hi for lo, hi in zip(table.starts, table.ends, strict=True))


@pytest.mark.parametrize(
    "text",
    [
        "1,2\n",  # no country
        "x,2,DE\n",  # not an integer
        "5,4,DE\n",  # low > high
        "0,4294967296,DE\n",  # past 2**32 - 1
        "1,2,DEU\n",  # three letters
        "1,10,DE\n5,20,FR\n",  # overlap
    ],
)
def test_bad_v4_lines_are_refused_with_their_line(text: str) -> None:
    with pytest.raises(GeoIPError):
        GeoIPTable.parse_v4(text)


def test_override_replaces_the_fallback_per_family() -> None:
    calls: list[str] = []

    def packaged(ip: str) -> str | None:
        calls.append(ip)
        return "us"

    geo = GeoIP(GeoIPTable.parse_v4("2130771968,2130837503,DE\n"), None, packaged)  # 127.1.0.0/16
    assert geo.country("127.1.0.1") == "DE"
    assert geo.country("127.9.0.1") == UNKNOWN  # the v4 file answers for all IPv4, as Tor's GeoIPFile
    assert geo.country("2001:db8::1") == "US"  # no v6 file: the packaged database, upper-cased
    assert calls == ["2001:db8::1"]


def test_fallback_garbage_is_unknown() -> None:
    assert GeoIP(fallback=lambda ip: "not a code").country("8.8.8.8") == UNKNOWN
    assert GeoIP(fallback=lambda ip: None).country("8.8.8.8") == UNKNOWN
    assert GeoIP().country("8.8.8.8") == UNKNOWN
