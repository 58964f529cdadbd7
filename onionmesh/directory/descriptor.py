"""Signed relay descriptors: what a relay says about itself, in the one canonical encoding.

This module owns the `RelayDescriptor` value (nickname, identity key, certified onion key,
link addresses, DHT contact, exit-policy text, bandwidth, family, protocols, validity window),
its canonical binary encoding (one and only one encoding per descriptor; anything else is
rejected on decode), its Ed25519 signature by the identity key, its verification against a
clock passed in as `now`, and the key it is stored under in the DHT (`dht_key`).

Untrusted bytes go through `decode_and_verify` only; it raises `OnionmeshError` subclasses only.

Encoding (big-endian), then a 64-byte signature over `SIGNATURE_CONTEXT || everything before it`::

    u8 version=1 | vec8 nickname | identity_pk[32] | onion cert[112] | u8 n (1..4) * address
    | u8 has_dht (0/1) [address] | vec16 exit_policy (UTF-8) | u32 bandwidth
    | u8 n (0..8) * family_pk[32], strictly ascending | vec8 protocols (ASCII)
    | u64 published | u64 expires | [u8 1 | vec16 udp_exit_policy (UTF-8, non-empty)] | signature[64]
    address = u8 type (4 or 6) | 4 or 16 address bytes | u16 port (1..65535)

The bracketed UDP exit policy (issue 22) is present exactly when the relay exits UDP; a descriptor
without it is byte for byte what it was before UDP existed, so older descriptors still verify.

Not in this module: DHT storage, exit-policy parsing, the JSON directory file (descriptor_file).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from onionmesh.crypto import ntor
from onionmesh.crypto.keys import IdentityKey, OnionKeyCert, fingerprint, verify_signature
from onionmesh.errors import DirectoryError, RemoteProtocolError, Truncated
from onionmesh.wire.bridge_cells import MAX_DESCRIPTOR_LEN  # the wire's bound, re-exported
from onionmesh.wire.buffer import Buffer

DESCRIPTOR_VERSION = 1
SIGNATURE_CONTEXT = b"onionmesh relay descriptor v1\x00"
DHT_KEY_PREFIX = b"onionmesh-descriptor-key"
# circ= lists the circuit handshake types this relay answers (each names a layer suite)
# relay=2: stream SENDMEs may carry credit (a u16 increment), so stream windows can grow (proto.flow)
# relay=3: the exit holds optimistic data (DATA behind BEGIN, before CONNECTED; protocol §7.4)
DEFAULT_PROTOCOLS = "link=2 circ=" + ",".join(str(t) for t in sorted(ntor.LOCAL_TYPES)) + " relay=1-3"
DEFAULT_LIFETIME = 18 * 3600  # for tests and simulations; a relay signs 72 h (runtime/relay/node.py)
MAX_LIFETIME = 3 * 24 * 3600
MAX_NICKNAME_LEN = 19
MAX_LINK_ADDRESSES = 4
MAX_EXIT_POLICY_LEN = 1024
MAX_FAMILY = 8
MAX_PROTOCOLS_LEN = 64
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

_EXT_UDP_POLICY = 1  # the only descriptor extension: the UDP exit policy
_NICKNAME_RE = re.compile(rf"[A-Za-z0-9]{{1,{MAX_NICKNAME_LEN}}}")
_PROTOCOLS_RE = re.compile(rf"[\x20-\x7e]{{0,{MAX_PROTOCOLS_LEN}}}")
_VERSION_RANGE_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")

Address = tuple[str, int]


def protocol_versions(protocols: str, name: str) -> frozenset[int]:
    """The versions a descriptor's protocols text lists for `name` ("circ=3,4" -> {3, 4}; ranges
    "3-4" too).  Text a peer wrote: anything malformed, and ranges wider than 64, count as absent."""
    for token in protocols.split():
        key, _, value = token.partition("=")
        if key != name:
            continue
        found: set[int] = set()
        for item in value.split(","):
            if (m := _VERSION_RANGE_RE.fullmatch(item)) is None:
                continue
            lo = int(m[1])
            hi = int(m[2]) if m[2] else lo
            if 0 <= hi - lo < 64:
                found.update(range(lo, hi + 1))
        return frozenset(found)
    return frozenset()


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def canonical_address(ip: str, port: int) -> Address:
    """Normalise `(ip text, port)` to the form a descriptor stores; ValueError if unusable."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    result = (str(addr), port)
    _check_address(result)
    return result


def _check_address(address: object) -> None:
    _require(isinstance(address, tuple) and len(address) == 2, "address must be (ip, port)")
    assert isinstance(address, tuple)
    ip, port = address
    _require(isinstance(ip, str) and type(port) is int, "address must be (str, int)")
    _require(1 <= port <= 0xFFFF, "port out of range")
    addr = ipaddress.ip_address(ip)
    _require(str(addr) == ip, "ip address text is not canonical")
    _require(not (addr.is_unspecified or addr.is_multicast), "unusable ip address")
    if isinstance(addr, ipaddress.IPv6Address):
        _require(addr.ipv4_mapped is None, "IPv4-mapped IPv6 address")
        _require(addr.scope_id is None, "scoped IPv6 address")


def _push_address(buf: Buffer, address: Address) -> None:
    addr = ipaddress.ip_address(address[0])
    buf.push_u8(addr.version).push_bytes(addr.packed).push_u16(address[1])


def _pull_address(buf: Buffer) -> Address:
    kind = buf.pull_u8()
    if kind == 4:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(buf.pull_bytes(4))
    elif kind == 6:
        addr = ipaddress.IPv6Address(buf.pull_bytes(16))
    else:
        raise RemoteProtocolError("unknown address type")
    return (str(addr), buf.pull_u16())


def descriptor_key(fingerprint_hex: str) -> bytes:
    """The DHT key of a relay's descriptor: BLAKE2b-160("onionmesh-descriptor-key" || fingerprint).

    Derived from the 20-byte fingerprint (not the identity key itself) so that anyone who knows a
    relay's fingerprint can look its descriptor up.
    """
    return hashlib.blake2b(DHT_KEY_PREFIX + bytes.fromhex(fingerprint_hex), digest_size=20).digest()


@dataclass(frozen=True)
class RelayDescriptor:
    """A relay's signed self-description.  Constructing one checks its shape, not its signature."""

    version: int
    nickname: str
    identity_pk: bytes
    onion_cert: OnionKeyCert
    link_addresses: tuple[Address, ...]
    dht_contact: Address | None
    exit_policy: str
    bandwidth: int
    family: tuple[bytes, ...]
    protocols: str
    published: int
    expires: int
    signature: bytes
    exit_policy_udp: str = ""  # Tor-syntax UDP exit policy; empty: this relay exits no UDP

    def __post_init__(self) -> None:
        _require(self.version == DESCRIPTOR_VERSION and type(self.version) is int, "unknown version")
        _require(
            isinstance(self.nickname, str) and bool(_NICKNAME_RE.fullmatch(self.nickname)), "bad nickname"
        )
        _require(isinstance(self.identity_pk, bytes) and len(self.identity_pk) == 32, "bad identity key")
        cert = self.onion_cert
        _require(isinstance(cert, OnionKeyCert), "onion_cert must be an OnionKeyCert")
        _require(isinstance(cert.onion_pk, bytes) and len(cert.onion_pk) == 32, "bad onion key")
        _require(isinstance(cert.signature, bytes) and len(cert.signature) == 64, "bad onion cert signature")
        times = (cert.valid_after, cert.expires)
        _require(all(type(t) is int and 0 <= t <= U64_MAX for t in times), "bad onion cert times")
        _require(isinstance(self.link_addresses, tuple), "link_addresses must be a tuple")
        _require(1 <= len(self.link_addresses) <= MAX_LINK_ADDRESSES, "need 1 to 4 link addresses")
        for address in self.link_addresses:
            _check_address(address)
        _require(len(set(self.link_addresses)) == len(self.link_addresses), "duplicate link address")
        if self.dht_contact is not None:
            _check_address(self.dht_contact)
        _require(isinstance(self.exit_policy, str), "exit_policy must be str")
        _require(len(self.exit_policy.encode("utf-8")) <= MAX_EXIT_POLICY_LEN, "exit policy too long")
        _require(isinstance(self.exit_policy_udp, str), "exit_policy_udp must be str")
        _require(len(self.exit_policy_udp.encode("utf-8")) <= MAX_EXIT_POLICY_LEN, "UDP exit policy too long")
        _require(type(self.bandwidth) is int and 0 <= self.bandwidth <= U32_MAX, "bandwidth out of range")
        _require(isinstance(self.family, tuple) and len(self.family) <= MAX_FAMILY, "family too large")
        for member in self.family:
            _require(isinstance(member, bytes) and len(member) == 32, "bad family key")
        _require(all(a < b for a, b in zip(self.family, self.family[1:], strict=False)), "family not sorted")
        _require(self.identity_pk not in self.family, "family includes the relay itself")
        _require(
            isinstance(self.protocols, str) and bool(_PROTOCOLS_RE.fullmatch(self.protocols)), "bad protocols"
        )
        _require(type(self.published) is int and type(self.expires) is int, "times must be int")
        _require(0 <= self.published < self.expires <= U64_MAX, "bad validity window")
        _require(self.expires - self.published <= MAX_LIFETIME, "lifetime too long")
        _require(isinstance(self.signature, bytes) and len(self.signature) == 64, "bad signature length")

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        *,
        identity: IdentityKey,
        onion_cert: OnionKeyCert,
        nickname: str,
        link_addresses: Iterable[Address],
        dht_contact: Address | None,
        exit_policy: str,
        bandwidth: int,
        family: Iterable[bytes] = (),
        protocols: str = DEFAULT_PROTOCOLS,
        published: int,
        lifetime: int = DEFAULT_LIFETIME,
        exit_policy_udp: str = "",
    ) -> RelayDescriptor:
        """Build and sign a descriptor; normalises addresses and family, ValueError on bad input."""
        unsigned = cls(
            version=DESCRIPTOR_VERSION,
            nickname=nickname,
            identity_pk=identity.public,
            onion_cert=onion_cert,
            link_addresses=tuple(canonical_address(ip, port) for ip, port in link_addresses),
            dht_contact=None if dht_contact is None else canonical_address(*dht_contact),
            exit_policy=exit_policy,
            bandwidth=bandwidth,
            family=tuple(sorted(set(family))),
            protocols=protocols,
            published=published,
            expires=published + lifetime,
            signature=bytes(64),
            exit_policy_udp=exit_policy_udp,
        )
        signature = identity.sign(SIGNATURE_CONTEXT, unsigned._signed_body())
        return replace(unsigned, signature=signature)

    # --- encoding --------------------------------------------------------------------------
    def _signed_body(self) -> bytes:
        buf = Buffer()
        buf.push_u8(self.version).push_vec8(self.nickname.encode("ascii")).push_bytes(self.identity_pk)
        buf.push_bytes(self.onion_cert.encode()).push_u8(len(self.link_addresses))
        for address in self.link_addresses:
            _push_address(buf, address)
        if self.dht_contact is None:
            buf.push_u8(0)
        else:
            _push_address(buf.push_u8(1), self.dht_contact)
        buf.push_vec16(self.exit_policy.encode("utf-8")).push_u32(self.bandwidth).push_u8(len(self.family))
        for member in self.family:
            buf.push_bytes(member)
        buf.push_vec8(self.protocols.encode("ascii")).push_u64(self.published).push_u64(self.expires)
        if self.exit_policy_udp:
            buf.push_u8(_EXT_UDP_POLICY).push_vec16(self.exit_policy_udp.encode("utf-8"))
        return buf.getvalue()

    def encode(self) -> bytes:
        return self._signed_body() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> RelayDescriptor:
        """Parse one whole descriptor (no signature or time checks); RemoteProtocolError if malformed."""
        if len(data) > MAX_DESCRIPTOR_LEN:
            raise RemoteProtocolError("descriptor too long")
        data = bytes(data)
        try:
            buf = Buffer(data)
            version = buf.pull_u8()
            if version != DESCRIPTOR_VERSION:
                raise RemoteProtocolError("unknown descriptor version")
            nickname = buf.pull_vec8().decode("ascii")
            identity_pk = buf.pull_bytes(32)
            onion_cert = OnionKeyCert.pull(buf)
            link_addresses = tuple(_pull_address(buf) for _ in range(buf.pull_u8()))
            has_dht = buf.pull_u8()
            if has_dht > 1:
                raise RemoteProtocolError("bad dht_contact flag")
            dht_contact = _pull_address(buf) if has_dht else None
            exit_policy = buf.pull_vec16().decode("utf-8")
            bandwidth = buf.pull_u32()
            family = tuple(buf.pull_bytes(32) for _ in range(buf.pull_u8()))
            protocols = buf.pull_vec8().decode("ascii")
            published = buf.pull_u64()
            expires = buf.pull_u64()
            exit_policy_udp = ""
            if buf.remaining > 64:
                if buf.pull_u8() != _EXT_UDP_POLICY:
                    raise RemoteProtocolError("unknown descriptor extension")
                exit_policy_udp = buf.pull_vec16().decode("utf-8")
                if not exit_policy_udp:
                    raise RemoteProtocolError("empty UDP exit policy (absent is the only encoding)")
            signature = buf.pull_bytes(64)
            buf.expect_end()
            desc = cls(
                DESCRIPTOR_VERSION,
                nickname,
                identity_pk,
                onion_cert,
                link_addresses,
                dht_contact,
                exit_policy,
                bandwidth,
                family,
                protocols,
                published,
                expires,
                signature,
                exit_policy_udp,
            )
        except Truncated as exc:
            raise RemoteProtocolError("truncated descriptor") from exc
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("invalid text in descriptor") from exc
        except ValueError as exc:  # field checks, bad UTF-8/ASCII
            raise RemoteProtocolError(f"invalid descriptor: {exc}") from exc
        if desc.encode() != data:  # belt and braces: one value, one encoding
            raise RemoteProtocolError("non-canonical descriptor encoding")
        return desc

    # --- verification ----------------------------------------------------------------------
    def verify(self, now: float, *, max_clock_skew: float = 600) -> None:
        """Raise unless the descriptor is valid at `now`: DirectoryError (times) or CryptoError."""
        if not math.isfinite(now):
            raise ValueError("now must be finite")
        if self.published > now + max_clock_skew:
            raise DirectoryError("descriptor published in the future")
        if now >= self.expires:
            raise DirectoryError("descriptor expired")
        verify_signature(self.identity_pk, SIGNATURE_CONTEXT, self._signed_body(), self.signature)
        self.onion_cert.verify(self.identity_pk, now)

    # --- derived values --------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return fingerprint(self.identity_pk)

    @property
    def onion_pk(self) -> bytes:
        return self.onion_cert.onion_pk

    @property
    def is_exit(self) -> bool:
        return bool(self.exit_policy.strip())

    @property
    def exits_udp(self) -> bool:
        return bool(self.exit_policy_udp.strip())

    @property
    def dht_key(self) -> bytes:
        """The 20-byte Kademlia key this descriptor is stored under (computable from the fingerprint)."""
        return descriptor_key(self.fingerprint)

    @property
    def usable_until(self) -> int:
        """The last moment (exclusive) both the descriptor and its onion key are valid."""
        return min(self.expires, self.onion_cert.expires)

    def newer_than(self, other: RelayDescriptor) -> bool:
        return self.identity_pk == other.identity_pk and self.published > other.published


def decode_and_verify(data: bytes, now: float) -> RelayDescriptor:
    """Decode then verify untrusted bytes; raises OnionmeshError subclasses only."""
    desc = RelayDescriptor.decode(data)
    desc.verify(now)
    return desc


# --- testnet directory file ----------------------------------------------------------------
__all__ = [
    "DEFAULT_PROTOCOLS",
    "MAX_DESCRIPTOR_LEN",
    "MAX_LIFETIME",
    "SIGNATURE_CONTEXT",
    "RelayDescriptor",
    "canonical_address",
    "decode_and_verify",
    "descriptor_key",
]
