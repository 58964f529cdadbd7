"""SOCKS4, SOCKS4a and SOCKS5 on the wire: the request, auth and reply structures, their codes,
and the parsers that check a request field by field in wire order (raising `SocksRefused` with
the reply to send, or `Truncated` while bytes are missing).  The handshake that strings them
together is `proto.socks.SocksServer`.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from onionmesh.errors import LocalProtocolError, SocksRefused
from onionmesh.wire.buffer import Buffer

MAX_NAME = 255  # SOCKS4 userid / hostname bound, like SOCKS5's u8 lengths

METHOD_NO_AUTH = 0x00
METHOD_USERPASS = 0x02
METHOD_REFUSED = 0xFF
_ATYP_IPV4 = 0x01
_ATYP_DOMAIN = 0x03
_ATYP_IPV6 = 0x04
SOCKS4_GRANTED = 0x5A
SOCKS4_REJECTED = 0x5B
AUTH_OK = b"\x01\x00"
AUTH_FAILED = b"\x01\x01"
# First letters of GET HEAD POST PUT PATCH CONNECT DELETE OPTIONS TRACE.
HTTP_FIRST_BYTES = frozenset(b"GHPCDOT")
_HTTP_BODY = (
    b"This port speaks SOCKS (SOCKS5, or SOCKS4a), not HTTP.\n"
    b"Configure your application to use a SOCKS5 proxy at this address and port,\n"
    b"with host names resolved by the proxy (e.g. curl --socks5-hostname HOST:PORT).\n"
)
HTTP_RESPONSE = (
    b"HTTP/1.0 501 onionmesh is a SOCKS proxy, not an HTTP proxy\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Length: " + str(len(_HTTP_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _HTTP_BODY
)


class SocksCommand(enum.IntEnum):
    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03
    RESOLVE = 0xF0  # Tor extension: resolve a name, reply carries the address
    RESOLVE_PTR = 0xF1  # Tor extension: reverse-resolve an address


class AddrType(enum.Enum):
    DOMAIN = "domain"
    IPV4 = "ipv4"
    IPV6 = "ipv6"


class SocksReply(enum.IntEnum):
    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08
    # Tor's extended replies for onion services (docs/protocol.md §16.11, §16.13)
    ONION_DESC_NOT_FOUND = 0xF0
    ONION_DESC_INVALID = 0xF1
    ONION_INTRO_FAILED = 0xF2
    ONION_REND_FAILED = 0xF3
    ONION_CLIENT_AUTH_MISSING = 0xF4
    ONION_CLIENT_AUTH_WRONG = 0xF5
    ONION_BAD_ADDRESS = 0xF6
    ONION_INTRO_TIMEOUT = 0xF7


@dataclass(frozen=True)
class SocksRequest:
    """A complete, valid request: the caller opens the stream (or resolves) and replies."""

    version: int  # 4 or 5
    command: SocksCommand
    host: str  # domain as given (ASCII), or the canonical text of an IP literal
    port: int
    addr_type: AddrType
    username: bytes | None  # RFC 1929 username or SOCKS4 userid; None without auth
    password: bytes | None = field(repr=False)  # an isolation key; kept out of reprs


def socks5_reply(code: int, host: str | None = None, port: int = 0) -> bytes:
    """VER REP RSV ATYP BND.ADDR BND.PORT, choosing ATYP from the text of `host`."""
    out = Buffer().push_u8(5).push_u8(code).push_u8(0)
    if host is None:
        out.push_u8(_ATYP_IPV4).push_bytes(bytes(4))
    else:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                out.push_u8(_ATYP_DOMAIN).push_vec8(host.encode("ascii"))
            except (UnicodeEncodeError, ValueError) as exc:
                raise LocalProtocolError("bound host is not an IP or <=255 ASCII bytes") from exc
        else:
            out.push_u8(_ATYP_IPV4 if ip.version == 4 else _ATYP_IPV6).push_bytes(ip.packed)
    return out.push_u16(port).getvalue()


def socks4_reply(code: int, host: str | None = None, port: int = 0) -> bytes:
    """0x00 CD DSTPORT DSTIP: SOCKS4 can only carry an IPv4 address."""
    try:
        packed = ipaddress.IPv4Address(host or "0.0.0.0").packed
    except ValueError as exc:
        raise LocalProtocolError("SOCKS4 replies carry only an IPv4 address") from exc
    return bytes([0, code]) + port.to_bytes(2, "big") + packed


def _refuse5(reason: str, code: SocksReply) -> SocksRefused:
    return SocksRefused(reason, socks5_reply(code))


def refuse4(reason: str) -> SocksRefused:
    return SocksRefused(reason, socks4_reply(SOCKS4_REJECTED))


def _hostname(raw: bytes) -> str | None:
    """The host name as text if it is 1..255 printable, non-space ASCII bytes, else None."""
    if not 1 <= len(raw) <= MAX_NAME or any(not 0x21 <= b <= 0x7E for b in raw):
        return None
    return raw.decode("ascii")


def _pull_cstring(buf: Buffer, what: str) -> bytes:
    """A NUL-terminated string of at most MAX_NAME bytes; refused as soon as it is longer."""
    out = bytearray()
    while (b := buf.pull_u8()) != 0:
        if len(out) == MAX_NAME:
            raise refuse4(f"SOCKS4 {what} too long")
        out.append(b)
    return bytes(out)


def parse_userpass(buf: Buffer) -> tuple[bytes, bytes]:
    """RFC 1929: VER(1) ULEN UNAME PLEN PASSWD."""
    if buf.pull_u8() != 0x01:
        raise SocksRefused("bad username/password sub-negotiation version", AUTH_FAILED)
    username = buf.pull_vec8()
    return username, buf.pull_vec8()


def parse_socks5_request(
    buf: Buffer, username: bytes | None, password: bytes | None, udp: bool = False
) -> SocksRequest:
    """RFC 1928 section 4: VER CMD RSV ATYP DST.ADDR DST.PORT, checked in wire order.

    UDP ASSOCIATE only when `udp`: its DST.ADDR/DST.PORT name the address the client will send
    datagrams from (zeros when it does not know it yet), so port 0 is fine there.
    """
    if buf.pull_u8() != 5:
        raise _refuse5("bad SOCKS5 request version", SocksReply.GENERAL_FAILURE)
    cmd = buf.pull_u8()
    allowed = (SocksCommand.CONNECT, SocksCommand.RESOLVE, SocksCommand.RESOLVE_PTR)
    if cmd not in allowed and not (udp and cmd == SocksCommand.UDP_ASSOCIATE):
        raise _refuse5("unsupported SOCKS5 command", SocksReply.COMMAND_NOT_SUPPORTED)
    if buf.pull_u8() != 0:
        raise _refuse5("nonzero reserved byte", SocksReply.GENERAL_FAILURE)
    atyp = buf.pull_u8()
    if atyp == _ATYP_IPV4:
        host, addr_type = str(ipaddress.IPv4Address(buf.pull_bytes(4))), AddrType.IPV4
    elif atyp == _ATYP_IPV6:
        host, addr_type = str(ipaddress.IPv6Address(buf.pull_bytes(16))), AddrType.IPV6
    elif atyp == _ATYP_DOMAIN:
        name = _hostname(buf.pull_vec8())
        if name is None:
            raise _refuse5("malformed host name", SocksReply.GENERAL_FAILURE)
        host, addr_type = name, AddrType.DOMAIN
    else:
        raise _refuse5("unknown address type", SocksReply.ADDRESS_TYPE_NOT_SUPPORTED)
    port = buf.pull_u16()
    command = SocksCommand(cmd)
    if command is SocksCommand.CONNECT and port == 0:
        raise _refuse5("CONNECT to port 0", SocksReply.GENERAL_FAILURE)
    if command is SocksCommand.RESOLVE_PTR and addr_type is AddrType.DOMAIN:
        # Reverse lookups need an address; accept one spelled as text, in canonical form.
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise _refuse5("RESOLVE_PTR needs an IP address", SocksReply.GENERAL_FAILURE) from None
        host, addr_type = str(ip), AddrType.IPV4 if ip.version == 4 else AddrType.IPV6
    return SocksRequest(5, command, host, port, addr_type, username, password)


def parse_socks4(buf: Buffer) -> SocksRequest:
    """VN(4) CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL if DSTIP is 0.0.0.x, x != 0 (4a)]."""
    buf.pull_u8()  # the version, already dispatched on
    cmd = buf.pull_u8()
    if cmd not in (SocksCommand.CONNECT, SocksCommand.RESOLVE):
        raise refuse4("unsupported SOCKS4 command")
    port = buf.pull_u16()
    ip = buf.pull_bytes(4)
    userid = _pull_cstring(buf, "userid")
    if ip[:3] == b"\0\0\0" and ip[3] != 0:
        name = _hostname(_pull_cstring(buf, "hostname"))
        if name is None:
            raise refuse4("malformed SOCKS4a host name")
        host, addr_type = name, AddrType.DOMAIN
    else:
        host, addr_type = str(ipaddress.IPv4Address(ip)), AddrType.IPV4
    command = SocksCommand(cmd)
    if command is SocksCommand.CONNECT and port == 0:
        raise refuse4("CONNECT to port 0")
    return SocksRequest(4, command, host, port, addr_type, userid or None, None)
