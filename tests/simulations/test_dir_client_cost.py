"""simulations/dir_client_cost.py in a small run, as CI runs it: it finishes and its figures are sane."""

from __future__ import annotations

import pytest

from simulations import dir_client_cost


def test_dir_client_cost_small(capsys: pytest.CaptureFixture[str]) -> None:
    assert dir_client_cost.main(["--relays", "300"]) == 0
    figures = {}
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("#"):
            name, value, _unit = line.split(" ", 2)
            figures[name] = float(value)
    # 300 relays: a snapshot of ~89 kB (22 cells); hourly: the diff and 5 one-cell messages.
    assert 80 < figures["sim.client_dir_first_start_bytes_300"] < 200
    assert 20 < figures["sim.client_dir_bytes_per_hour_300"] < figures["sim.client_dir_first_start_bytes_300"]
    # Entry guard(s) and 3 directory guards (a few more under the study's heavy churn), never all.
    assert 1 <= figures["sim.client_distinct_relays_contacted_per_day"] <= 10
    assert figures["sim.client_distinct_relays_contacted_first_day"] <= 13
