"""What the README and the guides tell a new user matches what the code does (issue 15, items
13-16): the testnet's relay addresses, commands that work without the venv on PATH, a story that
does not clash with the set-up command's port, uvloop installed by default, Firefox's loopback
setting."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from onionmesh.app.testnet import relay_host

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_readme_names_the_testnet_relay_addresses_the_code_uses() -> None:
    assert f"{relay_host(0)} … {relay_host(4)}" in README
    assert "127.0.1.1" not in README


def test_the_story_calls_the_venv_onionmesh_and_another_port_than_the_set_up() -> None:
    setup, _tests, story = _blocks(README)[:3]
    setup_port = re.search(r"--socks 127\.0\.0\.1:(\d+)", setup).group(1)  # type: ignore[union-attr]
    for line in story.splitlines():
        command = line.split("#")[0].strip()
        assert not command.startswith("onionmesh "), line  # not on PATH after the set-up
        assert f":{setup_port}" not in command, line  # the set-up's testnet may still hold it


def test_the_relay_guide_runs_the_venv_onionmesh_and_warns_about_the_16_rule() -> None:
    guide = (ROOT / "relay" / "README.md").read_text()
    first = _blocks(guide)[0]
    assert not re.search(r"^onionmesh ", first, re.M), first
    assert "/16" in guide and "no path satisfies the /16 rule" in guide


def test_uvloop_is_a_default_dependency_where_it_exists() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [d for d in project["dependencies"] if d.startswith("uvloop")]
    assert deps and "sys_platform != 'win32'" in deps[0]
    assert project["optional-dependencies"]["fast"]  # old commands still work


def test_client_guide_tells_firefox_users_about_loopback() -> None:
    guide = (ROOT / "client" / "README.md").read_text()
    assert "network.proxy.allow_hijacking_localhost" in guide
