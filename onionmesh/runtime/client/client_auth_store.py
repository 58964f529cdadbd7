"""Client authorization keys kept across restarts (ONION_CLIENT_AUTH_ADD Flags=Permanent).

One Tor-format ``<id>.auth_private`` file per service (``<address>:descriptor:x25519:<base32>``,
directory/hs_files.py) in DATA_DIR/onion_auth: the directory 0700, each file 0600 from its first
byte (keystore.write_secret), so a key moves between Tor's ClientOnionAuthDir and onionmesh.  The
node loads them at start (`load`); a file that does not parse or is readable by others is skipped
with a warning, never used and never fatal.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from onionmesh.directory.hs_files import MAX_AUTH_FILE, format_auth_private, parse_auth_private
from onionmesh.errors import OnionConfigError
from onionmesh.runtime.keystore import write_secret
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import Sensitive, get_logger

AUTH_DIR = "onion_auth"
log = limited(get_logger("onionmesh.client_auth"))


def _dir(data_dir: Path) -> Path:
    return Path(data_dir) / AUTH_DIR


def _file(data_dir: Path, service_id: str) -> Path:
    if not service_id.isalnum():  # a parsed service id is 56 base32 letters: never a path
        raise ValueError("not a service id")
    return _dir(data_dir) / f"{service_id}.auth_private"


def save(data_dir: Path, service_id: str, key: bytes) -> None:
    folder = _dir(data_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    write_secret(_file(data_dir, service_id), format_auth_private(service_id, key).encode("ascii"))


def remove(data_dir: Path, service_id: str) -> bool:
    """True when a saved key was removed."""
    try:
        _file(data_dir, service_id).unlink()
    except FileNotFoundError:
        return False
    return True


def is_saved(data_dir: Path, service_id: str) -> bool:
    return _file(data_dir, service_id).is_file()


def saved_ids(data_dir: Path) -> set[str]:
    folder = _dir(data_dir)
    if not folder.is_dir():
        return set()
    return {item.name.removesuffix(".auth_private") for item in folder.glob("*.auth_private")}


def load(data_dir: Path) -> dict[str, bytes]:
    """Every saved key: service id -> x25519 private key."""
    out: dict[str, bytes] = {}
    folder = _dir(data_dir)
    if not folder.is_dir():
        return out
    for item in sorted(folder.glob("*.auth_private")):
        try:
            if stat.S_IMODE(item.stat().st_mode) & 0o077:
                raise OnionConfigError("readable by others (chmod 600 it)")
            with item.open("rb") as f:
                raw = f.read(MAX_AUTH_FILE + 1)
            sid, key = parse_auth_private(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, OnionConfigError) as exc:
            log.warning(
                "saved client authorization key skipped", file=Sensitive(item.name), error=str(exc)[:120]
            )  # the name is the service's address: scrubbed at the default level
            continue
        out[sid] = key
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o700)
    return out
