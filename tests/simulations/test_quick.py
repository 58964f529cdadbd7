"""Each study's --quick mode, as CI runs it: it finishes, writes its PNG, and says sane things."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulations import dht_discovery, load_balance, path_compromise


def _rows(text: str, first: str) -> list[list[str]]:
    """The data rows of the printed table whose header starts with `first`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    out = []
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith(("plot:", "#")):
            break
        out.append(re.split(r"\s{2,}", line.strip()))
    return out


def _pct(cell: str) -> float:
    return float(cell.rstrip("%"))


def test_dht_discovery_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dht_discovery.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "dht_discovery.png").stat().st_size > 10_000
    rows = _rows(out, "nodes")
    # nodes sybil churn d lookups success hops queries datagrams forged ...
    honest = [r for r in rows if r[1] == "0.0%"]
    assert honest and all(_pct(r[5]) >= 95.0 for r in honest)  # ~100 %, one miss of 30 tolerated
    assert all(int(r[9]) == 0 for r in honest)  # nobody forges in an honest network
    attacked = [r for r in rows if r[1] == "20.0%"]
    assert attacked and any(int(r[9]) > 0 for r in attacked)  # forgeries were met and refused
    assert "rate-limited requests 0" in out


def test_path_compromise_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert path_compromise.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "path_compromise.png").stat().st_size > 10_000
    rows = _rows(out, "adv")
    # share view share-in-view exit-share guards clients circuits paths compromised day1 day7 day30 median
    zero = [r for r in rows if r[0] == "0.0%"]
    assert zero and all(_pct(r[8]) == 0.0 and _pct(r[11]) == 0.0 for r in zero)
    for guards in ("yes", "no"):
        by_share = sorted(
            (_pct(r[0]), _pct(r[8]), _pct(r[11])) for r in rows if r[4] == guards and r[1] == "full"
        )
        circuits = [c for _, c, _ in by_share]
        assert circuits == sorted(circuits) and circuits[-1] > 1.0  # more adversary, more compromise
    no_guards_30 = next(r for r in rows if r[4] == "no" and _pct(r[0]) > 25)
    guards_30 = next(r for r in rows if r[4] == "yes" and _pct(r[0]) > 25)
    assert _pct(guards_30[11]) < _pct(no_guards_30[11])  # guards protect most clients
    # The Johnson-style rows: 180 days, the adversary's weight split 5:1 between non-exits and exits.
    (johnson,) = _rows(out, "johnson")
    # share split exit-share clients circuits paths compromised day1 day7 day30 day90 day180 median
    # adv-exit-day1 adv-guard-day180
    assert int(johnson[5]) > 0 and _pct(johnson[6]) > 0.0
    by_day = [_pct(c) for c in johnson[7:12]]
    assert by_day == sorted(by_day) and by_day[-1] > 0.0
    assert by_day[-1] <= _pct(johnson[14])  # only a client with an adversary guard is compromised
    assert _pct(johnson[13]) > by_day[0]  # adversary exits come far sooner than its guards


def test_johnson_split_directory() -> None:
    """The Johnson-style adversary holds its share of all weight, 5:1 between non-exits and exits."""
    from simulations.consensus import make_population, weight_share

    population = make_population(1000, 166, seed=2)
    relays, adversary = population.split_directory(1000, 0.1, 5.0)
    descs = [r.descriptor for r in relays]
    assert len(descs) == 1000
    non_exits = {d.fingerprint for d in descs if d.fingerprint in adversary and not d.is_exit}
    total, guard_side = weight_share(descs, adversary), weight_share(descs, non_exits)
    assert total == pytest.approx(0.1, abs=0.01)
    assert guard_side / (total - guard_side) == pytest.approx(5.0, rel=0.25)


def test_load_balance_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_balance.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "load_balance.png").stat().st_size > 10_000
    rows = {(r[0], r[1]): r for r in _rows(out, "liars")}
    # liars-lie group relays capacity-share traffic-share utilisation
    assert _pct(rows[("no", "all relays")][5]) == pytest.approx(50.0, abs=0.5)
    assert _pct(rows[("no", "all relays")][4]) == pytest.approx(100.0, abs=0.5)
    truthful = _pct(rows[("no", "liars (advertise 10x)")][5])
    lying = _pct(rows[("yes", "liars (advertise 10x)")][5])
    assert lying > 4 * truthful  # a 10x lie below the cap buys about 10x the traffic


def test_primary_guards_hold_for_the_30_simulated_days() -> None:
    """path_compromise draws each client's guards once: true only if `primary` is stable for 30
    days when the directory does not change (guards live 120 days less at most a tenth)."""
    from onionmesh.directory.guards import GuardSet
    from simulations.consensus import make_population
    from simulations.relays import EPOCH, PyRng
    from simulations.user_model import DAY

    population = make_population(300, 30, seed=3)
    relays, _adversary = population.directory(300, 0.1)
    descs = [r.descriptor for r in relays]
    for seed in range(20):
        guards = GuardSet(rng=PyRng(seed))
        first = guards.primary(EPOCH, descs)
        assert guards.primary(EPOCH + 30 * DAY, descs) == first
