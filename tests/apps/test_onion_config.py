"""Persistent onion services and client authorization as configured (app.onion_config): Tor's
file formats (hypothesis), the service directory across restarts, and the settings path."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.app import onion_config as oc
from onionmesh.app.cli_args import build_parser
from onionmesh.app.config import resolve
from onionmesh.crypto.hs_address import encode_address
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.errors import ConfigError, InsecurePermissions, OnionConfigError

SEED = bytes(range(32))
KEY = ExpandedKey.from_seed(SEED)
SID = encode_address(KEY.public).removesuffix(".onion")


@given(st.binary(min_size=32, max_size=32))
def test_auth_private_round_trip(key: bytes) -> None:
    assert oc.parse_auth_private(oc.format_auth_private(SID, key)) == (SID, key)
    assert oc.parse_auth_private(f"{SID}.onion:descriptor:x25519:{oc.encode_b32_key(key)}") == (SID, key)
    assert oc.parse_auth_public(f"descriptor:x25519:{oc.encode_b32_key(key)}") == key


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_auth_parsers_refuse_junk_cleanly(junk: str) -> None:
    for parse in (oc.parse_auth_private, oc.parse_auth_public, oc.parse_port_mapping):
        with contextlib.suppress(OnionConfigError):  # anything else fails the test
            parse(junk)


def test_auth_private_refuses_near_misses() -> None:
    good = oc.format_auth_private(SID, bytes(32))
    bad_checksum = ("a" if SID[0] != "a" else "b") + SID[1:]
    for text in (
        good.replace("descriptor", "descriptr"),
        good.replace("x25519", "x448"),
        good.replace(SID, bad_checksum),
        good.strip() + "A",  # 53 characters
        good.strip()[:-1] + "1",  # not base32
        good + good,  # two lines
    ):
        with pytest.raises(OnionConfigError):
            oc.parse_auth_private(text)


@given(st.integers(1, 65535), st.integers(1, 65535))
def test_port_mappings(virt: int, target: int) -> None:
    want = oc.PortMapping(virt, "127.0.0.1", target)
    assert oc.parse_port_mapping(f"{virt} 127.0.0.1:{target}") == want
    assert oc.parse_port_mapping(f"{virt}=127.0.0.1:{target}") == want
    assert oc.parse_port_mapping(f"{virt} {target}") == want
    assert oc.parse_port_mapping(f"{virt}") == oc.PortMapping(virt, "127.0.0.1", virt)
    assert oc.parse_port_mapping(f"{virt} [::1]:{target}") == oc.PortMapping(virt, "::1", target)
    for bad in (f"0 127.0.0.1:{target}", f"{virt} 127.0.0.1:0", f"{virt} 127.0.0.1:65536", "x 1"):
        with pytest.raises(OnionConfigError):
            oc.parse_port_mapping(bad)


def test_secret_key_file_is_tors_format() -> None:
    raw = oc.encode_secret_key(KEY)
    assert len(raw) == 96 and raw.startswith(b"== ed25519v1-secret: type0 ==\0\0\0")
    assert oc.decode_secret_key(raw).to_bytes() == KEY.to_bytes()
    for bad in (raw[:-1], b"x" + raw[1:], raw[:32] + bytes(64)):
        with pytest.raises(OnionConfigError):
            oc.decode_secret_key(bad)


def test_service_dir_keeps_its_address_across_restarts(tmp_path: Path) -> None:
    d = tmp_path / "svc"
    key, address = oc.load_or_create_service_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "hs_ed25519_secret_key").stat().st_mode) == 0o600
    assert (d / "hostname").read_text() == address + "\n"
    assert (d / "hs_ed25519_public_key").read_bytes()[32:] == key.public
    (d / "hostname").unlink()  # a lost hostname file is written again, the same
    again, address2 = oc.load_or_create_service_dir(d)
    assert address2 == address and again.to_bytes() == key.to_bytes()
    assert (d / "hostname").read_text() == address + "\n"


def test_service_dir_refuses_a_readable_key(tmp_path: Path) -> None:
    d = tmp_path / "svc"
    oc.load_or_create_service_dir(d)
    os.chmod(d / "hs_ed25519_secret_key", 0o644)
    with pytest.raises(InsecurePermissions):
        oc.load_or_create_service_dir(d)


def test_client_auth_dir(tmp_path: Path) -> None:
    d = tmp_path / "auth"
    d.mkdir(mode=0o700)
    (d / "alice.auth_private").write_text(oc.format_auth_private(SID, b"\x07" * 32))
    os.chmod(d / "alice.auth_private", 0o600)
    (d / "ignored.txt").write_text("not an auth file")
    assert oc.read_client_auth_dir(d) == {SID: b"\x07" * 32}
    (d / "bad.auth_private").write_text("junk")
    os.chmod(d / "bad.auth_private", 0o600)
    with pytest.raises(OnionConfigError, match=r"bad\.auth_private"):
        oc.read_client_auth_dir(d)


def test_flags_and_toml_give_the_same_services(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["proxy", "--onion-service", "/srv/a", "--onion-port", "80=127.0.0.1:8080", "--onion-port", "22",
         "--onion-service", "/srv/b", "--onion-port", "443 [::1]:8443"]
    )  # fmt: skip
    from_flags = resolve("proxy", {"onion_service": args.onion_service}, {})["onion_service"]
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[[onion_service]]\ndir = "/srv/a"\nports = ["80 127.0.0.1:8080", "22"]\n'
        '[[onion_service]]\ndir = "/srv/b"\nports = ["443 [::1]:8443"]\n'
    )
    assert resolve("proxy", {}, {}, toml)["onion_service"] == from_flags
    assert from_flags[0].ports == (oc.PortMapping(80, "127.0.0.1", 8080), oc.PortMapping(22, "127.0.0.1", 22))
    env = {"ONIONMESH_ONION_SERVICE": "/srv/a 80=127.0.0.1:8080 22, /srv/b 443=[::1]:8443"}
    assert resolve("testnet", {}, env)["onion_service"] == from_flags
    toml.write_text('[[onion_service]]\ndir = "/srv/a"\nports = ["80 127.0.0.1:99999"]\n')
    with pytest.raises(ConfigError, match="port"):
        resolve("proxy", {}, {}, toml)


def test_client_auth_dir_refuses_readable_keys(tmp_path: Path) -> None:
    d = tmp_path / "auth"
    d.mkdir(mode=0o700)
    (d / "alice.auth_private").write_text(oc.format_auth_private(SID, b"\x07" * 32))
    os.chmod(d / "alice.auth_private", 0o644)  # a key others can read: refused, not used
    with pytest.raises(InsecurePermissions):
        oc.read_client_auth_dir(d)
    os.chmod(d / "alice.auth_private", 0o600)
    os.chmod(d, 0o755)
    with pytest.raises(InsecurePermissions):
        oc.read_client_auth_dir(d)


def _tor_writes_hostname(tmp_path: Path, hs_dir: Path) -> str:
    """Run Debian's tor with no network (DisableNetwork) until it has loaded or made the keys of
    `hs_dir` and written its hostname; end it by its PID; the hostname."""
    tmp_path.mkdir(mode=0o700)
    torrc = tmp_path / "torrc"
    torrc.write_text("")
    data = tmp_path / "tor-data"
    proc = subprocess.Popen(
        ["tor", "--defaults-torrc", str(torrc), "-f", str(torrc), "--DataDirectory", str(data),
         "--DisableNetwork", "1", "--SocksPort", "0", "--HiddenServiceDir", str(hs_dir),
         "--HiddenServicePort", "80 127.0.0.1:1", "--Log", "err stderr"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30  # a liveness bound only
        while not (hs_dir / "hostname").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written whole before tor goes on, but give the write a moment
        return (hs_dir / "hostname").read_text().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.skipif(shutil.which("tor") is None, reason="tor is not installed (apt-get install tor)")
def test_keys_move_between_tor_and_onionmesh(tmp_path: Path) -> None:
    """A HiddenServiceDir made by Tor keeps its address under onionmesh, and the reverse."""
    made_by_tor = tmp_path / "by-tor"
    tors = _tor_writes_hostname(tmp_path / "a", made_by_tor)
    _key, ours = oc.load_or_create_service_dir(made_by_tor)
    assert ours == tors
    made_by_us = tmp_path / "by-us"
    _key, address = oc.load_or_create_service_dir(made_by_us)
    (made_by_us / "hostname").unlink()  # tor must compute it from our key file
    assert _tor_writes_hostname(tmp_path / "b", made_by_us) == address


def test_the_proxy_refuses_to_start_with_a_readable_service_key(tmp_path: Path) -> None:
    service = tmp_path / "svc"
    oc.load_or_create_service_dir(service)
    os.chmod(service / "hs_ed25519_secret_key", 0o644)
    run = subprocess.run(
        [sys.executable, "-m", "onionmesh", "proxy", "--socks", "127.0.0.1:0", "--control", "127.0.0.1:0",
         "--tor-control", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--onion-service", str(service), "--onion-port", "80=127.0.0.1:8080"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "refusing to start" in run.stderr and "hs_ed25519_secret_key is readable by others" in run.stderr
    no_port = subprocess.run(
        [sys.executable, "-m", "onionmesh", "proxy", "--onion-service", str(service)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert no_port.returncode != 0 and "has no port: add --onion-port" in no_port.stderr
