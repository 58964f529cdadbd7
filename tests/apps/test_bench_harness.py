"""The benchmark harness itself keeps working (a smoke run with tiny sizes; no figure is judged)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onionmesh.crypto.sodium import HARDWARE_AES

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = [
    "ready_s", "bulk_MBps", "bulk_cpu_s_per_MB", "small_total_ms", "small_total_ms_p90",
    "circ_build_ms_median", "circ_build_ms_p90", "streams200_aggregate_MBps", "streams200_jain",
    "streams200_failed", "open_streams", "relay_peak_rss_MB_max",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_throughput_bench_quick_run_prints_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--quick"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    figures = {}
    for line in out.stdout.splitlines():
        name, value, _unit = line.split(" ", 2)
        figures[name.removeprefix("onionmesh.")] = value
    for name in EXPECTED:
        float(figures[name])  # present, and a number
    assert figures["streams200_failed"] == "0"
    assert int(figures["open_streams"]) == 50  # every stream of the quick run opened


def figures_of(script: str, *args: str) -> dict[str, float]:
    """Run a bench script, check its `name value unit` lines and return the numbers by name."""
    cmd = [sys.executable, str(ROOT / "bench" / script), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.split(" ", 2) for line in out.stdout.splitlines()]
    assert lines and all(len(parts) == 3 for parts in lines)
    return {name: float(value) for name, value, _unit in lines}


def test_crypto_bench_prints_each_suite_it_can_run() -> None:
    figures = figures_of("crypto.py", "--seconds", "0.05")
    assert figures["crypto.layer_xchacha_apply_4091B"] > 0
    assert figures["crypto.link_chacha20poly1305_seal_16cells"] > 0
    if HARDWARE_AES:
        assert figures["crypto.layer_aes_gcm_over_xchacha"] > 0
        assert figures["crypto.link_aegis256_over_chacha20poly1305"] > 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_suites_bench_measures_both_testnets() -> None:
    figures = figures_of("suites.py", "--mib", "2", "--runs", "1")
    assert figures["suites.aes_bulk_MBps"] > 0 and figures["suites.chacha_bulk_MBps"] > 0
    assert figures["suites.bulk_aes_over_chacha"] > 0


def test_vs_tor_runs_a_failing_tor_harness_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tor's harness sometimes fails on its own (a warm-up curl times out): a second try, said."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import vs_tor

    tries = tmp_path / "tries"
    script = tmp_path / "run.sh"
    script.write_text(
        f'echo x >> "{tries}"\n'
        f'if [ "$(wc -l < "{tries}")" -lt 2 ]; then echo "# ERROR: curl timed out" >&2; exit 1; fi\n'
        "echo 'tor.bulk_MBps 6.5 MB/s'\n"
    )
    monkeypatch.setattr(vs_tor, "TORNET", script)
    assert vs_tor.run_tor(quick_run=True) == {"tor.bulk_MBps": 6.5}
    out = capsys.readouterr().out
    assert "# running it again: run.sh exited with 1: # ERROR: curl timed out" in out
    tries.unlink()
    script.write_text('echo "# ERROR: no tor" >&2; exit 3\n')
    assert vs_tor.run_tor(quick_run=True) == {}
    assert "# skipping Tor: run.sh exited with 3: # ERROR: no tor" in capsys.readouterr().out


FLOOD_FIGURES = [
    "normal_MBps", "relay_rss_before_MB", "handshake_attempted_per_s", "handshake_answered_per_s",
    "handshake_honest_MBps", "handshake_honest_fraction", "relay_peak_rss_MB", "relay_rss_after_MB",
    "relay_rss_under_80MB_after_s", "socks_held_conns", "socks_honest_fraction", "proxy_peak_rss_MB",
    "dht_bytes_sent", "dht_bytes_received", "dht_out_over_in",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_flood_bench_quick_run_prints_every_figure() -> None:
    figures = figures_of("flood.py", "--quick")
    assert sorted(figures) == sorted(f"flood.{name}" for name in FLOOD_FIGURES)
    assert figures["flood.normal_MBps"] > 0
    assert figures["flood.handshake_attempted_per_s"] > 0  # the attacker ran
    assert figures["flood.socks_held_conns"] > 0
    assert figures["flood.dht_bytes_sent"] > 0
