"""The country of an address, from a table the client holds: never from what a relay says.

Tor's formats are read as they are (torproject/tor src/config/geoip, geoip6; Debian `tor-geoipdb`):

* IPv4 (`GeoIPFile`): `INTLOW,INTHIGH,CC` per line, the bounds as decimal integers, inclusive;
  Tor's older quoted form `"INTLOW","INTHIGH","CC",...` is accepted too.
* IPv6 (`GeoIPv6File`): `IPV6LOW,IPV6HIGH,CC` per line, the bounds as IPv6 addresses.

Lines starting with `#` and blank lines are skipped.  A line that does not parse is an error
naming its number (an operator's file with a typo must not silently map fewer addresses).
Overlapping ranges are refused for the same reason: which one wins would be an accident of order.

`GeoIP` answers with a table per family when it has one and otherwise asks a fallback lookup
(the packaged database, wired in at the edge: runtime/client/geoip_source.py).  A country is an
upper-case ISO 3166-1 alpha-2 code; "??" means unknown, as in Tor's `{??}`.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from onionmesh.errors import GeoIPError

UNKNOWN = "??"
MAX_LINE = 200  # a GeoIP line is ~40 bytes; a longer one is not a GeoIP line


def _cc(text: str, lineno: int) -> str:
    cc = text.strip().strip('"').upper()
    if len(cc) != 2 or (cc != UNKNOWN and not (cc.isascii() and cc.isalpha())):
        raise GeoIPError(f"line {lineno}: country code must be two letters, got {cc[:8]!r}")
    return cc


@dataclass(frozen=True)
class GeoIPTable:
    """Sorted, non-overlapping inclusive ranges of one address family, each with its country."""

    version: int
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    codes: tuple[str, ...] = ()

    @classmethod
    def from_ranges(cls, version: int, ranges: Iterable[tuple[int, int, str]]) -> GeoIPTable:
        rows = sorted(ranges)
        for (_lo1, hi1, _), (lo2, _hi2, _) in itertools.pairwise(rows):
            if lo2 <= hi1:
                raise GeoIPError(f"ranges overlap at {_show(version, lo2)}")
        return cls(version, tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows))

    @classmethod
    def parse_v4(cls, text: str) -> GeoIPTable:
        """Tor's GeoIPFile: `INTLOW,INTHIGH,CC`."""
        rows = []
        for lineno, low, high, cc in _lines(text):
            try:
                lo, hi = int(low), int(high)
            except ValueError:
                raise GeoIPError(f"line {lineno}: bounds must be decimal integers") from None
            rows.append(_checked(4, lo, hi, cc, lineno))
        return cls.from_ranges(4, rows)

    @classmethod
    def parse_v6(cls, text: str) -> GeoIPTable:
        """Tor's GeoIPv6File: `IPV6LOW,IPV6HIGH,CC`."""
        rows = []
        for lineno, low, high, cc in _lines(text):
            try:
                lo, hi = int(ipaddress.IPv6Address(low)), int(ipaddress.IPv6Address(high))
            except ValueError:
                raise GeoIPError(f"line {lineno}: bounds must be IPv6 addresses") from None
            rows.append(_checked(6, lo, hi, cc, lineno))
        return cls.from_ranges(6, rows)

    def lookup(self, value: int) -> str | None:
        i = bisect.bisect_right(self.starts, value) - 1
        if i >= 0 and value <= self.ends[i]:
            return self.codes[i]
        return None

    def __len__(self) -> int:
        return len(self.starts)


def _show(version: int, value: int) -> str:
    return str(ipaddress.ip_address(value) if version == 4 else ipaddress.IPv6Address(value))


def _checked(version: int, lo: int, hi: int, cc: str, lineno: int) -> tuple[int, int, str]:
    top = (1 << 32) - 1 if version == 4 else (1 << 128) - 1
    if not 0 <= lo <= hi <= top:
        raise GeoIPError(f"line {lineno}: need 0 <= low <= high <= {top}")
    return lo, hi, _cc(cc, lineno)


def _lines(text: str) -> Iterable[tuple[int, str, str, str]]:
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_LINE:
            raise GeoIPError(f"line {lineno}: longer than {MAX_LINE} characters")
        parts = [p.strip().strip('"') for p in line.split(",")]
        if len(parts) < 3:
            raise GeoIPError(f"line {lineno}: expected LOW,HIGH,CC")
        yield lineno, parts[0], parts[1], parts[2]


@dataclass
class GeoIP:
    """Country of an address: the family's table if loaded (an override replaces the package for
    that family, as Tor's GeoIPFile does), else `fallback` (the packaged database), else "??"."""

    v4: GeoIPTable | None = None
    v6: GeoIPTable | None = None
    fallback: Callable[[str], str | None] | None = None
    source: str = "none"  # what answers, in words, for status output
    files: tuple[str, str] = ("", "")  # the GeoIPFile, GeoIPv6File it was read from ("": none)
    _cache: dict[str, str] = field(default_factory=dict, repr=False)

    def available(self, version: int) -> bool:
        """Does anything answer for this address family (Tor's `ip-to-country/ipv4-available`)?"""
        return (self.v4 if version == 4 else self.v6) is not None or self.fallback is not None

    def country(self, ip: str) -> str:
        """Upper-case two-letter code of `ip`, or "??" (unknown, private or not an address)."""
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        cc = self._country(ip)
        if len(self._cache) >= 65536:  # relay addresses are few; a flood of distinct ones is not
            self._cache.clear()
        self._cache[ip] = cc
        return cc

    def _country(self, ip: str) -> str:
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return UNKNOWN
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        table = self.v4 if addr.version == 4 else self.v6
        if table is not None:
            return table.lookup(int(addr)) or UNKNOWN
        if self.fallback is not None:
            try:
                cc = self.fallback(str(addr))
            except (ValueError, TypeError):
                return UNKNOWN
            if isinstance(cc, str) and len(cc) == 2 and cc.isascii() and cc.isalpha():
                return cc.upper()
        return UNKNOWN
