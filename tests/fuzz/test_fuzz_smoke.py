"""CI smoke run of every fuzz harness (tests/fuzz/README.md): the seeds plus a few thousand
deterministic mutants each, with the pure-Python engine, so the harnesses keep working as the
parsers change.  The million-input runs are `tests/fuzz/run_all.sh`.

Below them, one regression test per bug the fuzzing found (README.md, "Findings"); all are fixed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import fuzz_targets as ft

SMOKE_INPUTS = 2_000
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(ft.TARGETS))
def test_harness_smoke(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target = ft.TARGETS[name]
    if name == "config" and not ft.config_available():
        pytest.skip("onionmesh.app.config.check_file does not exist")
    monkeypatch.setattr(ft, "TOLERATE_KNOWN", True)  # known bugs have their own tests below
    stats = ft.mutate_engine(target, SMOKE_INPUTS, seed=1)
    assert stats.inputs == SMOKE_INPUTS
    assert len(stats.outcomes) > 1  # the seeds reach more than one code path


@pytest.mark.parametrize("name", sorted(ft.TARGETS))
def test_seeds_are_accepted_inputs(name: str) -> None:
    """Every seed runs cleanly: a seed that starts failing means a format changed under it."""
    if name == "config" and not ft.config_available():
        pytest.skip("onionmesh.app.config.check_file does not exist")
    target = ft.TARGETS[name]
    for seed in target.seeds():
        target.one(seed[: target.max_len])


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_atheris_engine_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests/fuzz/run.py"),
            "cell",
            "--inputs",
            "300",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Done 300 runs" in proc.stderr


# --- regression tests for the findings (README.md, "Findings") -------------------------------------
def _control_status(headers: dict[str, str], body: bytes) -> object:
    loop = ft._loop()
    return loop.run_until_complete(ft._control_request(headers, body))


def _auth() -> dict[str, str]:
    return {"Authorization": "Cookie " + ft.COOKIE.hex(), "Content-Type": "application/json"}


def test_control_unknown_charset_is_400(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 1."""
    monkeypatch.setattr(ft, "TOLERATE_KNOWN", False)
    headers = _auth() | {"Content-Type": "application/json; charset=no-such-codec"}
    assert _control_status(headers, b"{}") == 400


def test_control_deeply_nested_json_is_400(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 2."""
    monkeypatch.setattr(ft, "TOLERATE_KNOWN", False)
    assert _control_status(_auth(), b"[" * 50_000) == 400


@pytest.mark.skipif(not ft.config_available(), reason="onionmesh.app.config.check_file does not exist")
def test_config_unknown_user_home_is_a_problem(tmp_path: Path) -> None:
    """Finding 5 (fixed in config.py before the config runs): Path.expanduser raised RuntimeError."""
    from onionmesh.app.config import check_file

    path = tmp_path / "onionmesh.toml"
    path.write_text('[relay]\ndata_dir = "~no-such-user-onionmesh/relay"\n')
    problems = check_file(path)
    assert problems and "data_dir" in problems[0]


@pytest.mark.skipif(not ft.config_available(), reason="onionmesh.app.config.check_file does not exist")
def test_accepted_exit_policy_fits_a_descriptor(tmp_path: Path) -> None:
    """Finding 3."""
    from onionmesh.app.config import check_file
    from onionmesh.directory.exit_policy import ExitPolicy

    text = "accept *:" + ",".join(str(port) for port in range(1000, 1100))  # 508 characters
    path = tmp_path / "onionmesh.toml"
    path.write_text(f'[relay]\nexit_policy = "{text}"\n')
    if not check_file(path):  # accepted: then RelayNode.make_descriptor must be able to publish it
        ft.make_descriptor(99, exit_policy=str(ExitPolicy.parse(text)))


def test_control_non_ascii_session_cookie_is_401(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 4."""
    monkeypatch.setattr(ft, "TOLERATE_KNOWN", False)
    headers = {"Content-Type": "application/json", "Cookie": "om_session=\xe9"}
    assert _control_status(headers, b"{}") == 401


def test_event_loop_left_clean() -> None:
    """The harness loop is reused across inputs: nothing may stay scheduled after a DHT session."""
    ft._dht_one(ft._dht_seeds()[0])
    assert not asyncio.all_tasks(ft._loop())
