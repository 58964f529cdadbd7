"""Onion-service descriptors: onionmesh's compact binary record with Tor's two encryption layers.

    record = "OMHS" | u8 version (1) | blinded_pk (32) | u64 period | u64 revision
             | u64 valid_after | u16 lifetime_min | vec16 outer | signature (64, by blinded_pk)

What a DHT node storing it sees: a blinded key that changes every period, the period, the
revision, times, and ciphertext.  The outer layer is keyed from the blinded key and the
subcredential (which needs the service's public key, i.e. the address), so the node learns
neither the address nor the introduction points, nor can it link two periods.  The inner layer
is additionally keyed by a descriptor cookie when discovery is restricted; each authorized
client finds the cookie in an auth-client entry it alone can open (x25519, as Tor's).  The
service always writes at least 8 auth-client entries and pads the inner plaintext to a fixed
size, so neither whether discovery is restricted nor the number of intro points shows.

Choices (docs/protocol.md §16.4): direct signature by the blinded key, no per-descriptor signing
key certificate (the identity key is online in onionmesh's services, and each storing node then
checks one signature, not two); XChaCha20-Poly1305 instead of AES-256-CTR + SHA3 MAC (libsodium
has it on every machine; the AEAD tag is the MAC); SHAKE-256 key derivation as Tor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from onionmesh.crypto import hs_blinding, sodium
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.crypto.keys import verify_signature
from onionmesh.crypto.x25519 import x25519
from onionmesh.directory.descriptor import Address, _check_address, _pull_address, _push_address
from onionmesh.errors import CryptoError, DescriptorDecryptError, RemoteProtocolError, Truncated
from onionmesh.rng import Rng
from onionmesh.wire.buffer import Buffer

MAGIC = b"OMHS"
VERSION = 1
SIGNATURE_CONTEXT = b"onionmesh hs descriptor v1\x00"
OUTER_CONSTANT = b"onionmesh-hsdir-superencrypted-data-v1"
INNER_CONSTANT = b"onionmesh-hsdir-encrypted-data-v1"
HEADER_LEN = 4 + 1 + 32 + 8 + 8 + 8 + 2
SALT_LEN = 16
TAG_LEN = 16
INNER_PLAINTEXT_LEN = 1536
INNER_CIPHERTEXT_LEN = SALT_LEN + INNER_PLAINTEXT_LEN + TAG_LEN
MAX_INTRO_POINTS = 8
MAX_AUTH_CLIENTS = 24
AUTH_CLIENT_BLOCK = 8  # entries are padded with fake ones to a multiple of this (at least one block)
AUTH_ENTRY_LEN = 8 + 24 + 32  # client_id | nonce | encrypted cookie
MAX_LIFETIME_MIN = 180  # Tor's descriptor-lifetime
CLOCK_SKEW = 600
MAX_RECORD_LEN = 3584  # fits one DHT `store` datagram (4096) with its header and msgpack framing
POW_TYPE_V1 = 1


@dataclass(frozen=True)
class IntroPoint:
    identity_pk: bytes  # the relay's Ed25519 identity (its fingerprint names it)
    onion_pk: bytes  # the relay's X25519 onion key, to extend to it
    link_addresses: tuple[Address, ...]  # 1..2, as relay descriptors name them
    auth_key: bytes  # Ed25519 intro auth key (ESTABLISH_INTRO, INTRODUCE1)
    enc_key: bytes  # X25519 service key for hs-ntor at this intro point


@dataclass(frozen=True)
class PowParams:
    seed: bytes  # 32
    suggested_effort: int  # u32
    expires: int  # u64 unix time


@dataclass(frozen=True)
class InnerDescriptor:
    intro_points: tuple[IntroPoint, ...]
    pow: PowParams | None = None
    flags: int = 0  # reserved, 0

    def encode(self) -> bytes:
        n = len(self.intro_points)
        if not 1 <= n <= MAX_INTRO_POINTS or self.flags != 0:
            raise ValueError("1..8 intro points, flags 0")
        buf = Buffer().push_u8(self.flags).push_u8(n)
        for ip in self.intro_points:
            if not 1 <= len(ip.link_addresses) <= 2:
                raise ValueError("1..2 link addresses per intro point")
            buf.push_bytes(ip.identity_pk).push_bytes(ip.onion_pk).push_u8(len(ip.link_addresses))
            for addr in ip.link_addresses:
                _check_address(addr)
                _push_address(buf, addr)
            buf.push_bytes(ip.auth_key).push_bytes(ip.enc_key)
        if self.pow is None:
            buf.push_u8(0)
        else:
            p = self.pow
            buf.push_u8(POW_TYPE_V1).push_bytes(p.seed).push_u32(p.suggested_effort).push_u64(p.expires)
        body = buf.getvalue()
        return body + bytes(INNER_PLAINTEXT_LEN - len(body))

    @classmethod
    def decode(cls, data: bytes) -> InnerDescriptor:
        buf = Buffer(data)
        try:
            if len(data) != INNER_PLAINTEXT_LEN or buf.pull_u8() != 0:
                raise ValueError("bad inner layer")
            n = buf.pull_u8()
            if not 1 <= n <= MAX_INTRO_POINTS:
                raise ValueError("1..8 intro points")
            points = []
            for _ in range(n):
                ident, onion = buf.pull_bytes(32), buf.pull_bytes(32)
                naddr = buf.pull_u8()
                if not 1 <= naddr <= 2:
                    raise ValueError("1..2 link addresses")
                addrs = tuple(_pull_address(buf) for _ in range(naddr))
                for addr in addrs:
                    _check_address(addr)
                points.append(IntroPoint(ident, onion, addrs, buf.pull_bytes(32), buf.pull_bytes(32)))
            pow_type = buf.pull_u8()
            pow_params = None
            if pow_type == POW_TYPE_V1:
                pow_params = PowParams(buf.pull_bytes(32), buf.pull_u32(), buf.pull_u64())
            elif pow_type != 0:
                raise ValueError("unknown PoW type")
            if any(buf.pull_rest()):
                raise ValueError("non-zero padding")
        except (Truncated, ValueError) as exc:
            raise RemoteProtocolError("malformed inner descriptor") from exc
        return cls(tuple(points), pow_params)


# --------------------------------------------------------------------------- the layers


def _layer_keys(
    secret_data: bytes, subcred: bytes, revision: int, salt: bytes, constant: bytes
) -> tuple[bytes, bytes]:
    """(key, nonce) = SHAKE-256(SECRET_DATA | subcred | INT_8(revision) | salt | constant, 56)."""
    k = hashlib.shake_256(secret_data + subcred + revision.to_bytes(8, "big") + salt + constant).digest(56)
    return k[:32], k[32:]


def _seal(
    plain: bytes, ad: bytes, secret_data: bytes, subcred: bytes, revision: int, constant: bytes, salt: bytes
) -> bytes:
    key, nonce = _layer_keys(secret_data, subcred, revision, salt, constant)
    return salt + crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)


def _open(
    sealed: bytes, ad: bytes, secret_data: bytes, subcred: bytes, revision: int, constant: bytes
) -> bytes:
    if len(sealed) < SALT_LEN + TAG_LEN:
        raise CryptoError("layer too short")
    key, nonce = _layer_keys(secret_data, subcred, revision, sealed[:SALT_LEN], constant)
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[SALT_LEN:], ad, nonce, key)
    except (NaclCryptoError, ValueError) as exc:
        raise CryptoError("layer does not authenticate") from exc


def auth_client_keys(subcred: bytes, secret_seed: bytes) -> tuple[bytes, bytes]:
    """(CLIENT-ID 8, COOKIE-KEY 32) = SHAKE-256(subcred | SECRET_SEED, 40), as Tor."""
    k = hashlib.shake_256(subcred + secret_seed).digest(40)
    return k[:8], k[8:]


@dataclass(frozen=True)
class OuterRecord:
    """The part every storing node parses and checks (no key needed)."""

    blinded_pk: bytes
    period: int
    revision: int
    valid_after: int
    lifetime_min: int
    outer: bytes
    signature: bytes
    raw: bytes

    @property
    def expires(self) -> int:
        return self.valid_after + 60 * self.lifetime_min

    def header(self) -> bytes:
        return self.raw[:HEADER_LEN]

    def check(self, now: float) -> None:
        """What a storing node checks without the address: signature by the blinded key, times,
        and that the period is the node's current one or adjacent (clock skew, early publication)."""
        verify_signature(self.blinded_pk, SIGNATURE_CONTEXT, self.raw[:-64], self.signature)
        if not 1 <= self.lifetime_min <= MAX_LIFETIME_MIN:
            raise RemoteProtocolError("descriptor lifetime out of range")
        if not (self.valid_after <= now + CLOCK_SKEW and now < self.expires):
            raise CryptoError("descriptor is not valid now")
        if abs(self.period - hs_blinding.period_num(int(now))) > 1:
            raise CryptoError("descriptor is for another time period")


def parse_record(data: bytes) -> OuterRecord:
    """Canonical parse of the outer record; RemoteProtocolError on anything malformed."""
    if not isinstance(data, bytes) or len(data) > MAX_RECORD_LEN:
        raise RemoteProtocolError("descriptor record too long")
    buf = Buffer(data)
    try:
        if buf.pull_bytes(4) != MAGIC or buf.pull_u8() != VERSION:
            raise ValueError("not an onion-service descriptor v1")
        rec = OuterRecord(
            buf.pull_bytes(32), buf.pull_u64(), buf.pull_u64(), buf.pull_u64(), buf.pull_u16(),
            buf.pull_vec16(), buf.pull_bytes(64), data,
        )  # fmt: skip
        buf.expect_end()
    except (Truncated, ValueError) as exc:
        raise RemoteProtocolError("malformed descriptor record") from exc
    return rec


def build_record(
    identity: ExpandedKey,
    inner: InnerDescriptor,
    *,
    period: int,
    revision: int,
    valid_after: int,
    lifetime_min: int,
    rng: Rng,
    client_keys: tuple[bytes, ...] = (),
) -> bytes:
    """The service's side: seal `inner` for period `period`, signed by the blinded key.
    `client_keys` (x25519 public keys) turns restricted discovery on."""
    if len(client_keys) > MAX_AUTH_CLIENTS:
        raise ValueError("too many authorized clients")
    pk = identity.public
    blinded = identity.blind(period)
    subcred = hs_blinding.subcredential(pk, blinded.public)
    cookie = rng.random_bytes(32) if client_keys else b""
    inner_ct = _seal(
        inner.encode(),
        b"",
        blinded.public + cookie,
        subcred,
        revision,
        INNER_CONSTANT,
        rng.random_bytes(SALT_LEN),
    )
    eph = rng.random_bytes(32)
    entries = []
    for client_pk in client_keys:
        client_id, cookie_key = auth_client_keys(subcred, x25519(eph, client_pk, "auth-client"))
        nonce = rng.random_bytes(24)
        entries.append(client_id + nonce + sodium.xchacha20_xor_tail(cookie, 0, nonce, cookie_key)[0])
    total = max(AUTH_CLIENT_BLOCK, -(-len(entries) // AUTH_CLIENT_BLOCK) * AUTH_CLIENT_BLOCK)
    entries += [rng.random_bytes(AUTH_ENTRY_LEN) for _ in range(total - len(entries))]
    entries = [entries[i] for i in _shuffle(len(entries), rng)]
    outer_plain = b"\x01" + crypto_scalarmult_base(eph) + bytes([total]) + b"".join(entries) + inner_ct
    header = (
        Buffer().push_bytes(MAGIC).push_u8(VERSION).push_bytes(blinded.public).push_u64(period)
        .push_u64(revision).push_u64(valid_after).push_u16(lifetime_min).getvalue()
    )  # fmt: skip
    outer = _seal(
        outer_plain, header, blinded.public, subcred, revision, OUTER_CONSTANT, rng.random_bytes(SALT_LEN)
    )
    unsigned = header + Buffer().push_vec16(outer).getvalue()
    record = unsigned + blinded.sign(SIGNATURE_CONTEXT + unsigned)
    if len(record) > MAX_RECORD_LEN:
        raise ValueError("descriptor record too long")
    return record


def _shuffle(n: int, rng: Rng) -> list[int]:
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randbelow(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def decrypt_record(
    record: OuterRecord, service_pk: bytes, client_secret: bytes | None = None
) -> InnerDescriptor:
    """The client's side (it knows the address): check the blinded key is this service's for the
    record's period, then open both layers.  RemoteProtocolError for a bad record,
    DescriptorDecryptError(auth="missing"|"wrong") when restricted discovery stops us."""
    blinded = hs_blinding.blind_public(service_pk, record.period)
    if blinded != record.blinded_pk:
        raise CryptoError("descriptor is not this service's for its period")
    subcred = hs_blinding.subcredential(service_pk, blinded)
    plain = _open(record.outer, record.header(), blinded, subcred, record.revision, OUTER_CONSTANT)
    try:
        buf = Buffer(plain)
        if buf.pull_u8() != 1:
            raise ValueError("unknown auth type")
        eph_pk, total = buf.pull_bytes(32), buf.pull_u8()
        if total % AUTH_CLIENT_BLOCK or not AUTH_CLIENT_BLOCK <= total <= MAX_AUTH_CLIENTS:
            raise ValueError("bad auth-client count")
        entries = [buf.pull_bytes(AUTH_ENTRY_LEN) for _ in range(total)]
        inner_ct = buf.pull_bytes(INNER_CIPHERTEXT_LEN)
        buf.expect_end()
    except (Truncated, ValueError) as exc:
        raise RemoteProtocolError("malformed outer layer") from exc
    cookie = b""
    if client_secret is not None:
        client_id, cookie_key = auth_client_keys(subcred, x25519(client_secret, eph_pk, "auth-client"))
        for entry in entries:
            if entry[:8] == client_id:
                cookie = sodium.xchacha20_xor_tail(entry[32:], 0, entry[8:32], cookie_key)[0]
                break
    try:
        inner = _open(inner_ct, b"", blinded + cookie, subcred, record.revision, INNER_CONSTANT)
    except CryptoError as exc:
        if cookie:
            raise DescriptorDecryptError("client key not accepted", "wrong") from exc
        if client_secret is not None:
            raise DescriptorDecryptError("client key not authorized", "wrong") from exc
        raise DescriptorDecryptError("restricted discovery: a client key is needed", "missing") from exc
    return InnerDescriptor.decode(inner)
