"""`onionmesh circuit list/show` print each hop's country code AND name (the control API's
`country`, `country_name`, judged by the client's own GeoIP database)."""

from __future__ import annotations

from typing import Any

from onionmesh.app.control_cli import format_circuit, format_hop_table


def circuit(countries: list[tuple[str, str]]) -> dict[str, Any]:
    hops = [
        {
            "fingerprint": f"{i:040X}",
            "nickname": f"relay{i}",
            "address": f"127.{i}.0.1:9001",
            "country": cc,
            "country_name": name,
            "rtt_ms": 1.5,
            "layer": "aes128-ctr",
            "exit": i == len(countries),
        }
        for i, (cc, name) in enumerate(countries, 1)
    ]
    return {"id": 7, "state": "open", "age_s": 3.0, "streams": 1, "bytes_in": 10, "bytes_out": 5,
            "hops": hops, "isolation": None}  # fmt: skip


def test_list_and_show_name_each_hops_country() -> None:
    c = circuit([("DE", "Germany"), ("SE", "Sweden"), ("FR", "France")])
    line = format_circuit(c)
    assert "relay1[DE Germany](127.1.0.1:9001) -> relay2[SE Sweden]" in line
    assert line.endswith("relay3[FR France](127.3.0.1:9001)")
    table = format_hop_table(c).splitlines()
    assert [row.split()[4:6] for row in table[1:]] == [["DE", "Germany"], ["SE", "Sweden"], ["FR", "France"]]


def test_an_unknown_country_is_said_so() -> None:
    c = circuit([("??", "unknown"), ("US", "United States")])
    assert "relay1[?? unknown]" in format_circuit(c)
    assert "?? unknown" in format_hop_table(c)
