"""Onion service addresses: Tor v3's `base32(PUBKEY | CHECKSUM | VERSION) + ".onion"`, exactly.

Why Tor's format: tools that build URLs from a service ID (OnionShare, Bitcoin Core, stem) then
work unchanged.  Such a name lives in onionmesh's network, not Tor's (docs/protocol.md §16.1).
Parsing follows Tor: the host is lower-cased, subdomains (`www.<id>.onion`) are dropped, the
label must be 56 base32 characters, the checksum and version must match, and the key must be a
point of the prime-order subgroup (no torsion component: rend-spec-v3 §2.2.7), so one key has
exactly one address.

Not in this module: blinding and descriptors (hs_blinding, directory.hs_descriptor).
"""

from __future__ import annotations

import base64
import hashlib

from nacl.bindings import crypto_core_ed25519_is_valid_point

from onionmesh.errors import BadOnionAddress

VERSION = 3
ADDRESS_LABEL_LEN = 56  # base32 characters of PUBKEY(32) | CHECKSUM(2) | VERSION(1)
CHECKSUM_PREFIX = b".onion checksum"
SUFFIX = ".onion"


def checksum(pubkey: bytes, version: int = VERSION) -> bytes:
    """CHECKSUM = SHA3-256(".onion checksum" | PUBKEY | VERSION)[:2]."""
    return hashlib.sha3_256(CHECKSUM_PREFIX + pubkey + bytes([version])).digest()[:2]


def encode_address(pubkey: bytes) -> str:
    """The 56-character lower-case label plus ".onion" for an Ed25519 identity key."""
    if len(pubkey) != 32:
        raise ValueError("an onion service key is 32 bytes")
    raw = pubkey + checksum(pubkey) + bytes([VERSION])
    return base64.b32encode(raw).decode("ascii").lower() + SUFFIX


def is_onion_host(host: str) -> bool:
    """True for any name in the .onion TLD (valid or not): it must never reach a resolver."""
    return host.rstrip(".").lower().endswith(SUFFIX) or host.lower() == "onion"


def parse_onion_host(host: str) -> bytes:
    """The service's Ed25519 key for `[sub.]*<56 chars>.onion`; BadOnionAddress otherwise."""
    name = host.lower()
    if not name.endswith(SUFFIX):
        raise BadOnionAddress("not a .onion name")
    label = name[: -len(SUFFIX)].rsplit(".", 1)[-1]
    if name[: -len(SUFFIX)].startswith(".") or name[: -len(SUFFIX)].endswith("."):
        raise BadOnionAddress("empty label")
    if len(label) != ADDRESS_LABEL_LEN:
        raise BadOnionAddress("invalid length")
    if not label.isascii() or not all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in label):
        raise BadOnionAddress("not base32")
    raw = base64.b32decode(label.upper())
    pubkey, check, version = raw[:32], raw[32:34], raw[34]
    if version != VERSION:
        raise BadOnionAddress("unknown version")
    if check != checksum(pubkey, version):
        raise BadOnionAddress("invalid checksum")
    if not crypto_core_ed25519_is_valid_point(pubkey):
        raise BadOnionAddress("key is not a point of the prime-order subgroup")
    return pubkey


def service_id(pubkey: bytes) -> str:
    """The label without ".onion" (Tor's ServiceID, as ADD_ONION prints it)."""
    return encode_address(pubkey)[: -len(SUFFIX)]
