"""X25519 key agreement with the one check every use needs: a low-order peer key is refused.

A peer that sends a low-order point (the all-zero u-coordinate or another small-subgroup point)
forces the shared secret to 32 zero bytes, which would make the keys derived from it public.
Both the link handshake (proto.link) and the circuit handshake (crypto.ntor) use this function,
so the check is written once (docs/protocol.md, "X25519(k, P)").
"""

from __future__ import annotations

from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from onionmesh.errors import CryptoError

_ZERO = bytes(32)


def x25519(secret: bytes, public: bytes, what: str = "X25519 key agreement") -> bytes:
    """The shared secret of `secret` and the peer's `public`; CryptoError (naming `what`) when the
    peer's key is malformed or of low order, never libsodium's own exceptions."""
    if len(public) != 32:
        raise CryptoError(f"{what}: a peer key must be 32 bytes")
    try:
        out = crypto_scalarmult(secret, public)
    except (NaclRuntimeError, NaclCryptoError, ValueError, TypeError) as exc:  # libsodium refused it
        raise CryptoError(f"{what}: X25519 produced the point at infinity") from exc
    if out == _ZERO:
        raise CryptoError(f"{what}: X25519 produced the point at infinity")
    return out
