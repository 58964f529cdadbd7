"""Secret files (keys, the control cookie, the bridge's secret path) on a hostile disk: a planted
0644 `NAME.tmp` or a symlink never leaks the secret, and a readable secret-path file is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from onionmesh.runtime.client.control import COOKIE_NAME, load_or_create_cookie
from onionmesh.runtime.keystore import InsecurePermissions, write_secret
from onionmesh.runtime.transport.ws_front import SECRET_FILE, load_or_create_secret

ROOT = Path(__file__).resolve().parents[2]


def test_a_planted_world_readable_tmp_does_not_give_its_mode_to_the_cookie(tmp_path: Path) -> None:
    planted = tmp_path / (COOKIE_NAME + ".tmp")
    planted.write_bytes(b"")
    planted.chmod(0o644)
    cookie = load_or_create_cookie(tmp_path, os.urandom(32))
    assert (tmp_path / COOKIE_NAME).read_bytes() == cookie
    assert (tmp_path / COOKIE_NAME).stat().st_mode & 0o777 == 0o600
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != COOKIE_NAME]
    assert leftovers == []  # neither the planted file nor our own temporary one stays behind


def test_a_symlinked_tmp_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere"
    victim.write_bytes(b"untouched")
    victim.chmod(0o644)
    (tmp_path / "secret.tmp").symlink_to(victim)
    write_secret(tmp_path / "secret", b"s3cret")
    assert victim.read_bytes() == b"untouched"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "secret").read_bytes() == b"s3cret"
    assert not (tmp_path / "secret").is_symlink()
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


def test_a_symlink_at_the_secret_itself_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere"
    victim.write_bytes(b"untouched")
    (tmp_path / "secret").symlink_to(victim)
    write_secret(tmp_path / "secret", b"s3cret")
    assert victim.read_bytes() == b"untouched"
    assert not (tmp_path / "secret").is_symlink()


def test_secret_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_secret(tmp_path / "secret", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


def test_a_readable_bridge_secret_path_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_text("A" * 43 + "\n")
    path.chmod(0o644)
    with pytest.raises(InsecurePermissions, match="chmod 600"):
        load_or_create_secret(tmp_path, os.urandom)
    path.chmod(0o600)
    assert load_or_create_secret(tmp_path, os.urandom) == "A" * 43


def test_a_bridge_with_a_readable_secret_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "bridge"
    data.mkdir(mode=0o700)
    (data / SECRET_FILE).write_text("B" * 43 + "\n")
    (data / SECRET_FILE).chmod(0o640)
    result = subprocess.run(
        [sys.executable, "-m", "onionmesh", "relay", "--bridge", "--listen", "127.0.0.1:0",
         "--ws-listen", "127.0.0.1:0", "--data-dir", str(data), "--log-level", "error"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to start" in lines[0] and "chmod 600" in lines[0], result.stderr
