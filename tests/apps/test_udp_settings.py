"""The UDP exit settings (issue 22) as a user gives them: flag, environment, TOML; bad policies refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmesh.app.config import resolve
from onionmesh.errors import ConfigError


def test_udp_policy_from_flag_env_and_file(tmp_path: Path) -> None:
    base = {"listen": "127.0.0.1:0", "data_dir": str(tmp_path)}
    assert resolve("relay", base, {}, None)["exit_policy_udp"] == ""  # default: no UDP
    toml = tmp_path / "relay.toml"
    toml.write_text('exit_policy_udp = "accept *:53; reject *:*"\nudp_flows_per_circuit = 8\n')
    assert resolve("relay", base, {}, toml)["exit_policy_udp"] == "accept *:53; reject *:*"
    env = {"ONIONMESH_EXIT_POLICY_UDP": "accept *:443; reject *:*"}
    values = resolve("relay", base, env, toml)
    assert values["exit_policy_udp"] == "accept *:443; reject *:*" and values["udp_flows_per_circuit"] == 8
    flags = {**base, "exit_policy_udp": "accept *:53,443; reject *:*"}
    assert resolve("relay", flags, env, toml)["exit_policy_udp"] == "accept *:53,443; reject *:*"


def test_a_bad_udp_policy_is_refused_with_its_name(tmp_path: Path) -> None:
    flags = {"listen": "127.0.0.1:0", "data_dir": str(tmp_path), "exit_policy_udp": "accept everything"}
    with pytest.raises(ConfigError) as err:
        resolve("relay", flags, {}, None)
    assert any("exit_policy_udp" in p for p in err.value.problems)
