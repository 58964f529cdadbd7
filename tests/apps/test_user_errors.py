"""Errors a user causes get one clear line and a non-zero exit, never a traceback: a port already
in use (SOCKS, control, metrics, a relay's listen address), a data directory that cannot be
created, SOCKS or control on a public address without --allow-public-listeners (issue 15, items
7 and 12)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onionmesh", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _proxy(tmp_path: Path, *extra: str) -> list[str]:
    return ["proxy", "--bootstrap", "127.0.0.1:1", "--data-dir", str(tmp_path / "c"),
            "--log-level", "error", *extra]  # fmt: skip


@pytest.mark.parametrize("which", ["socks", "control", "metrics"])
def test_a_proxy_port_in_use_is_one_line(tmp_path: Path, busy_port: int, which: str) -> None:
    ports = {"socks": "127.0.0.1:0", "control": "127.0.0.1:0"}
    ports[which] = f"127.0.0.1:{busy_port}"
    extra = ["--socks", ports["socks"], "--control", ports["control"], "--tor-control", "127.0.0.1:0"]
    if which == "metrics":  # (not Tor's 9051 above: another proxy on this machine may hold it)
        extra += ["--metrics", f"127.0.0.1:{busy_port}"]
    line = _one_line(_run(*_proxy(tmp_path, *extra)))
    assert f"127.0.0.1:{busy_port}" in line and "already in use" in line, line
    if which != "metrics":
        assert f"({which.upper() if which == 'socks' else which})" in line, line


def test_a_relay_listen_port_in_use_is_one_line(tmp_path: Path, busy_port: int) -> None:
    line = _one_line(
        _run(
            "relay",
            "--listen",
            f"127.0.0.1:{busy_port}",
            "--data-dir",
            str(tmp_path / "r"),
            "--log-level",
            "error",
        )
    )
    assert str(busy_port) in line and "in use" in line, line


def test_a_testnet_socks_port_in_use_is_one_line(tmp_path: Path, busy_port: int) -> None:
    line = _one_line(
        _run(
            "testnet",
            "--relays",
            "1",
            "--state-dir",
            str(tmp_path / "t"),
            "--socks",
            f"127.0.0.1:{busy_port}",
            "--log-level",
            "error",
        )
    )
    assert f"127.0.0.1:{busy_port}" in line and "already in use" in line, line


def test_a_data_directory_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = _run(
        "proxy", "--data-dir", str(blocker / "sub"), "--socks", "127.0.0.1:0", "--control", "127.0.0.1:0"
    )
    line = _one_line(result)
    assert "cannot create the data directory" in line and str(blocker / "sub") in line, line
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        line = _one_line(_run("proxy", "--data-dir", str(ro / "c"), "--socks", "127.0.0.1:0"))
        assert "Permission denied" in line, line


@pytest.mark.parametrize("flag", ["--socks", "--control"])
def test_public_socks_or_control_is_refused_without_the_override(tmp_path: Path, flag: str) -> None:
    ports = {"--socks": "127.0.0.1:0", "--control": "127.0.0.1:0"}
    ports[flag] = "0.0.0.0:0"
    args = _proxy(tmp_path, "--socks", ports["--socks"], "--control", ports["--control"])
    line = _one_line(_run(*args))
    assert "refusing to listen on" in line and "0.0.0.0:0" in line and "--allow-public-listeners" in line
    assert not (tmp_path / "c").exists()  # refused before anything was created


def test_public_socks_with_the_override_is_accepted_and_named(tmp_path: Path) -> None:
    # Not bound here: a test never listens beyond loopback.  The node accepts the configuration and
    # names the exposed listener it warns about.
    from onionmesh.runtime.client.node import ClientConfig, ClientNode, public_listeners

    config = ClientConfig(tmp_path / "c", socks_host="0.0.0.0", allow_public_listeners=True)
    ClientNode(config)
    assert public_listeners(config) == ["SOCKS 0.0.0.0:9050"]


def test_two_listeners_on_one_address_say_which(tmp_path: Path) -> None:
    """An old `--control 127.0.0.1:9051` (the JSON API's port before Tor's control port took it)
    gets a sentence naming both flags and the new ports, not "address already in use"."""
    line = _one_line(_run(*_proxy(tmp_path, "--socks", "127.0.0.1:0", "--control", "127.0.0.1:9051")))
    assert "--control and --tor-control both ask for 127.0.0.1:9051" in line, line
    assert "9052" in line and "already in use" not in line, line
    assert not (tmp_path / "c").exists()  # refused before anything was created
