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

The structures and their parsers: `proto.socks_wire`.
Not in this module: sockets, circuits, DNS, isolation policy, timeouts, logging.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from onionmesh.errors import LocalProtocolError, SocksRefused, Truncated
from onionmesh.proto.socks_wire import (
    AUTH_OK,
    HTTP_FIRST_BYTES,
    HTTP_RESPONSE,
    METHOD_NO_AUTH,
    METHOD_REFUSED,
    METHOD_USERPASS,
    SOCKS4_GRANTED,
    SOCKS4_REJECTED,
    SocksReply,
    SocksRequest,
    parse_socks4,
    parse_socks5_request,
    parse_userpass,
    refuse4,
    socks4_reply,
    socks5_reply,
)
from onionmesh.wire.buffer import Buffer

MAX_BUFFER = 1024  # bytes retained before a request completes (largest structure: 520)


class SocksState(enum.Enum):
    GREETING = "greeting"  # waiting for the first bytes (SOCKS5 greeting or SOCKS4 request)
    AUTH = "auth"  # SOCKS5: chose 0x02, waiting for the RFC 1929 sub-negotiation
    REQUEST = "request"  # SOCKS5: waiting for the request
    AWAITING_REPLY = "awaiting_reply"  # a SocksRequest was emitted; the caller must reply()
    DONE = "done"  # success reply queued; further input is stream data (`leftover`)
    FAILED = "failed"  # rejected or failure reply queued; further input is ignored


@dataclass(frozen=True)
class SocksRejected:
    """The handshake failed; send `data_to_send()` and close."""

    reason: str  # fixed text: never contains peer-supplied bytes


SocksEvent = SocksRequest | SocksRejected


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
            except SocksRefused as exc:
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
            self._username, self._password = parse_userpass(buf)
            self._out += AUTH_OK
            self._state = SocksState.REQUEST
        elif self._state is SocksState.REQUEST:
            self._accept(parse_socks5_request(buf, self._username, self._password, self._udp))
        elif (first := self._buf[0]) == 5:
            buf.pull_u8()
            self._choose_method(buf.pull_vec8())
        elif first == 4:
            if not self._allow_socks4:
                raise refuse4("SOCKS4 is disabled")
            self._accept(parse_socks4(buf))
        elif first in HTTP_FIRST_BYTES:
            raise SocksRefused("HTTP request on the SOCKS port", HTTP_RESPONSE)
        else:
            raise SocksRefused("not a SOCKS handshake")

    def _choose_method(self, methods: bytes) -> None:
        """Prefer username/password: Tor-style clients use it to ask for stream isolation."""
        if METHOD_USERPASS in methods:
            self._out += bytes([5, METHOD_USERPASS])
            self._state = SocksState.AUTH
        elif METHOD_NO_AUTH in methods and not self._require_auth:
            self._out += bytes([5, METHOD_NO_AUTH])
            self._state = SocksState.REQUEST
        else:
            raise SocksRefused("no acceptable SOCKS5 auth method", bytes([5, METHOD_REFUSED]))

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
            cd = SOCKS4_GRANTED if code is SocksReply.SUCCEEDED else SOCKS4_REJECTED
            self._out += socks4_reply(cd, bound_host, bound_port)
        else:
            self._out += socks5_reply(code, bound_host, bound_port)
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
