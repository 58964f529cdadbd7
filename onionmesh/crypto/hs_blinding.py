"""Time periods, Ed25519 key blinding, signing with a blinded key, and the subcredential.

Exactly rend-spec-v3 §2.1, §2.2.1 and appendix A.2, checked against Tor's own vectors
(tests/vectors/hs_tor.json).  Why blinding: each period the service signs its descriptor with a
key `A' = h·A` that only someone who knows the address can link to it; a DHT node storing the
descriptor sees a fresh, unlinkable key every period.  The blinded secret `a' = h·a mod l` has
no seed, so signing uses the expanded form (scalar, prefix) as Tor does: `r = SHA-512(prefix' | M)`,
`R = r·B`, `S = r + SHA-512(R | A' | M)·a' mod l`, a plain Ed25519 signature under `A'`.

Periods are computed from a time passed in (sans-I/O): the caller owns the clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp, crypto_scalarmult_ed25519_noclamp
from nacl.exceptions import RuntimeError as NaclRuntimeError

from onionmesh.errors import CryptoError

PERIOD_LENGTH_MIN = 1440  # rend-spec-v3 §2.2.1 default `hsdir-interval` (minutes)
ROTATION_OFFSET_MIN = 12 * 60  # 12 voting periods of an hour: periods start at 12:00 UTC
L = 2**252 + 27742317777372353535851937790883648493  # the order of the Ed25519 base point
BLIND_STRING = b"Derive temporary signing key\x00"
PREFIX_BLIND_STRING = b"Derive temporary signing key hash input"
# The base point as rend-spec-v3 appendix A.2 writes it, byte for byte.
BASEPOINT_STR = (
    b"(15112221349535400772501151409588531511454012693041857206046113283949847762202, "
    b"46316835694926478169428394003475163141307993866256225615783033603165251855960)"
)


def period_num(unix_time: int, length_min: int = PERIOD_LENGTH_MIN) -> int:
    """The time period containing `unix_time` (seconds): (minutes - 720) // length."""
    return (int(unix_time) // 60 - ROTATION_OFFSET_MIN) // length_min


def period_start(num: int, length_min: int = PERIOD_LENGTH_MIN) -> int:
    """Unix time (seconds) at which period `num` begins."""
    return (num * length_min + ROTATION_OFFSET_MIN) * 60


def blinding_param(
    pubkey: bytes, period: int, length_min: int = PERIOD_LENGTH_MIN, secret: bytes = b""
) -> bytes:
    """h = SHA3-256(BLIND_STRING | A | s | B | N), unclamped;
    N = "key-blind" | INT_8(period) | INT_8(length)."""
    nonce = b"key-blind" + period.to_bytes(8, "big") + length_min.to_bytes(8, "big")
    return hashlib.sha3_256(BLIND_STRING + pubkey + secret + BASEPOINT_STR + nonce).digest()


def _clamp(h: bytes) -> int:
    b = bytearray(h)
    b[0] &= 248
    b[31] &= 63
    b[31] |= 64
    return int.from_bytes(b, "little")


def blind_public_with_param(pubkey: bytes, param: bytes) -> bytes:
    """A' = clamp(param)·A (Tor's ed25519_public_blind)."""
    try:
        return crypto_scalarmult_ed25519_noclamp(_clamp(param).to_bytes(32, "little"), pubkey)
    except (NaclRuntimeError, ValueError, TypeError) as exc:
        raise CryptoError("not a usable Ed25519 public key") from exc


def blind_public(pubkey: bytes, period: int, length_min: int = PERIOD_LENGTH_MIN) -> bytes:
    """The blinded public key of the service `pubkey` for `period` (what storing nodes see)."""
    return blind_public_with_param(pubkey, blinding_param(pubkey, period, length_min))


def credential(pubkey: bytes) -> bytes:
    """N_hs_cred = SHA3-256("credential" | A)."""
    return hashlib.sha3_256(b"credential" + pubkey).digest()


def subcredential(pubkey: bytes, blinded: bytes) -> bytes:
    """N_hs_subcred = SHA3-256("subcredential" | N_hs_cred | A'): known only to who knows A."""
    return hashlib.sha3_256(b"subcredential" + credential(pubkey) + blinded).digest()


@dataclass(frozen=True, repr=False)
class ExpandedKey:
    """An Ed25519 secret in expanded form: scalar a (32 bytes, little-endian) and prefix (32)."""

    scalar: bytes
    prefix: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> ExpandedKey:
        """RFC 8032 key expansion: SHA-512(seed), the first half clamped."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        h = hashlib.sha512(seed).digest()
        return cls(_clamp(h[:32]).to_bytes(32, "little"), h[32:])

    @classmethod
    def from_bytes(cls, raw: bytes) -> ExpandedKey:
        """Tor's 64-byte expanded secret key (scalar | prefix)."""
        if len(raw) != 64:
            raise ValueError("an expanded Ed25519 key is 64 bytes")
        return cls(raw[:32], raw[32:])

    def to_bytes(self) -> bytes:
        return self.scalar + self.prefix

    @property
    def public(self) -> bytes:
        a = int.from_bytes(self.scalar, "little") % L
        return crypto_scalarmult_ed25519_base_noclamp(a.to_bytes(32, "little"))

    def blind_with_param(self, param: bytes) -> ExpandedKey:
        """a' = clamp(param)·a mod l; prefix' = SHA-512(PREFIX_BLIND_STRING | prefix)[:32]."""
        a = (_clamp(param) * int.from_bytes(self.scalar, "little")) % L
        prefix = hashlib.sha512(PREFIX_BLIND_STRING + self.prefix).digest()[:32]
        return ExpandedKey(a.to_bytes(32, "little"), prefix)

    def blind(self, period: int, length_min: int = PERIOD_LENGTH_MIN) -> ExpandedKey:
        return self.blind_with_param(blinding_param(self.public, period, length_min))

    def sign(self, message: bytes) -> bytes:
        """A pure Ed25519 signature (R | S) that verifies under `self.public`."""
        public = self.public
        r = int.from_bytes(hashlib.sha512(self.prefix + message).digest(), "little") % L
        if r == 0:  # probability 2^-252; libsodium refuses a zero scalar
            raise CryptoError("degenerate nonce")
        big_r = crypto_scalarmult_ed25519_base_noclamp(r.to_bytes(32, "little"))
        k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % L
        s = (r + k * int.from_bytes(self.scalar, "little")) % L
        return big_r + s.to_bytes(32, "little")

    def __repr__(self) -> str:  # never print key material
        return "ExpandedKey(...)"
