"""Onion-service files and text formats, sans-I/O: Tor's, so keys and files move between Tor and
onionmesh (app/onion_config.py reads and writes them; the control APIs parse with them).

* a port mapping ``VIRT TARGET`` (``80 127.0.0.1:8080``; also ``80=127.0.0.1:8080`` for flags,
  and a bare ``80`` meaning ``127.0.0.1:80``), as torrc's HiddenServicePort;
* ``hs_ed25519_secret_key``: Tor's 96 bytes, the 32-byte header ``"== ed25519v1-secret: type0 =="``
  zero padded, then the 64-byte expanded key (clamped scalar | prefix);
* a client's ``<name>.auth_private``: ``<56-char address>:descriptor:x25519:<base32 private key>``;
* a service's ``authorized_clients/<name>.auth``: ``descriptor:x25519:<base32 public key>``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from onionmesh.crypto.hs_address import ADDRESS_LABEL_LEN, parse_onion_host
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.errors import BadOnionAddress, OnionConfigError

SECRET_HEADER = b"== ed25519v1-secret: type0 ==\x00\x00\x00"
PUBLIC_HEADER = b"== ed25519v1-public: type0 ==\x00\x00\x00"
MAX_AUTH_FILE = 4096  # an auth file is one short line; anything longer is not one
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+"


@dataclass(frozen=True)
class PortMapping:
    virt_port: int
    target_host: str
    target_port: int


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
