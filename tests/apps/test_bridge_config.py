"""Bridge settings through the project's config scheme: flags, ONIONMESH_* variables, TOML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmesh.app.cli import build_parser, settings
from onionmesh.app.config import ConfigError, check_file, resolve

LINE = "webtunnel wss://203.0.113.7:443/Q2xvc2UgdGhlIGdhdGUgYmVoaW5kIHlvdSBwbGVhc2U " + "ab" * 32
LINE2 = "webtunnel ws://[2001:db8::7]:8080/" + "z" * 30 + " " + "cd" * 32


def test_proxy_bridges_from_each_source(tmp_path: Path) -> None:
    assert resolve("proxy", {}, {"ONIONMESH_BRIDGES": f"{LINE},{LINE2}"})["bridges"] == (LINE, LINE2)
    cfg = tmp_path / "client.toml"
    cfg.write_text(f'[proxy]\nbridges = ["{LINE}"]\ndht_over_circuits = true\n')
    out = resolve("proxy", {}, {}, cfg)
    assert out["bridges"] == (LINE,) and out["dht_over_circuits"] is True
    args = build_parser().parse_args(["proxy", "--bridge", LINE, "--bridge", LINE2, "--config", str(cfg)])
    assert settings("proxy", args).bridges == (LINE, LINE2)  # flags win over the file


def test_bad_bridge_lines_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve("proxy", {}, {"ONIONMESH_BRIDGES": "webtunnel wss://10.0.0.1/short " + "ab" * 32})
    assert "secret path" in str(info.value.problems)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[proxy]\nbridges = ["obfs4 1.2.3.4:5"]\n')
    assert any("bridge line" in p for p in check_file(cfg, "proxy"))


def test_relay_bridge_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "relay.toml"
    cfg.write_text(
        '[relay]\nlisten = "10.0.0.1:9001"\ndata_dir = "/tmp/x"\nbridge = true\n'
        'ws_listen = "127.0.0.1:8080"\nws_public_url = "wss://www.example.org"\n'
    )
    out = resolve("relay", {}, {}, cfg)
    assert out["bridge"] is True and out["ws_listen"] == ("127.0.0.1", 8080)
    assert out["ws_public_url"] == "wss://www.example.org" and out["tls_cert"] is None
    cfg.write_text('[relay]\nlisten = "10.0.0.1:9001"\ndata_dir = "/tmp/x"\nws_public_url = "https://x"\n')
    assert any("ws_public_url" in p for p in check_file(cfg, "relay"))
