"""Long- and medium-term keys: the Ed25519 identity, X25519 onion keys and their certificate.

The identity key is a relay's name: descriptors and link handshakes are signed with it and
clients pin it.  The onion key (X25519) is used by the circuit handshake; it is certified by
the identity key for a bounded time so that it can rotate (see docs/protocol.md, "Onion keys").

Not in this module: key files on disk (`onionmesh.runtime.keystore`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_base
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from onionmesh.errors import CryptoError, RemoteProtocolError
from onionmesh.rng import Rng
from onionmesh.wire.buffer import Buffer

ONION_CERT_CONTEXT = b"onionmesh onion-key certificate v1\x00"
ONION_CERT_LEN = 32 + 8 + 8 + 64


def fingerprint(identity_pk: bytes) -> str:
    """The relay's printable name: 40 upper-case hex digits of BLAKE2b-160 over the identity key."""
    return hashlib.blake2b(identity_pk, digest_size=20, person=b"om-fingerprint").hexdigest().upper()


def verify_signature(identity_pk: bytes, context: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature made over `context || message`; raise CryptoError if it fails."""
    if len(identity_pk) != 32 or len(signature) != 64:
        raise CryptoError("bad key or signature length")
    try:
        VerifyKey(identity_pk).verify(context + message, signature)
    except (BadSignatureError, ValueError) as exc:
        raise CryptoError("signature does not verify") from exc


class IdentityKey:
    """An Ed25519 signing key: the relay's long-term identity."""

    __slots__ = ("_sk", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("identity seed must be 32 bytes")
        self._sk = SigningKey(seed)
        self.public: bytes = bytes(self._sk.verify_key)

    @classmethod
    def generate(cls, rng: Rng) -> IdentityKey:
        return cls(rng.random_bytes(32))

    @property
    def seed(self) -> bytes:
        return bytes(self._sk)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    def sign(self, context: bytes, message: bytes) -> bytes:
        """Sign `context || message`; every signature in onionmesh carries a distinct context string."""
        return self._sk.sign(context + message).signature

    def __repr__(self) -> str:  # never print key material
        return f"IdentityKey({self.fingerprint})"


class OnionKey:
    """An X25519 key pair used by relays in the circuit handshake."""

    __slots__ = ("public", "secret")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("onion secret must be 32 bytes")
        self.secret = secret
        self.public: bytes = crypto_scalarmult_base(secret)

    @classmethod
    def generate(cls, rng: Rng) -> OnionKey:
        return cls(rng.random_bytes(32))

    def __repr__(self) -> str:
        return f"OnionKey(public={self.public.hex()[:16]}...)"


@dataclass(frozen=True)
class OnionKeyCert:
    """The identity key's statement "onion key B is mine from valid_after until expires"."""

    onion_pk: bytes
    valid_after: int
    expires: int
    signature: bytes

    @staticmethod
    def _signed_part(onion_pk: bytes, valid_after: int, expires: int) -> bytes:
        return Buffer().push_bytes(onion_pk).push_u64(valid_after).push_u64(expires).getvalue()

    @classmethod
    def issue(cls, identity: IdentityKey, onion_pk: bytes, valid_after: int, expires: int) -> OnionKeyCert:
        body = cls._signed_part(onion_pk, valid_after, expires)
        return cls(onion_pk, valid_after, expires, identity.sign(ONION_CERT_CONTEXT, body))

    def encode(self) -> bytes:
        return self._signed_part(self.onion_pk, self.valid_after, self.expires) + self.signature

    @classmethod
    def pull(cls, buf: Buffer) -> OnionKeyCert:
        onion_pk = buf.pull_bytes(32)
        valid_after = buf.pull_u64()
        expires = buf.pull_u64()
        signature = buf.pull_bytes(64)
        return cls(onion_pk, valid_after, expires, signature)

    @classmethod
    def decode(cls, data: bytes) -> OnionKeyCert:
        buf = Buffer(data)
        cert = cls.pull(buf)
        buf.expect_end()
        return cert

    def verify(self, identity_pk: bytes, now: float) -> None:
        """Raise CryptoError unless signed by `identity_pk` and valid at `now`."""
        if self.expires <= self.valid_after:
            raise RemoteProtocolError("onion-key certificate has an empty validity window")
        verify_signature(
            identity_pk,
            ONION_CERT_CONTEXT,
            self._signed_part(self.onion_pk, self.valid_after, self.expires),
            self.signature,
        )
        if not (self.valid_after <= now < self.expires):
            raise CryptoError("onion-key certificate is not valid now")


__all__ = [
    "IdentityKey",
    "OnionKey",
    "OnionKeyCert",
    "fingerprint",
    "verify_signature",
]
