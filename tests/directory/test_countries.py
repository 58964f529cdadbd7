"""Every country code the client's GeoIP data can return has a name (directory/countries.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from onionmesh.directory.countries import NAMES, country_name

TOR_GEOIP = [Path("/usr/share/tor/geoip"), Path("/usr/share/tor/geoip6")]  # Debian tor-geoipdb


def test_names_are_two_letter_codes_with_text() -> None:
    assert len(NAMES) >= 249  # all of ISO 3166-1
    assert all(len(cc) == 2 and cc.isupper() and name.strip() for cc, name in NAMES.items())
    assert country_name("de") == "Germany" and country_name("FR") == "France"
    assert country_name("??") == "unknown" and country_name("QQ") == "unknown"


def test_every_code_the_packaged_database_returns_has_a_name() -> None:
    iptocc = pytest.importorskip("iptocc")
    # one address in every IPv4 /20, and 16 in every /16 of 2000::/4 (the global unicast space)
    v4 = [str(ipaddress.IPv4Address(n << 12 | 1)) for n in range(1 << 20)]
    v6 = [
        str(ipaddress.IPv6Address((0x2000 + a) << 112 | b << 100 | 1))
        for a in range(0x1000)
        for b in range(16)
    ]
    codes = {cc.upper() for cc in iptocc.country_code(v4 + v6) if cc}
    assert len(codes) > 200  # the sample reached the registries' delegations
    assert codes - set(NAMES) == set()


@pytest.mark.parametrize("path", TOR_GEOIP, ids=lambda p: p.name)
def test_every_code_in_tors_geoip_file_has_a_name(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is not installed (apt-get install tor-geoipdb)")
    codes = set()
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            codes.add(line.rsplit(",", 1)[1].strip().upper())
    assert len(codes) > 200
    assert {cc for cc in codes if cc != "??"} - set(NAMES) == set()
