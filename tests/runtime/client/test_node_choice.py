"""runtime.client.node_choice: loading GeoIP files at the edge, and changing the node restrictions
at run time (what the Tor control port's SETCONF ExitNodes will call)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from onionmesh.directory.geoip import GeoIPError
from onionmesh.directory.node_restrictions import NodeRestrictions
from onionmesh.errors import DirectoryError
from onionmesh.rng import SeededRng
from onionmesh.runtime.client.node_choice import load_geoip, set_restrictions
from onionmesh.runtime.client.path_policy import PathPolicy
from tests.helpers.descriptors import relay

V4 = "167837696,167903231,DE\n167903232,167968767,FR\n"  # 10.1.0.0/16 DE, 10.2.0.0/16 FR
V6 = "2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,NL\n"


def test_files_override_the_packaged_database(tmp_path: Path) -> None:
    (tmp_path / "g4").write_text(V4)
    (tmp_path / "g6").write_text(V6)
    geo = load_geoip(tmp_path / "g4", tmp_path / "g6")
    assert (geo.country("10.1.2.3"), geo.country("10.2.0.1"), geo.country("2001:db8::5")) == (
        "DE",
        "FR",
        "NL",
    )
    assert geo.country("8.8.8.8") == "??"  # the v4 file answers for all of IPv4, as Tor's GeoIPFile
    assert "g4 (2 ranges)" in geo.source


def test_packaged_database_answers_without_files() -> None:
    pytest.importorskip("iptocc")
    geo = load_geoip()
    assert geo.country("8.8.8.8") == "US"
    assert geo.country("127.0.0.1") == "??"


def test_a_bad_file_is_an_error_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("1,2,DE\nthree,4,FR\n")
    with pytest.raises(GeoIPError, match="line 2"):
        load_geoip(tmp_path / "bad")


def handle(number: int, path: list, isolation: object = (None, None)) -> SimpleNamespace:
    """What set_restrictions reads of a CircuitHandle (its path and isolation) and writes."""
    return SimpleNamespace(number=number, path=path, exit=path[-1], isolation=isolation, dirty_since=None)


def test_setting_restrictions_at_run_time_retires_circuits_that_break_them(tmp_path: Path) -> None:
    (tmp_path / "g4").write_text(V4)
    policy = PathPolicy(None, SeededRng(1))
    policy.geoip = load_geoip(tmp_path / "g4")
    de, fr, mid = relay(1, "10.1.0.1"), relay(2, "10.2.0.1"), relay(3, "10.2.5.1")
    circuits = {
        1: handle(1, [mid, fr, de]),
        2: handle(2, [mid, de, fr]),
        3: handle(3, [de, mid, fr], (b"exit={fr}", None)),
    }
    mgr = SimpleNamespace(circuits=circuits)
    assert set_restrictions(policy, mgr, NodeRestrictions.parse(exit_nodes="{de}")) == 1
    assert circuits[2].dirty_since is not None  # exit FR breaks ExitNodes {de}
    assert circuits[1].dirty_since is None and circuits[3].dirty_since is None  # 3: its username wins
    assert policy.restrictions.exit_nodes.countries == {"DE"}
    assert set_restrictions(policy, mgr, NodeRestrictions.parse(exclude_nodes="{de}")) == 3
    other = relay(4, "10.9.0.1")  # unknown country: out too once ExcludeNodes names a country (auto)
    assert policy.choose([de, fr, other], hops=1, port=80, exit_fp=fr.fingerprint) == [fr]
    with pytest.raises(DirectoryError):  # only fr and mid are left, and they share 10.2.0.0/16
        policy.choose([de, fr, mid, other], hops=2, port=80)
