"""Persistent onion services and client authorization, as configured: the service directory on
disk and the settings' tables (the formats themselves: directory/hs_files.py, sans-I/O).

Formats are Tor's, so that keys and files move between Tor and onionmesh:

* a port mapping ``VIRT TARGET`` (``80 127.0.0.1:8080``; also ``80=127.0.0.1:8080`` for flags,
  and a bare ``80`` meaning ``127.0.0.1:80``), as torrc's HiddenServicePort;
* a service directory: ``hs_ed25519_secret_key`` (Tor's 96 bytes: the 32-byte header
  ``"== ed25519v1-secret: type0 =="`` zero padded, then the 64-byte expanded key), mode 0600,
  ``hs_ed25519_public_key`` and ``hostname`` (``<56 chars>.onion``), in a 0700 directory, created
  on first start and read on every later one: the address survives restarts;
* a client's ``<name>.auth_private`` file: ``<56-char address>:descriptor:x25519:<base32 key>``;
* a service's ``authorized_clients/<name>.auth`` file: ``descriptor:x25519:<base32 public key>``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from onionmesh.crypto.hs_address import encode_address
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.directory.hs_files import (
    MAX_AUTH_FILE,
    PUBLIC_HEADER,
    SECRET_HEADER,
    PortMapping,
    decode_secret_key,
    encode_b32_key,
    encode_secret_key,
    format_auth_private,
    parse_auth_private,
    parse_auth_public,
    parse_port_mapping,
)
from onionmesh.errors import InsecurePermissions, OnionConfigError


@dataclass(frozen=True)
class OnionServiceConfig:
    """One [[onion_service]] table: where its keys live, its ports, its authorized clients."""

    dir: Path
    ports: tuple[PortMapping, ...]
    client_auth: tuple[bytes, ...] = ()  # x25519 public keys


# --- the directory (I/O) -----------------------------------------------------------------------


def _check_private(path: Path, mode: int) -> None:
    st = path.stat()
    if st.st_mode & 0o077 & ~mode:
        raise InsecurePermissions(
            f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod it"
        )


def load_or_create_service_dir(path: Path, seed: bytes | None = None) -> tuple[ExpandedKey, str]:
    """The service's key and address, from `path`, creating both on first start (0700, 0600).
    A directory made by Tor (HiddenServiceDir) is read as it is."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(path, 0)
    secret = path / "hs_ed25519_secret_key"
    if secret.exists():
        _check_private(secret, 0)
        with secret.open("rb") as f:
            key = decode_secret_key(f.read(97))  # 96 bytes; a longer file is refused, not read whole
    else:
        key = ExpandedKey.from_seed(seed if seed is not None else os.urandom(32))
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(encode_secret_key(key))
        (path / "hs_ed25519_public_key").write_bytes(PUBLIC_HEADER + key.public)
    address = encode_address(key.public)
    hostname = path / "hostname"
    if not hostname.exists() or hostname.read_text(errors="replace").strip() != address:
        hostname.write_text(address + "\n")
    return key, address


def read_client_auth_dir(path: Path) -> dict[str, bytes]:
    """Every ``*.auth_private`` in `path`: service_id -> x25519 private key (the dir must be private)."""
    _check_private(path, 0)
    out: dict[str, bytes] = {}
    for item in sorted(path.glob("*.auth_private")):
        _check_private(item, 0)
        with item.open("rb") as f:
            raw = f.read(MAX_AUTH_FILE + 1)
        try:
            sid, key = parse_auth_private(raw.decode("utf-8"))
        except (UnicodeDecodeError, OnionConfigError) as exc:
            raise OnionConfigError(f"{item}: {exc}") from None
        out[sid] = key
    return out


def read_authorized_clients(path: Path) -> tuple[bytes, ...]:
    """A service's ``authorized_clients/*.auth`` (Tor's layout), if the directory exists."""
    folder = path / "authorized_clients"
    if not folder.is_dir():
        return ()
    keys = []
    for item in sorted(folder.glob("*.auth")):
        with item.open("rb") as f:
            raw = f.read(MAX_AUTH_FILE + 1)
        try:
            keys.append(parse_auth_public(raw.decode("utf-8")))
        except (UnicodeDecodeError, OnionConfigError) as exc:
            raise OnionConfigError(f"{item}: {exc}") from None
    return tuple(keys)


def parse_service_table(value: object) -> OnionServiceConfig:
    """One onion service from TOML (``{dir=..., ports=[...], client_auth=[...]}``) or text
    (``DIR PORTMAP [PORTMAP...]``, from --onion-service/--onion-port or the environment)."""
    if isinstance(value, OnionServiceConfig):
        return value
    if isinstance(value, str):
        parts = value.split()
        if len(parts) < 2:
            raise OnionConfigError(
                f"onion service {parts[0] if parts else '(no directory)'} has no port: add --onion-port "
                "VIRT=HOST:PORT after it (or ports = [...] in its [[onion_service]] table)"
            )
        return OnionServiceConfig(
            Path(parts[0]).expanduser(), tuple(parse_port_mapping(p) for p in parts[1:])
        )
    if not isinstance(value, dict):
        raise OnionConfigError("an onion service is a table {dir, ports, client_auth}")
    unknown = set(value) - {"dir", "ports", "client_auth"}
    if unknown:
        raise OnionConfigError(f"unknown key {sorted(unknown)[0]!r} in an onion service")
    d, ports, auth = value.get("dir"), value.get("ports"), value.get("client_auth", [])
    if not isinstance(d, str) or not d.strip() or "\0" in d:
        raise OnionConfigError('an onion service needs dir = "PATH"')
    if not isinstance(ports, list) or not ports or len(ports) > 64:
        raise OnionConfigError('an onion service needs ports = ["80 127.0.0.1:8080", ...] (1..64)')
    if not isinstance(auth, list) or len(auth) > 24 or not all(isinstance(a, str) for a in auth):
        raise OnionConfigError('client_auth is a list of "descriptor:x25519:KEY" (at most 24)')
    mapped = tuple(parse_port_mapping(p) if isinstance(p, str) else parse_port_mapping("") for p in ports)
    return OnionServiceConfig(Path(d).expanduser(), mapped, tuple(parse_auth_public(a) for a in auth))


__all__ = [
    "MAX_AUTH_FILE", "PUBLIC_HEADER", "SECRET_HEADER", "OnionServiceConfig", "PortMapping",
    "decode_secret_key",
    "encode_b32_key", "encode_secret_key", "format_auth_private", "load_or_create_service_dir",
    "parse_auth_private", "parse_auth_public", "parse_port_mapping", "parse_service_table",
    "read_authorized_clients", "read_client_auth_dir",
]  # fmt: skip
