"""Key derivation with keyed BLAKE2b (an HKDF shape: extract, then expand).

BLAKE2b's keyed mode is a PRF in its own right, so it stands where HMAC stands in HKDF
(RFC 5869).  Every use passes a distinct `info` string; see docs/protocol.md, "Key derivation".
"""

from __future__ import annotations

import hashlib

_EXTRACT_KEY = b"onionmesh kdf extract v1"


def extract(secret: bytes, salt: bytes = b"") -> bytes:
    """Concentrate `secret` into a 64-byte pseudorandom key."""
    return hashlib.blake2b(salt + secret, key=_EXTRACT_KEY, digest_size=64).digest()


def expand(prk: bytes, info: bytes, length: int) -> bytes:
    """Stretch a 64-byte PRK: T(i) = BLAKE2b_prk(T(i-1) || info || u8(i)), output T(1) || T(2) || ..."""
    if not 0 < length <= 255 * 64:
        raise ValueError("bad KDF output length")
    out = bytearray()
    block = b""
    i = 1
    while len(out) < length:
        block = hashlib.blake2b(block + info + bytes([i]), key=prk, digest_size=64).digest()
        out += block
        i += 1
    return bytes(out[:length])


def mac(key: bytes, data: bytes, size: int = 32) -> bytes:
    """Keyed BLAKE2b as a MAC/PRF (key up to 64 bytes)."""
    return hashlib.blake2b(data, key=key, digest_size=size).digest()
