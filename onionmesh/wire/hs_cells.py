"""Bodies of the onion-service relay messages (rend-spec-v3 §3-4, in onionmesh's byte layout).

    ESTABLISH_INTRO (32)       service -> intro point: auth key, extensions (DoS), circuit binding, signature
    INTRO_ESTABLISHED (38)     intro point -> service: extensions
    INTRODUCE1 (34) / 2 (35)   client -> intro point -> service, identical bodies: auth key, extensions
                               (PoW), the client's X, the sealed plaintext, MAC
    INTRODUCE_ACK (40)         intro point -> client: status, extensions
    ESTABLISH_RENDEZVOUS (33)  client -> rendezvous point: 20-byte cookie
    RENDEZVOUS_ESTABLISHED (39) empty
    RENDEZVOUS1 (36)           service -> rendezvous point: cookie, HANDSHAKE_INFO (Y, AUTH)
    RENDEZVOUS2 (37)           rendezvous point -> client: HANDSHAKE_INFO

Codecs only: decoding peer bytes raises only RemoteProtocolError; the signature, MAC and
encryption live in crypto.hs_intro.  Layout: docs/protocol.md §16.6.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from onionmesh.wire.buffer import Buffer
from onionmesh.wire.relay_msg import _decoding

AUTH_KEY_TYPE_ED25519 = 2  # Tor's type: Ed25519 key, SHA3-256 MAC
COOKIE_LEN = 20
HANDSHAKE_INFO_LEN = 64
CLIENT_PK_LEN = 32
MAC_LEN = 32
INTRODUCE_PLAINTEXT_LEN = 512  # the sealed INTRODUCE plaintext is always this long (padded)
MAX_EXTENSIONS = 8


class ExtType(enum.IntEnum):
    DOS_PARAMS = 1  # ESTABLISH_INTRO (rend-spec-v3 §3.1.1.1)
    POW = 2  # INTRODUCE1, cleartext (onionmesh's PoW, docs/protocol.md §16.8)


class DosParam(enum.IntEnum):
    INTRODUCE2_RATE_PER_SEC = 1
    INTRODUCE2_BURST_PER_SEC = 2


DOS_PARAM_MAX = 2**31 - 1


class IntroduceAckStatus(enum.IntEnum):
    SUCCESS = 0
    SERVICE_NOT_RECOGNIZED = 1
    BAD_MESSAGE_FORMAT = 2
    CANT_RELAY = 3


Extensions = tuple[tuple[int, bytes], ...]


def push_extensions(buf: Buffer, exts: Extensions) -> None:
    if len(exts) > MAX_EXTENSIONS:
        raise ValueError("too many extensions")
    buf.push_u8(len(exts))
    for kind, data in exts:
        buf.push_u8(kind).push_vec8(data)


def pull_extensions(buf: Buffer) -> Extensions:
    """Unknown types are kept (and ignored by readers); only the first of each type counts."""
    n = buf.pull_u8()
    if n > MAX_EXTENSIONS:
        raise ValueError("too many extensions")
    return tuple((buf.pull_u8(), buf.pull_vec8()) for _ in range(n))


def first_extension(exts: Extensions, kind: int) -> bytes | None:
    return next((data for k, data in exts if k == kind), None)


def _pull_auth_key(buf: Buffer) -> bytes:
    if buf.pull_u8() != AUTH_KEY_TYPE_ED25519:
        raise ValueError("unknown auth key type")
    key = buf.pull_vec16()
    if len(key) != 32:
        raise ValueError("an Ed25519 auth key is 32 bytes")
    return key


@dataclass(frozen=True, slots=True)
class DosParams:
    """Rate and burst of INTRODUCE2 the intro point lets through; 0 disables (Tor's semantics)."""

    rate: int
    burst: int

    def encode(self) -> bytes:
        buf = Buffer().push_u8(2)
        buf.push_u8(DosParam.INTRODUCE2_RATE_PER_SEC).push_u64(self.rate)
        return buf.push_u8(DosParam.INTRODUCE2_BURST_PER_SEC).push_u64(self.burst).getvalue()

    @_decoding("DoS extension")
    def decode(cls, buf: Buffer) -> DosParams:
        values: dict[int, int] = {}
        for _ in range(buf.pull_u8()):
            kind, value = buf.pull_u8(), buf.pull_u64()
            if value > DOS_PARAM_MAX:
                raise ValueError("DoS parameter out of range")
            values.setdefault(kind, value)
        return cls(
            values.get(DosParam.INTRODUCE2_RATE_PER_SEC, 0), values.get(DosParam.INTRODUCE2_BURST_PER_SEC, 0)
        )

    @property
    def enabled(self) -> bool:
        """Tor: either value 0 disables the defence, and burst < rate makes the pair ignored."""
        return self.rate > 0 and self.burst > 0 and self.burst >= self.rate


@dataclass(frozen=True, slots=True)
class EstablishIntro:
    """`signed_part()` is what HANDSHAKE_AUTH covers; the signature covers it plus HANDSHAKE_AUTH."""

    auth_key: bytes
    extensions: Extensions
    handshake_auth: bytes  # MAC_LEN bytes: binds the message to this circuit (crypto.hs_intro)
    signature: bytes  # 64 bytes, Ed25519 by auth_key

    @staticmethod
    def authenticated_part(auth_key: bytes, extensions: Extensions) -> bytes:
        buf = Buffer().push_u8(AUTH_KEY_TYPE_ED25519).push_vec16(auth_key)
        push_extensions(buf, extensions)
        return buf.getvalue()

    def signed_part(self) -> bytes:
        return self.authenticated_part(self.auth_key, self.extensions) + self.handshake_auth

    def encode(self) -> bytes:
        return Buffer().push_bytes(self.signed_part()).push_vec16(self.signature).getvalue()

    @_decoding("ESTABLISH_INTRO")
    def decode(cls, buf: Buffer) -> EstablishIntro:
        key = _pull_auth_key(buf)
        exts = pull_extensions(buf)
        auth = buf.pull_bytes(MAC_LEN)
        sig = buf.pull_vec16()
        if len(sig) != 64:
            raise ValueError("an Ed25519 signature is 64 bytes")
        return cls(key, exts, auth, sig)

    @property
    def dos_params(self) -> DosParams | None:
        raw = first_extension(self.extensions, ExtType.DOS_PARAMS)
        return None if raw is None else DosParams.decode(raw)


@dataclass(frozen=True, slots=True)
class IntroEstablished:
    extensions: Extensions = ()

    def encode(self) -> bytes:
        buf = Buffer()
        push_extensions(buf, self.extensions)
        return buf.getvalue()

    @_decoding("INTRO_ESTABLISHED")
    def decode(cls, buf: Buffer) -> IntroEstablished:
        return cls(pull_extensions(buf))


@dataclass(frozen=True, slots=True)
class Introduce1:
    """INTRODUCE1 and INTRODUCE2 (same body).  `ciphertext` is the sealed plaintext
    (INTRODUCE_PLAINTEXT_LEN bytes); `mac` covers every byte before it (crypto.hs_intro)."""

    auth_key: bytes
    extensions: Extensions
    client_pk: bytes
    ciphertext: bytes
    mac: bytes

    def mac_input(self) -> bytes:
        buf = Buffer().push_u8(AUTH_KEY_TYPE_ED25519).push_vec16(self.auth_key)
        push_extensions(buf, self.extensions)
        return buf.push_bytes(self.client_pk).push_bytes(self.ciphertext).getvalue()

    def encode(self) -> bytes:
        if len(self.ciphertext) != INTRODUCE_PLAINTEXT_LEN or len(self.mac) != MAC_LEN:
            raise ValueError("INTRODUCE ciphertext or MAC of the wrong length")
        return self.mac_input() + self.mac

    @_decoding("INTRODUCE1")
    def decode(cls, buf: Buffer) -> Introduce1:
        key = _pull_auth_key(buf)
        exts = pull_extensions(buf)
        return cls(
            key,
            exts,
            buf.pull_bytes(CLIENT_PK_LEN),
            buf.pull_bytes(INTRODUCE_PLAINTEXT_LEN),
            buf.pull_bytes(MAC_LEN),
        )


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A rendezvous point's link specifier: EXTEND's types (wire.relay_msg.LinkSpecType), raw."""

    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class IntroducePlaintext:
    """What INTRODUCE1 seals for the service: where to meet and with which onion key."""

    rendezvous_cookie: bytes
    onion_key: bytes  # the rendezvous point's X25519 onion key (ONION_KEY_TYPE 1)
    link_specs: tuple[LinkSpec, ...]
    extensions: Extensions = ()

    def encode(self) -> bytes:
        buf = Buffer().push_bytes(self.rendezvous_cookie)
        push_extensions(buf, self.extensions)
        buf.push_u8(1).push_vec16(self.onion_key).push_u8(len(self.link_specs))
        for spec in self.link_specs:
            buf.push_u8(spec.kind).push_vec8(spec.data)
        body = buf.getvalue()
        if len(self.rendezvous_cookie) != COOKIE_LEN or len(body) > INTRODUCE_PLAINTEXT_LEN:
            raise ValueError("INTRODUCE plaintext too long or bad cookie")
        return body + bytes(INTRODUCE_PLAINTEXT_LEN - len(body))

    @_decoding("INTRODUCE plaintext")
    def decode(cls, buf: Buffer) -> IntroducePlaintext:
        if buf.remaining != INTRODUCE_PLAINTEXT_LEN:
            raise ValueError("INTRODUCE plaintext has the wrong length")
        cookie = buf.pull_bytes(COOKIE_LEN)
        exts = pull_extensions(buf)
        if buf.pull_u8() != 1:
            raise ValueError("unknown onion key type")
        onion_key = buf.pull_vec16()
        if len(onion_key) != 32:
            raise ValueError("an onion key is 32 bytes")
        n = buf.pull_u8()
        if not 1 <= n <= 8:
            raise ValueError("1..8 link specifiers")
        specs = tuple(LinkSpec(buf.pull_u8(), buf.pull_vec8()) for _ in range(n))
        if any(buf.pull_rest()):
            raise ValueError("non-zero padding")
        return cls(cookie, onion_key, specs, exts)


@dataclass(frozen=True, slots=True)
class IntroduceAck:
    status: IntroduceAckStatus
    extensions: Extensions = ()

    def encode(self) -> bytes:
        buf = Buffer().push_u16(self.status)
        push_extensions(buf, self.extensions)
        return buf.getvalue()

    @_decoding("INTRODUCE_ACK")
    def decode(cls, buf: Buffer) -> IntroduceAck:
        return cls(IntroduceAckStatus(buf.pull_u16()), pull_extensions(buf))


@dataclass(frozen=True, slots=True)
class EstablishRendezvous:
    cookie: bytes

    def encode(self) -> bytes:
        if len(self.cookie) != COOKIE_LEN:
            raise ValueError("a rendezvous cookie is 20 bytes")
        return self.cookie

    @_decoding("ESTABLISH_RENDEZVOUS")
    def decode(cls, buf: Buffer) -> EstablishRendezvous:
        return cls(buf.pull_bytes(COOKIE_LEN))


@dataclass(frozen=True, slots=True)
class RendezvousEstablished:
    def encode(self) -> bytes:
        return b""

    @_decoding("RENDEZVOUS_ESTABLISHED")
    def decode(cls, buf: Buffer) -> RendezvousEstablished:
        return cls()


@dataclass(frozen=True, slots=True)
class Rendezvous1:
    cookie: bytes
    handshake_info: bytes

    def encode(self) -> bytes:
        if len(self.cookie) != COOKIE_LEN or len(self.handshake_info) != HANDSHAKE_INFO_LEN:
            raise ValueError("RENDEZVOUS1 field of the wrong length")
        return self.cookie + self.handshake_info

    @_decoding("RENDEZVOUS1")
    def decode(cls, buf: Buffer) -> Rendezvous1:
        return cls(buf.pull_bytes(COOKIE_LEN), buf.pull_bytes(HANDSHAKE_INFO_LEN))


@dataclass(frozen=True, slots=True)
class Rendezvous2:
    handshake_info: bytes

    def encode(self) -> bytes:
        if len(self.handshake_info) != HANDSHAKE_INFO_LEN:
            raise ValueError("HANDSHAKE_INFO is 64 bytes")
        return self.handshake_info

    @_decoding("RENDEZVOUS2")
    def decode(cls, buf: Buffer) -> Rendezvous2:
        return cls(buf.pull_bytes(HANDSHAKE_INFO_LEN))


@dataclass(frozen=True, slots=True)
class PowExtension:
    """INTRODUCE1's cleartext PoW extension (docs/protocol.md §16.8)."""

    version: int  # 1 = onionmesh-blake2b-1
    nonce: bytes  # 16
    effort: int  # u32
    seed_head: bytes  # first 4 bytes of the seed it was solved for

    def encode(self) -> bytes:
        return (
            Buffer()
            .push_u8(self.version)
            .push_bytes(self.nonce)
            .push_u32(self.effort)
            .push_bytes(self.seed_head)
            .getvalue()
        )

    @_decoding("PoW extension")
    def decode(cls, buf: Buffer) -> PowExtension:
        return cls(buf.pull_u8(), buf.pull_bytes(16), buf.pull_u32(), buf.pull_bytes(4))
