"""simulations/dir_relay_load.py in a small run, as CI runs it: it finishes, and its figures add
up (requests per source = clients x 3 / sources on average; load linear in the clients)."""

from __future__ import annotations

import pytest

from simulations import dir_relay_load


def test_dir_relay_load_small(capsys: pytest.CaptureFixture[str]) -> None:
    assert dir_relay_load.main(["--relays", "300", "--clients", "3000"]) == 0
    out = capsys.readouterr().out.splitlines()
    sources = int(out[0].split("(")[1].split()[0])
    figures = {}
    for line in out[1:]:
        name, value, _unit = line.split(" ", 2)
        figures[name] = float(value)
    # Every client sends 3 DIR_GETs an hour to its sources, plus 1 cross-check HEAD per relay.
    expected = 3000 * 3 / sources / 3600 + 3000 / 300 / 3600
    assert figures["sim.dir_source_gets_per_s_mean_300_3k"] == pytest.approx(expected, abs=1e-3)
    # Linear in the clients (the 3k figure is printed to 3 decimals: compare the 2m one).
    at_2m = figures["sim.dir_source_gets_per_s_mean_300_2m"]
    assert at_2m == pytest.approx(expected * 2_000_000 / 3000, rel=0.001)
    assert figures["sim.dir_busy_share_300_3k"] == 0.0  # far below every source's budget
    assert 0 < figures["sim.dir_doc_head_bytes_300"] < 1000 < figures["sim.dir_doc_diff_bytes_300"] * 1000
    assert figures["sim.dir_doc_snapshot_bytes_300"] > 50  # ~290 B per relay
