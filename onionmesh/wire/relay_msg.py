"""Relay messages: what travels end-to-end inside a circuit's layered cells.

    relay payload (4091 B) = tag T (12) | command u8 | stream_id u16 | length u16 | body | padding (zeros)

The padding is zeros: the layer cipher turns every byte into noise on the wire.  Body codecs
for each command live here as frozen dataclasses with `encode()` / `decode()`; decoding peer
bytes raises only `RemoteProtocolError`.  Layout: docs/protocol.md, "Relay messages".

Not in this module: the layer cipher that computes the tag (crypto.onion_layer), what a message means.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import NamedTuple

from onionmesh.errors import RemoteProtocolError, Truncated
from onionmesh.wire.buffer import Buffer
from onionmesh.wire.cell import CELL_PAYLOAD_LEN
from onionmesh.wire.relay_address import pull_address, push_address

TAG_LEN = 12  # the layer cipher's tag T, first in every relay payload (crypto.onion_layer)
RELAY_HEADER_LEN = 5
RELAY_BODY_MAX = CELL_PAYLOAD_LEN - TAG_LEN - RELAY_HEADER_LEN  # 4074
SENDME_NONCE_LEN = 16


class RelayCommand(enum.IntEnum):
    BEGIN = 1
    DATA = 2
    END = 3
    CONNECTED = 4
    SENDME = 5
    EXTEND = 6
    EXTENDED = 7
    TRUNCATE = 8
    TRUNCATED = 9
    DROP = 10
    RESOLVE = 11
    RESOLVED = 12
    DHT_RPC = 13  # stream_id = request id: one DHT RPC for the last hop to send (wire.dht_rpc)
    DHT_ANSWER = 14  # stream_id = request id: one chunk of its answer
    DIR_GET = 15  # stream_id = request id: one directory document (wire.dir_msg)
    # UDP flows (Tor's proposal 339; bodies in wire.udp_msg, docs/protocol.md §7.2 and §10.6)
    CONNECT_UDP = 16
    CONNECTED_UDP = 17
    DATAGRAM = 18
    DIR_DATA = 19  # stream_id = request id: one chunk of a DIR_GET's answer
    # onion services (Tor's numbers, rend-spec-v3 §0.5; bodies in wire.hs_cells)
    ESTABLISH_INTRO = 32
    ESTABLISH_RENDEZVOUS = 33
    INTRODUCE1 = 34
    INTRODUCE2 = 35
    RENDEZVOUS1 = 36
    RENDEZVOUS2 = 37
    INTRO_ESTABLISHED = 38
    RENDEZVOUS_ESTABLISHED = 39
    INTRODUCE_ACK = 40


class EndReason(enum.IntEnum):
    MISC = 1
    RESOLVEFAILED = 2
    CONNECTREFUSED = 3
    EXITPOLICY = 4
    DESTROY = 5
    DONE = 6
    TIMEOUT = 7
    NOROUTE = 8
    HIBERNATING = 9
    INTERNAL = 10
    RESOURCELIMIT = 11
    CONNRESET = 12
    TORPROTOCOL = 13

    @classmethod
    def of(cls, value: int) -> EndReason:
        try:
            return cls(value)
        except ValueError:
            return cls.MISC


# Commands that name a stream (stream_id != 0) and those that must not.
STREAM_COMMANDS = frozenset(
    {
        RelayCommand.BEGIN,
        RelayCommand.DATA,
        RelayCommand.END,
        RelayCommand.CONNECTED,
        RelayCommand.RESOLVE,
        RelayCommand.RESOLVED,
        RelayCommand.DHT_RPC,  # the stream id is the request id (no stream is opened)
        RelayCommand.DHT_ANSWER,
        RelayCommand.CONNECT_UDP,
        RelayCommand.CONNECTED_UDP,
        RelayCommand.DATAGRAM,
        RelayCommand.DIR_GET,  # likewise (wire.dir_msg)
        RelayCommand.DIR_DATA,
    }
)
CIRCUIT_COMMANDS = frozenset(
    {
        RelayCommand.EXTEND,
        RelayCommand.EXTENDED,
        RelayCommand.TRUNCATE,
        RelayCommand.TRUNCATED,
        RelayCommand.DROP,
        *(RelayCommand(c) for c in range(32, 41)),  # onion-service messages name no stream
    }
)


_RELAY_COMMANDS = {c.value: c for c in RelayCommand}
_RELAY_HEADER = struct.Struct(">BHH")  # command, stream_id, length
_new_tuple = tuple.__new__


class RelayMessage(NamedTuple):
    """A relay message.  A NamedTuple for the same reason as wire.cell.Cell: one per cell carried."""

    command: RelayCommand
    stream_id: int
    body: bytes = b""

    def encode_plain(self, nonce: bytes = b"") -> bytes:
        """The relay payload before any layer: zero tag, header, body, `nonce`, zero padding.

        The nonce is random bytes that the receiver cannot predict; they go into the padding of
        the DATA cells whose digest an authenticated SENDME must echo (docs/protocol.md).
        """
        n = len(self.body)
        if n + len(nonce) > RELAY_BODY_MAX:
            raise ValueError("relay body too long")
        return (
            bytes(TAG_LEN)
            + bytes([self.command])
            + self.stream_id.to_bytes(2, "big")
            + n.to_bytes(2, "big")
            + self.body
            + nonce
            + bytes(RELAY_BODY_MAX - n - len(nonce))
        )

    @classmethod
    def decode_plain(cls, payload: bytes) -> RelayMessage:
        """Parse a recognized payload (its tag already checked)."""
        if len(payload) != CELL_PAYLOAD_LEN:
            raise RemoteProtocolError("relay payload has the wrong length")
        code, stream_id, n = _RELAY_HEADER.unpack_from(payload, TAG_LEN)
        command = _RELAY_COMMANDS.get(code)
        if command is None:
            raise RemoteProtocolError(f"unknown relay command {code}")
        if n > RELAY_BODY_MAX:
            raise RemoteProtocolError("relay length field too large")
        if command in STREAM_COMMANDS and stream_id == 0:
            raise RemoteProtocolError(f"{command.name} needs a stream")
        if command in CIRCUIT_COMMANDS and stream_id != 0:
            raise RemoteProtocolError(f"{command.name} must not name a stream")
        start = TAG_LEN + RELAY_HEADER_LEN
        return _new_tuple(cls, (command, stream_id, payload[start : start + n]))


def _decoding(name: str):
    """Turn truncation or bad values inside a body decoder into one RemoteProtocolError."""

    def wrap(fn):
        def inner(cls, body: bytes):
            try:
                buf = Buffer(body)
                out = fn(cls, buf)
                buf.expect_end()
                return out
            except (Truncated, ValueError, UnicodeDecodeError) as exc:
                raise RemoteProtocolError(f"malformed {name}") from exc

        return classmethod(inner)

    return wrap


# --- bodies ----------------------------------------------------------------------------------
class BeginFlags(enum.IntFlag):
    IPV6_OK = 1
    IPV4_NOT_OK = 2
    IPV6_PREFERRED = 4


@dataclass(frozen=True, slots=True)
class Begin:
    """`host` None is the empty address (type NONE): a stream on an onion service's rendezvous
    circuit names only the port, as Tor's `:port`; relays refuse it (proto.relay_circuit)."""

    host: str | None
    port: int
    flags: BeginFlags = BeginFlags.IPV6_OK

    def encode(self) -> bytes:
        buf = Buffer()
        push_address(buf, self.host)
        return buf.push_u16(self.port).push_u32(int(self.flags)).getvalue()

    @_decoding("BEGIN")
    def decode(cls, buf: Buffer) -> Begin:
        host = pull_address(buf)
        port = buf.pull_u16()
        flags = BeginFlags(buf.pull_u32() & 7)
        if port == 0:
            raise ValueError("BEGIN needs a port")
        return cls(host, port, flags)


@dataclass(frozen=True, slots=True)
class Connected:
    address: str | None
    ttl: int = 0

    def encode(self) -> bytes:
        buf = Buffer()
        push_address(buf, self.address)
        return buf.push_u32(self.ttl).getvalue()

    @_decoding("CONNECTED")
    def decode(cls, buf: Buffer) -> Connected:
        return cls(pull_address(buf), buf.pull_u32())


@dataclass(frozen=True, slots=True)
class End:
    reason: EndReason

    def encode(self) -> bytes:
        return bytes([self.reason])

    @_decoding("END")
    def decode(cls, buf: Buffer) -> End:
        return cls(EndReason.of(buf.pull_u8()))


@dataclass(frozen=True, slots=True)
class Resolve:
    host: str  # a hostname, or an IP literal for a reverse (PTR) lookup

    def encode(self) -> bytes:
        buf = Buffer()
        push_address(buf, self.host)
        return buf.getvalue()

    @_decoding("RESOLVE")
    def decode(cls, buf: Buffer) -> Resolve:
        host = pull_address(buf)
        if host is None:
            raise ValueError("RESOLVE needs a host")
        return cls(host)


class ResolvedType(enum.IntEnum):
    HOSTNAME = 0
    IPV4 = 4
    IPV6 = 6
    ERROR_TRANSIENT = 0xF0
    ERROR_NONTRANSIENT = 0xF1


@dataclass(frozen=True, slots=True)
class Resolved:
    answers: tuple[tuple[ResolvedType, str, int], ...]  # (type, value, ttl)

    def encode(self) -> bytes:
        buf = Buffer().push_u8(len(self.answers))
        for kind, value, ttl in self.answers:
            if kind == ResolvedType.IPV4:
                raw = ipaddress.IPv4Address(value).packed
            elif kind == ResolvedType.IPV6:
                raw = ipaddress.IPv6Address(value).packed
            else:
                raw = value.encode("ascii")
            buf.push_u8(kind).push_vec8(raw).push_u32(ttl)
        return buf.getvalue()

    @_decoding("RESOLVED")
    def decode(cls, buf: Buffer) -> Resolved:
        answers = []
        for _ in range(buf.pull_u8()):
            kind = ResolvedType(buf.pull_u8())
            raw = buf.pull_vec8()
            ttl = buf.pull_u32()
            if kind == ResolvedType.IPV4:
                value = str(ipaddress.IPv4Address(raw))
            elif kind == ResolvedType.IPV6:
                value = str(ipaddress.IPv6Address(raw))
            else:
                value = raw.decode("ascii")
            answers.append((kind, value, ttl))
        return cls(tuple(answers))


class LinkSpecType(enum.IntEnum):
    IPV4 = 0
    IPV6 = 1
    ED25519_ID = 2


@dataclass(frozen=True, slots=True)
class Extend:
    """Ask the last hop to extend the circuit to the relay with `identity_pk` at one of `addresses`."""

    addresses: tuple[tuple[str, int], ...]
    identity_pk: bytes
    handshake_type: int
    onionskin: bytes

    def encode(self) -> bytes:
        buf = Buffer().push_u8(len(self.addresses) + 1)
        for host, port in self.addresses:
            ip = ipaddress.ip_address(host)
            kind = LinkSpecType.IPV4 if ip.version == 4 else LinkSpecType.IPV6
            buf.push_u8(kind).push_vec8(ip.packed + port.to_bytes(2, "big"))
        buf.push_u8(LinkSpecType.ED25519_ID).push_vec8(self.identity_pk)
        return buf.push_u16(self.handshake_type).push_vec16(self.onionskin).getvalue()

    @_decoding("EXTEND")
    def decode(cls, buf: Buffer) -> Extend:
        addresses: list[tuple[str, int]] = []
        identity = b""
        count = buf.pull_u8()
        if count > 8:
            raise ValueError("too many link specifiers")
        for _ in range(count):
            kind, data = buf.pull_u8(), buf.pull_vec8()
            if kind == LinkSpecType.IPV4 and len(data) == 6:
                addresses.append((str(ipaddress.IPv4Address(data[:4])), int.from_bytes(data[4:], "big")))
            elif kind == LinkSpecType.IPV6 and len(data) == 18:
                addresses.append((str(ipaddress.IPv6Address(data[:16])), int.from_bytes(data[16:], "big")))
            elif kind == LinkSpecType.ED25519_ID and len(data) == 32:
                identity = data
            elif kind in (LinkSpecType.IPV4, LinkSpecType.IPV6, LinkSpecType.ED25519_ID):
                raise ValueError("link specifier has the wrong length")
            # unknown specifier types are skipped, for forward compatibility
        if not identity or not addresses or any(port == 0 for _, port in addresses):
            raise ValueError("EXTEND needs an identity and an address")
        return cls(tuple(addresses), identity, buf.pull_u16(), buf.pull_vec16())


@dataclass(frozen=True, slots=True)
class Extended:
    reply: bytes

    def encode(self) -> bytes:
        return Buffer().push_vec16(self.reply).getvalue()

    @_decoding("EXTENDED")
    def decode(cls, buf: Buffer) -> Extended:
        return cls(buf.pull_vec16())


@dataclass(frozen=True, slots=True)
class Sendme:
    """Flow-control credit. Circuit-level SENDMEs carry the digest (T1) of the cell that triggered them."""

    version: int = 1
    digest: bytes = b""

    def encode(self) -> bytes:
        return Buffer().push_u8(self.version).push_vec8(self.digest).getvalue()

    @_decoding("SENDME")
    def decode(cls, buf: Buffer) -> Sendme:
        version = buf.pull_u8()
        if version != 1:
            raise ValueError("unknown SENDME version")
        return cls(version, buf.pull_vec8())


@dataclass(frozen=True, slots=True)
class Truncated_:
    reason: int

    def encode(self) -> bytes:
        return bytes([self.reason])

    @_decoding("TRUNCATED")
    def decode(cls, buf: Buffer) -> Truncated_:
        return cls(buf.pull_u8())
