"""Persistent onion services and client authorization, as configured: the text formats (sans-I/O)
and the service directory on disk.

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

import base64
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from onionmesh.crypto.hs_address import ADDRESS_LABEL_LEN, encode_address, parse_onion_host
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.errors import BadOnionAddress, InsecurePermissions, OnionConfigError

SECRET_HEADER = b"== ed25519v1-secret: type0 ==\x00\x00\x00"
PUBLIC_HEADER = b"== ed25519v1-public: type0 ==\x00\x00\x00"
MAX_AUTH_FILE = 4096  # an auth file is one short line; anything longer is not one
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+"


@dataclass(frozen=True)
class PortMapping:
    virt_port: int
    target_host: str
    target_port: int


@dataclass(frozen=True)
class OnionServiceConfig:
    """One [[onion_service]] table: where its keys live, its ports, its authorized clients."""

    dir: Path
    ports: tuple[PortMapping, ...]
    client_auth: tuple[bytes, ...] = ()  # x25519 public keys


def _port(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise OnionConfigError(f"a port is 1..65535, got {text[:20]!r}")
    return int(text)


def parse_port_mapping(text: str) -> PortMapping:
    """``VIRT [HOST:PORT]`` or ``VIRT=HOST:PORT``; the target defaults to 127.0.0.1:VIRT."""
    if not isinstance(text, str) or len(text) > 300:
        raise OnionConfigError("a port mapping is VIRT HOST:PORT")
    parts = text.strip().replace("=", " ", 1).split()
    if not 1 <= len(parts) <= 2:
        raise OnionConfigError(f"a port mapping is VIRT HOST:PORT, got {text[:60]!r}")
    virt = _port(parts[0])
    if len(parts) == 1:
        return PortMapping(virt, "127.0.0.1", virt)
    m = re.fullmatch(rf"({_HOST}):([0-9]+)", parts[1])
    if m is None:
        if re.fullmatch(r"[0-9]+", parts[1]):
            return PortMapping(virt, "127.0.0.1", _port(parts[1]))
        raise OnionConfigError(f"the target of a port mapping is HOST:PORT, got {parts[1][:60]!r}")
    return PortMapping(virt, m.group(1).strip("[]"), _port(m.group(2)))


def _b32_key(text: str) -> bytes:
    """A 32-byte x25519 key as Tor writes it: 52 base32 characters, no padding."""
    if not re.fullmatch(r"[A-Za-z2-7]{52}", text):
        raise OnionConfigError("an x25519 key is 52 base32 characters")
    raw = base64.b32decode(text.upper() + "====")
    if base64.b32encode(raw).decode("ascii").rstrip("=") != text.upper():
        raise OnionConfigError("an x25519 key is 52 base32 characters")  # non-canonical trailing bits
    return raw


def encode_b32_key(key: bytes) -> str:
    return base64.b32encode(key).decode("ascii").rstrip("=")


def parse_auth_private(text: str) -> tuple[str, bytes]:
    """A client's ``<address>:descriptor:x25519:<key>`` (Tor's .auth_private): (service_id, key)."""
    if not isinstance(text, str) or len(text) > MAX_AUTH_FILE:
        raise OnionConfigError("not an .auth_private line")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise OnionConfigError("an .auth_private file holds one line")
    fields = lines[0].split(":")
    if len(fields) != 4 or fields[1:3] != ["descriptor", "x25519"]:
        raise OnionConfigError("an .auth_private line is <address>:descriptor:x25519:<base32 key>")
    address = fields[0].lower().removesuffix(".onion")
    if len(address) != ADDRESS_LABEL_LEN:
        raise OnionConfigError("the address of an .auth_private line is 56 characters")
    try:
        parse_onion_host(address + ".onion")
    except BadOnionAddress as exc:
        raise OnionConfigError(f"not an onion address: {exc}") from None
    return address, _b32_key(fields[3])


def format_auth_private(sid: str, key: bytes) -> str:
    return f"{sid}:descriptor:x25519:{encode_b32_key(key)}\n"


def parse_auth_public(text: str) -> bytes:
    """A service's ``descriptor:x25519:<key>`` (Tor's authorized_clients/*.auth): the public key."""
    if not isinstance(text, str) or len(text) > MAX_AUTH_FILE:
        raise OnionConfigError("not a .auth line")
    fields = text.strip().split(":")
    if len(fields) != 3 or fields[:2] != ["descriptor", "x25519"]:
        raise OnionConfigError("a .auth line is descriptor:x25519:<base32 public key>")
    return _b32_key(fields[2])


def encode_secret_key(key: ExpandedKey) -> bytes:
    return SECRET_HEADER + key.to_bytes()


def decode_secret_key(raw: bytes) -> ExpandedKey:
    """Tor's hs_ed25519_secret_key: the header, then the 64-byte expanded key (scalar | prefix)."""
    if len(raw) != 96 or raw[:32] != SECRET_HEADER:
        raise OnionConfigError("not an hs_ed25519_secret_key file (Tor's ed25519v1-secret type0)")
    scalar = raw[32:64]
    if scalar[0] & 7 or scalar[31] & 0xC0 != 0x40:
        raise OnionConfigError("hs_ed25519_secret_key holds no clamped Ed25519 scalar")
    return ExpandedKey.from_bytes(raw[32:])


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
        key = decode_secret_key(secret.read_bytes()[:97])
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
            raise OnionConfigError("an onion service is DIR VIRT=HOST:PORT [VIRT=HOST:PORT ...]")
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
