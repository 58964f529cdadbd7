"""Each study's --quick mode, as CI runs it: it finishes, writes its PNG, and says sane things."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from onionmesh.directory.descriptor import RelayDescriptor
from simulations import dht_discovery, load_balance, path_compromise
from simulations.path_compromise import SharedPaths


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
    # Stage 5: the view-seeded lookup (mode "view") and the view-seeded iterative one ("4v").
    view = [r for r in attacked if r[3] == "view"]
    assert view and all(_pct(r[5]) >= 95.0 for r in view)
    metrics = dict(line.split()[:2] for line in out.splitlines() if line.startswith("sim."))
    assert float(metrics["sim.lookup_success_300_s20_churn"]) >= 0.95
    assert "sim.lookup_iterative_success_300_s20_churn" in metrics
    assert float(metrics["sim.lookup_queries_300_s20_churn"]) <= 16  # at most the 16 replicas


def test_path_compromise_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert path_compromise.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "path_compromise.png").stat().st_size > 10_000
    rows = _rows(out, "adv")
    # share view share-in-view exit-share guards clients circuits paths compromised day1 day7 day30 median
    # adv-1st-guard
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
    for r in rows:  # every client whose hop-1 guard is the adversary's meets an adversary exit
        if r[4] == "yes":
            assert _pct(r[11]) >= _pct(r[13])
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
    # Stage 4: with measured weights the liars lose most of what the lie bought (fluid figures).
    metrics = {
        k: float(v) for k, v, *_ in (line.split() for line in out.splitlines() if line.startswith("sim."))
    }
    assert (
        metrics["sim.load_liar_utilisation_measured_fluid"]
        < 0.6 * metrics["sim.load_liar_utilisation_selfreport_fluid"]
    )
    assert metrics["sim.load_honest_small_utilisation_measured_fluid"] > 0.3


def test_path_compromise_overclaim_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert path_compromise.main(["--quick", "--overclaim", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    metrics = {
        k: float(v) for k, v, *_ in (line.split() for line in out.splitlines() if line.startswith("sim."))
    }
    self_report = metrics["sim.adversary_weight_share_s10_overclaim_selfreport"]
    measured = metrics["sim.adversary_weight_share_s10_overclaim_measured"]
    assert self_report > 4 * metrics["sim.adversary_weight_share_s10_full"]  # the lie works on self-reports
    assert measured < 0.6 * self_report  # and mostly not on measured weights


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


def _shared_paths(share: float, size: int) -> tuple[list[RelayDescriptor], set[str], SharedPaths]:
    from simulations.consensus import make_population
    from simulations.relays import PyRng

    population = make_population(1000, 166, seed=4)
    relays, adversary = population.directory(1000, share)
    descs = [r.descriptor for r in relays]
    return descs, adversary, SharedPaths(descs, adversary, size, PyRng(4))


def test_adversary_entry_guard_meets_an_adversary_exit_within_hundreds_of_circuits() -> None:
    """Each circuit draws its own exit: a client whose hop-1 guard is the adversary's and who
    builds 300 circuits meets an adversary exit (36 % of exit weight) and is compromised; the
    old study gave each client 4 guarded paths, so about 0.64**4 = 17 % of such clients were
    counted safe for the whole month."""
    import random

    from simulations.consensus import weight_share

    descs, adversary, paths = _shared_paths(0.1, 200)
    exit_share = weight_share(descs, adversary, exits_only=True)
    assert exit_share > 0.3
    honest = [d.fingerprint for d in descs if d.fingerprint not in adversary]
    evil = sorted(adversary)
    circuits = [3600.0 * i for i in range(300)]
    rng = random.Random(5)
    rates = []
    for c in range(40):
        primary = [evil[c % len(evil)], honest[2 * c], honest[2 * c + 1]]
        client = paths.client(circuits, rng, [(0.0, primary)])
        assert client.first is not None and client.first_exit is not None
        assert client.first == client.first_exit  # its first adversary exit is its compromise
        rates.append(client.bad / len(circuits))
    assert sum(rates) / len(rates) == pytest.approx(exit_share, abs=0.1)  # the pool's exit share
    safe = paths.client(circuits, rng, [(0.0, honest[100:103])])
    assert safe.bad == 0 and safe.first is None and safe.first_exit is not None


def test_cached_hop1_is_select_paths_hop1() -> None:
    """SharedPaths.hop1 calls select_path once per guards and conflict pattern: for every exit of
    the pool, a direct select_path with the same guards and exit gives the same hop 1."""
    from onionmesh.directory.path_selection import PathRequest, select_path
    from simulations.relays import PyRng

    descs, adversary, paths = _shared_paths(0.3, 120)
    exits = sorted({e for _h, e in paths.paths})
    honest = [d.fingerprint for d in descs if d.fingerprint not in adversary]
    adv_exit = next(e for e in exits if e in adversary)
    patterns = set()
    for primary in ((adv_exit, honest[0], honest[1]), (honest[2], adv_exit, honest[3])):
        for exit_fp in exits:
            conflicts = paths.conflicts(primary, exit_fp)
            patterns.add(conflicts)
            req = PathRequest(port=443, guards=primary, exit_fp=exit_fp)
            direct = select_path(descs, req, PyRng(len(patterns)))[0].fingerprint
            assert paths.hop1(primary, exit_fp, conflicts) == direct
    assert (True, False, False) in patterns  # the exit is the first guard: hop 1 is the second
    assert paths.real_paths < 120 + 2 * 4  # one call per guards and pattern, not per exit


def test_exit_country_quick(capsys: pytest.CaptureFixture[str]) -> None:
    from simulations import exit_country

    assert exit_country.main(["--quick"]) == 0
    lines = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
    figure = {name: float(text.split()[0]) for name, text in lines.items()}
    shares = [figure[f"pin_{cc}.exit_weight_share"] for cc in exit_country.PINS]
    assert shares == sorted(shares, reverse=True) and abs(shares[0] - 33.0) < 2  # the cited shares hold
    # pinning narrows the choice: fewer exits, fewer effective ones, a larger top exit; smaller
    # countries narrow it more and carry more load when the same share of users pins them
    for cc in exit_country.PINS:
        assert figure[f"pin_{cc}.exits"] < figure["nopin.exits"]
        assert figure[f"pin_{cc}.effective_exits"] < figure["nopin.effective_exits"]
        assert figure[f"pin_{cc}.top_exit_probability"] > figure["nopin.top_exit_probability"]
    loads = [figure[f"pin_{cc}.load_factor_at_10pct_pinning"] for cc in exit_country.PINS]
    assert loads == sorted(loads) and loads[0] > 1
    # an adversary whose exits sit in the pinned country holds more of the user's exits and
    # compromises more circuits than one spread like everyone
    for cc in exit_country.PINS:
        spread, inside = f"pin_{cc}.spread", f"pin_{cc}.in_country"
        assert figure[f"{inside}.adversary_exit_probability"] > figure[f"{spread}.adversary_exit_probability"]
        assert figure[f"{inside}.circuits_compromised"] > figure["nopin.circuits_compromised"]


def test_onion_services_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from simulations import onion_services

    assert onion_services.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "onion_services.png").stat().st_size > 10_000
    figures = {p[0]: p[1] for p in (line.split() for line in out.splitlines()) if len(p) == 3}
    assert float(figures["hs_fresh_lookup_share_300"]) >= 0.9  # no adversary: lookups find it
    assert float(figures["hs_fresh_near_boundary_share_300"]) >= 0.9  # skewed clients, either side
    rows = _rows(out, "adv")
    # adv-share adv-share-online om-censored om-tracked tor-censored tor-tracked
    om_c = [_pct(r[2]) for r in rows]
    tor_c = [_pct(r[4]) for r in rows]
    assert om_c == sorted(om_c) and tor_c == sorted(tor_c)  # more adversary, more censorship
    assert all(o <= t for o, t in zip(om_c, tor_c, strict=True))  # 64 holders are harder to own than 8
    assert all(_pct(r[3]) >= _pct(r[5]) for r in rows)  # ... and easier to sit among
    assert figures["hs_grind_holders_won"] == "16"  # ground IDs take every one of the 16 closest
