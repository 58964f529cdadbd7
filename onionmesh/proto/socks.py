"""The server side of SOCKS4, SOCKS4a and SOCKS5, sans-I/O: bytes in, events and bytes out.

Theory of operation
-------------------
`SocksServer` owns one client's handshake, from the first byte to the final reply.  The
caller feeds whatever it read (`receive_data`), drains `next_event()` and writes whatever
`data_to_send()` returns.  Exactly one event ever comes out:

* `SocksRequest`: a complete, valid CONNECT / RESOLVE / RESOLVE_PTR (or UDP ASSOCIATE, when
  the server was made with `udp=True`).  The caller acts on it
  and answers with `reply()`; bytes the client pipelined after its request are `leftover`
  (early data for the stream).
* `SocksRejected`: the input was malformed or refused.  The refusal reply (if the protocol
  has one) is already queued; the caller sends `data_to_send()` and closes.

Parsing is restartable: input is kept in one bounded bytearray and only whole structures
(greeting, RFC 1929 auth, request) are consumed; a `Truncated` read means "wait for more".
Fields are checked in wire order, so every decision depends only on the bytes seen so far,
and feeding byte by byte gives exactly the same events and replies as feeding all at once.
No structure can exceed 520 bytes, so at most `MAX_BUFFER` bytes are ever retained.

Policy choices: username/password (0x02) is preferred whenever offered, and any values are
accepted: they are stream-isolation keys, not credentials.  Host names must be 1..255
printable ASCII bytes other than space; anything else is refused with GENERAL_FAILURE (the
domain address type *is* supported; the name is not).  Port 0 is refused for CONNECT only.

Not in this module: sockets, circuits, DNS, isolation policy, timeouts, logging.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import deque
from dataclasses import dataclass, field

from onionmesh.errors import LocalProtocolError, RemoteProtocolError, Truncated
from onionmesh.wire.buffer import Buffer

MAX_BUFFER = 1024  # bytes retained before a request completes (largest structure: 520)
MAX_NAME = 255  # SOCKS4 userid / hostname bound, like SOCKS5's u8 lengths

_METHOD_NO_AUTH = 0x00
_METHOD_USERPASS = 0x02
_METHOD_REFUSED = 0xFF
_ATYP_IPV4 = 0x01
_ATYP_DOMAIN = 0x03
_ATYP_IPV6 = 0x04
_SOCKS4_GRANTED = 0x5A
_SOCKS4_REJECTED = 0x5B
_AUTH_OK = b"\x01\x00"
_AUTH_FAILED = b"\x01\x01"
# First letters of GET HEAD POST PUT PATCH CONNECT DELETE OPTIONS TRACE.
_HTTP_FIRST_BYTES = frozenset(b"GHPCDOT")
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


class SocksState(enum.Enum):
    GREETING = "greeting"  # waiting for the first bytes (SOCKS5 greeting or SOCKS4 request)
    AUTH = "auth"  # SOCKS5: chose 0x02, waiting for the RFC 1929 sub-negotiation
    REQUEST = "request"  # SOCKS5: waiting for the request
    AWAITING_REPLY = "awaiting_reply"  # a SocksRequest was emitted; the caller must reply()
    DONE = "done"  # success reply queued; further input is stream data (`leftover`)
    FAILED = "failed"  # rejected or failure reply queued; further input is ignored


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


@dataclass(frozen=True)
class SocksRejected:
    """The handshake failed; send `data_to_send()` and close."""

    reason: str  # fixed text: never contains peer-supplied bytes


SocksEvent = SocksRequest | SocksRejected


class _Reject(RemoteProtocolError):
    """Internal: peer input is refused; `reply` is what to send before closing."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


def _socks5_reply(code: int, host: str | None = None, port: int = 0) -> bytes:
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


def _socks4_reply(code: int, host: str | None = None, port: int = 0) -> bytes:
    """0x00 CD DSTPORT DSTIP: SOCKS4 can only carry an IPv4 address."""
    try:
        packed = ipaddress.IPv4Address(host or "0.0.0.0").packed
    except ValueError as exc:
        raise LocalProtocolError("SOCKS4 replies carry only an IPv4 address") from exc
    return bytes([0, code]) + port.to_bytes(2, "big") + packed


def _reject5(reason: str, code: SocksReply) -> _Reject:
    return _Reject(reason, _socks5_reply(code))


def _reject4(reason: str) -> _Reject:
    return _Reject(reason, _socks4_reply(_SOCKS4_REJECTED))


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
            raise _reject4(f"SOCKS4 {what} too long")
        out.append(b)
    return bytes(out)


def _parse_userpass(buf: Buffer) -> tuple[bytes, bytes]:
    """RFC 1929: VER(1) ULEN UNAME PLEN PASSWD."""
    if buf.pull_u8() != 0x01:
        raise _Reject("bad username/password sub-negotiation version", _AUTH_FAILED)
    username = buf.pull_vec8()
    return username, buf.pull_vec8()


def _parse_socks5_request(
    buf: Buffer, username: bytes | None, password: bytes | None, udp: bool = False
) -> SocksRequest:
    """RFC 1928 section 4: VER CMD RSV ATYP DST.ADDR DST.PORT, checked in wire order.

    UDP ASSOCIATE only when `udp`: its DST.ADDR/DST.PORT name the address the client will send
    datagrams from (zeros when it does not know it yet), so port 0 is fine there.
    """
    if buf.pull_u8() != 5:
        raise _reject5("bad SOCKS5 request version", SocksReply.GENERAL_FAILURE)
    cmd = buf.pull_u8()
    allowed = (SocksCommand.CONNECT, SocksCommand.RESOLVE, SocksCommand.RESOLVE_PTR)
    if cmd not in allowed and not (udp and cmd == SocksCommand.UDP_ASSOCIATE):
        raise _reject5("unsupported SOCKS5 command", SocksReply.COMMAND_NOT_SUPPORTED)
    if buf.pull_u8() != 0:
        raise _reject5("nonzero reserved byte", SocksReply.GENERAL_FAILURE)
    atyp = buf.pull_u8()
    if atyp == _ATYP_IPV4:
        host, addr_type = str(ipaddress.IPv4Address(buf.pull_bytes(4))), AddrType.IPV4
    elif atyp == _ATYP_IPV6:
        host, addr_type = str(ipaddress.IPv6Address(buf.pull_bytes(16))), AddrType.IPV6
    elif atyp == _ATYP_DOMAIN:
        name = _hostname(buf.pull_vec8())
        if name is None:
            raise _reject5("malformed host name", SocksReply.GENERAL_FAILURE)
        host, addr_type = name, AddrType.DOMAIN
    else:
        raise _reject5("unknown address type", SocksReply.ADDRESS_TYPE_NOT_SUPPORTED)
    port = buf.pull_u16()
    command = SocksCommand(cmd)
    if command is SocksCommand.CONNECT and port == 0:
        raise _reject5("CONNECT to port 0", SocksReply.GENERAL_FAILURE)
    if command is SocksCommand.RESOLVE_PTR and addr_type is AddrType.DOMAIN:
        # Reverse lookups need an address; accept one spelled as text, in canonical form.
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise _reject5("RESOLVE_PTR needs an IP address", SocksReply.GENERAL_FAILURE) from None
        host, addr_type = str(ip), AddrType.IPV4 if ip.version == 4 else AddrType.IPV6
    return SocksRequest(5, command, host, port, addr_type, username, password)


def _parse_socks4(buf: Buffer) -> SocksRequest:
    """VN(4) CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL if DSTIP is 0.0.0.x, x != 0 (4a)]."""
    buf.pull_u8()  # the version, already dispatched on
    cmd = buf.pull_u8()
    if cmd not in (SocksCommand.CONNECT, SocksCommand.RESOLVE):
        raise _reject4("unsupported SOCKS4 command")
    port = buf.pull_u16()
    ip = buf.pull_bytes(4)
    userid = _pull_cstring(buf, "userid")
    if ip[:3] == b"\0\0\0" and ip[3] != 0:
        name = _hostname(_pull_cstring(buf, "hostname"))
        if name is None:
            raise _reject4("malformed SOCKS4a host name")
        host, addr_type = name, AddrType.DOMAIN
    else:
        host, addr_type = str(ipaddress.IPv4Address(ip)), AddrType.IPV4
    command = SocksCommand(cmd)
    if command is SocksCommand.CONNECT and port == 0:
        raise _reject4("CONNECT to port 0")
    return SocksRequest(4, command, host, port, addr_type, userid or None, None)


class SocksServer:
    """One client's SOCKS handshake; see the module docstring."""

    def __init__(self, *, allow_socks4: bool = True, require_auth: bool = False, udp: bool = False) -> None:
        self._allow_socks4 = allow_socks4
        self._udp = udp  # accept UDP ASSOCIATE (RFC 1928 §7; runtime.client.socks_udp carries it)
        self._require_auth = require_auth
        self._state = SocksState.GREETING
        self._buf = bytearray()  # unparsed input, bounded by MAX_BUFFER
        self._out = bytearray()
        self._leftover = bytearray()
        self._events: deque[SocksEvent] = deque()
        self._username: bytes | None = None
        self._password: bytes | None = None
        self._request: SocksRequest | None = None

    # --- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the client.  Never raises on peer input."""
        if self._state is SocksState.FAILED:
            return
        if self._state in (SocksState.AWAITING_REPLY, SocksState.DONE):
            self._leftover += data
            return
        self._buf += data
        while self._buf and self._state in (SocksState.GREETING, SocksState.AUTH, SocksState.REQUEST):
            buf = Buffer(self._buf)
            try:
                self._step(buf)
            except Truncated:
                break
            except _Reject as exc:
                self._fail(exc.reason, exc.reply)
                return
            del self._buf[: buf.position]
        if self._state is SocksState.AWAITING_REPLY:
            self._leftover += self._buf
            self._buf.clear()
        elif len(self._buf) > MAX_BUFFER:  # pragma: no cover - structures are bounded below it
            self._fail("handshake too long", b"")

    def _step(self, buf: Buffer) -> None:
        """Parse one whole structure from `buf` and act on it; `Truncated` changes nothing."""
        if self._state is SocksState.AUTH:
            self._username, self._password = _parse_userpass(buf)
            self._out += _AUTH_OK
            self._state = SocksState.REQUEST
        elif self._state is SocksState.REQUEST:
            self._accept(_parse_socks5_request(buf, self._username, self._password, self._udp))
        elif (first := self._buf[0]) == 5:
            buf.pull_u8()
            self._choose_method(buf.pull_vec8())
        elif first == 4:
            if not self._allow_socks4:
                raise _reject4("SOCKS4 is disabled")
            self._accept(_parse_socks4(buf))
        elif first in _HTTP_FIRST_BYTES:
            raise _Reject("HTTP request on the SOCKS port", HTTP_RESPONSE)
        else:
            raise _Reject("not a SOCKS handshake")

    def _choose_method(self, methods: bytes) -> None:
        """Prefer username/password: Tor-style clients use it to ask for stream isolation."""
        if _METHOD_USERPASS in methods:
            self._out += bytes([5, _METHOD_USERPASS])
            self._state = SocksState.AUTH
        elif _METHOD_NO_AUTH in methods and not self._require_auth:
            self._out += bytes([5, _METHOD_NO_AUTH])
            self._state = SocksState.REQUEST
        else:
            raise _Reject("no acceptable SOCKS5 auth method", bytes([5, _METHOD_REFUSED]))

    def _accept(self, request: SocksRequest) -> None:
        self._request = request
        self._state = SocksState.AWAITING_REPLY
        self._events.append(request)

    def _fail(self, reason: str, reply: bytes) -> None:
        self._out += reply
        self._buf.clear()
        self._state = SocksState.FAILED
        self._events.append(SocksRejected(reason))

    # --- output --------------------------------------------------------------------------
    def next_event(self) -> SocksEvent | None:
        """The request or rejection once it is known; None while more bytes are needed."""
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        """Bytes to write to the client now (method choice, auth status, replies)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def reply(self, code: SocksReply, bound_host: str | None = None, bound_port: int = 0) -> None:
        """Queue the final reply to the request, in the client's SOCKS version.

        For RESOLVE, `bound_host` is the resolved IP; for RESOLVE_PTR, the host name.
        SOCKS4 can only carry IPv4: anything else raises `LocalProtocolError` and changes
        nothing, so the caller may reply again (e.g. with a failure).
        """
        if self._state is not SocksState.AWAITING_REPLY or self._request is None:
            raise LocalProtocolError(f"reply() in state {self._state.name}")
        if not 0 <= bound_port <= 0xFFFF:
            raise LocalProtocolError("bound port out of range")
        try:
            code = SocksReply(code)
        except ValueError as exc:
            raise LocalProtocolError("unknown SOCKS reply code") from exc
        if self._request.version == 4:
            cd = _SOCKS4_GRANTED if code is SocksReply.SUCCEEDED else _SOCKS4_REJECTED
            self._out += _socks4_reply(cd, bound_host, bound_port)
        else:
            self._out += _socks5_reply(code, bound_host, bound_port)
        self._state = SocksState.DONE if code is SocksReply.SUCCEEDED else SocksState.FAILED

    # --- introspection -------------------------------------------------------------------
    @property
    def state(self) -> SocksState:
        return self._state

    @property
    def request(self) -> SocksRequest | None:
        """The accepted request, if any (handy after the event was consumed)."""
        return self._request

    @property
    def leftover(self) -> bytes:
        """Bytes the client sent after its request: early stream data to forward."""
        return bytes(self._leftover)

    def take_leftover(self) -> bytes:
        """Return and forget `leftover`, so a caller forwarding it never sends it twice."""
        out = bytes(self._leftover)
        self._leftover.clear()
        return out

    @property
    def buffered(self) -> int:
        """Unparsed handshake bytes held (never more than MAX_BUFFER between calls)."""
        return len(self._buf)
