"""Tests for the sans-I/O SOCKS server machine (onionmesh.proto.socks)."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.errors import LocalProtocolError
from onionmesh.proto.socks import MAX_BUFFER, SocksRejected, SocksServer, SocksState
from onionmesh.proto.socks_wire import HTTP_RESPONSE, AddrType, SocksCommand, SocksReply, SocksRequest

ZERO5 = b"\x00\x01" + bytes(4) + b"\x00\x00"  # RSV ATYP=IPv4 0.0.0.0 port 0 (after VER REP)


# --- a small client-side encoder ---------------------------------------------------------
def greeting(*methods: int) -> bytes:
    return bytes([5, len(methods), *methods])


def userpass(user: bytes, pw: bytes) -> bytes:
    return bytes([1, len(user)]) + user + bytes([len(pw)]) + pw


def req5(host: str, port: int, atyp: AddrType, cmd: int = SocksCommand.CONNECT, rsv: int = 0) -> bytes:
    if atyp is AddrType.IPV4:
        addr = b"\x01" + ipaddress.IPv4Address(host).packed
    elif atyp is AddrType.IPV6:
        addr = b"\x04" + ipaddress.IPv6Address(host).packed
    else:
        raw = host.encode("ascii")
        addr = bytes([3, len(raw)]) + raw
    return bytes([5, cmd, rsv]) + addr + port.to_bytes(2, "big")


def req4(
    host: str, port: int, userid: bytes = b"", cmd: int = SocksCommand.CONNECT, socks4a: bool = False
) -> bytes:
    head = bytes([4, cmd]) + port.to_bytes(2, "big")
    if socks4a:
        return head + b"\x00\x00\x00\x01" + userid + b"\x00" + host.encode("ascii") + b"\x00"
    return head + ipaddress.IPv4Address(host).packed + userid + b"\x00"


def run(chunks: list[bytes], **kwargs: bool) -> tuple[list[object], bytes, bytes, SocksState]:
    """Feed chunks; collect events, everything to send, leftover and the final state."""
    server = SocksServer(**kwargs)
    events: list[object] = []
    out = b""
    for chunk in chunks:
        server.receive_data(chunk)
        assert server.buffered <= MAX_BUFFER
        while (ev := server.next_event()) is not None:
            events.append(ev)
        out += server.data_to_send()
    return events, out, server.leftover, server.state


def one_event(data: bytes, **kwargs: bool) -> tuple[object, bytes, SocksServer]:
    server = SocksServer(**kwargs)
    server.receive_data(data)
    event = server.next_event()
    assert server.next_event() is None
    return event, server.data_to_send(), server


# --- SOCKS5 ------------------------------------------------------------------------------
def test_socks5_noauth_connect_domain_step_by_step() -> None:
    server = SocksServer()
    assert server.state is SocksState.GREETING
    server.receive_data(greeting(0))
    assert server.next_event() is None
    assert server.data_to_send() == b"\x05\x00"
    assert server.state is SocksState.REQUEST
    server.receive_data(req5("example.com", 443, AddrType.DOMAIN))
    ev = server.next_event()
    assert ev == SocksRequest(5, SocksCommand.CONNECT, "example.com", 443, AddrType.DOMAIN, None, None)
    assert server.request == ev
    assert server.state is SocksState.AWAITING_REPLY
    assert server.data_to_send() == b""
    server.reply(SocksReply.SUCCEEDED)
    assert server.data_to_send() == b"\x05\x00" + ZERO5
    assert server.state is SocksState.DONE


@pytest.mark.parametrize(
    ("host", "atyp"),
    [("10.1.2.3", AddrType.IPV4), ("2001:db8::1", AddrType.IPV6), ("::ffff:1.2.3.4", AddrType.IPV6)],
)
def test_socks5_connect_ip(host: str, atyp: AddrType) -> None:
    ev, out, _ = one_event(greeting(0) + req5(host, 80, atyp))
    canonical = str(ipaddress.ip_address(host))  # e.g. 3.11 spells ::ffff:1.2.3.4 "::ffff:102:304"
    assert ev == SocksRequest(5, SocksCommand.CONNECT, canonical, 80, atyp, None, None)
    assert out == b"\x05\x00"


def test_socks5_ipv6_is_canonical() -> None:
    raw = greeting(0) + b"\x05\x01\x00\x04" + bytes(15) + b"\x01" + b"\x00\x50"
    ev, _, _ = one_event(raw)
    assert isinstance(ev, SocksRequest)
    assert ev.host == "::1"


def test_socks5_userpass_preferred_and_recorded() -> None:
    data = greeting(0, 2) + userpass(b"bob", b"pw") + req5("a.onion", 80, AddrType.DOMAIN)
    ev, out, _ = one_event(data)
    assert out == b"\x05\x02\x01\x00"
    assert ev == SocksRequest(5, SocksCommand.CONNECT, "a.onion", 80, AddrType.DOMAIN, b"bob", b"pw")
    assert "pw" not in repr(ev)


def test_socks5_empty_userpass_is_an_isolation_key() -> None:
    ev, out, _ = one_event(greeting(2) + userpass(b"", b"") + req5("x.y", 1, AddrType.DOMAIN))
    assert out == b"\x05\x02\x01\x00"
    assert isinstance(ev, SocksRequest)
    assert (ev.username, ev.password) == (b"", b"")


def test_require_auth() -> None:
    ev, out, server = one_event(greeting(0), require_auth=True)
    assert isinstance(ev, SocksRejected)
    assert out == b"\x05\xff"
    assert server.state is SocksState.FAILED
    ev, out, _ = one_event(
        greeting(2) + userpass(b"u", b"p") + req5("h", 9, AddrType.DOMAIN), require_auth=True
    )
    assert isinstance(ev, SocksRequest)
    assert out == b"\x05\x02\x01\x00"


@pytest.mark.parametrize("methods", [(), (1,), (3, 0x80, 0xFE)])
def test_no_acceptable_method(methods: tuple[int, ...]) -> None:
    ev, out, _ = one_event(greeting(*methods))
    assert isinstance(ev, SocksRejected)
    assert out == b"\x05\xff"


def test_bad_auth_version() -> None:
    ev, out, _ = one_event(greeting(2) + b"\x05\x01u\x01p")
    assert isinstance(ev, SocksRejected)
    assert out == b"\x05\x02\x01\x01"


def _reply5(code: int) -> bytes:
    return b"\x05\x02\x01\x00" + bytes([5, code]) + ZERO5


R = SocksReply


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (req5("h.com", 80, AddrType.DOMAIN, cmd=SocksCommand.BIND), R.COMMAND_NOT_SUPPORTED),
        (req5("h.com", 80, AddrType.DOMAIN, cmd=SocksCommand.UDP_ASSOCIATE), R.COMMAND_NOT_SUPPORTED),
        (req5("h.com", 80, AddrType.DOMAIN, cmd=0x09), R.COMMAND_NOT_SUPPORTED),
        (b"\x05\x01\x00\x02" + bytes(8), R.ADDRESS_TYPE_NOT_SUPPORTED),
        (b"\x05\x01\x00\x03\x00\x00\x50", R.GENERAL_FAILURE),  # empty name
        (b"\x05\x01\x00\x03\x03a\x00b\x00\x50", R.GENERAL_FAILURE),  # NUL in name
        (b"\x05\x01\x00\x03\x03a b\x00\x50", R.GENERAL_FAILURE),  # space
        (b"\x05\x01\x00\x03\x03a\xc3\xa9\x00\x50", R.GENERAL_FAILURE),  # non-ASCII
        (b"\x05\x01\x00\x03\x02a\n\x00\x50", R.GENERAL_FAILURE),  # control byte
        (req5("h.com", 0, AddrType.DOMAIN), R.GENERAL_FAILURE),  # CONNECT to port 0
        (req5("1.2.3.4", 0, AddrType.IPV4), R.GENERAL_FAILURE),
        (req5("h.com", 80, AddrType.DOMAIN, rsv=1), R.GENERAL_FAILURE),
        (b"\x04" + req5("h.com", 80, AddrType.DOMAIN)[1:], R.GENERAL_FAILURE),  # request VER 4
        (req5("not-an-ip", 0, AddrType.DOMAIN, cmd=SocksCommand.RESOLVE_PTR), R.GENERAL_FAILURE),
    ],
)
def test_socks5_request_rejections(request_bytes: bytes, code: int) -> None:
    data = greeting(2) + userpass(b"u", b"p") + request_bytes
    for chunks in ([data], [bytes([b]) for b in data]):
        events, out, leftover, state = run(chunks)
        assert len(events) == 1
        assert isinstance(events[0], SocksRejected)
        assert out == _reply5(code)
        assert state is SocksState.FAILED
        assert leftover == b""


def test_rejection_reason_never_echoes_host() -> None:
    ev, _, _ = one_event(greeting(0) + req5("secret.example", 0, AddrType.DOMAIN))
    assert isinstance(ev, SocksRejected)
    assert "secret" not in ev.reason


def test_socks5_resolve() -> None:
    ev, _, server = one_event(greeting(0) + req5("torproject.org", 0, AddrType.DOMAIN, SocksCommand.RESOLVE))
    assert ev == SocksRequest(5, SocksCommand.RESOLVE, "torproject.org", 0, AddrType.DOMAIN, None, None)
    server.reply(SocksReply.SUCCEEDED, "1.2.3.4")
    assert server.data_to_send() == b"\x05\x00\x00\x01\x01\x02\x03\x04\x00\x00"
    assert server.state is SocksState.DONE


def test_socks5_resolve_ipv6_answer() -> None:
    _, _, server = one_event(greeting(0) + req5("h.org", 0, AddrType.DOMAIN, SocksCommand.RESOLVE))
    server.reply(SocksReply.SUCCEEDED, "2001:db8::2")
    expected = ipaddress.IPv6Address("2001:db8::2").packed
    assert server.data_to_send() == b"\x05\x00\x00\x04" + expected + b"\x00\x00"


def test_socks5_resolve_ptr() -> None:
    ev, _, server = one_event(greeting(0) + req5("1.2.3.4", 0, AddrType.IPV4, SocksCommand.RESOLVE_PTR))
    assert ev == SocksRequest(5, SocksCommand.RESOLVE_PTR, "1.2.3.4", 0, AddrType.IPV4, None, None)
    server.reply(SocksReply.SUCCEEDED, "host.example")
    assert server.data_to_send() == b"\x05\x00\x00\x03\x0chost.example\x00\x00"


def test_socks5_resolve_ptr_ip_spelled_as_domain_is_canonicalised() -> None:
    data = greeting(0) + req5("2001:DB8:0::1", 0, AddrType.DOMAIN, SocksCommand.RESOLVE_PTR)
    ev, _, _ = one_event(data)
    assert ev == SocksRequest(5, SocksCommand.RESOLVE_PTR, "2001:db8::1", 0, AddrType.IPV6, None, None)


def test_socks5_failure_reply_and_bound_address() -> None:
    _, _, server = one_event(greeting(0) + req5("h.com", 80, AddrType.DOMAIN))
    server.reply(SocksReply.CONNECTION_REFUSED, "10.0.0.1", 8080)
    assert server.data_to_send() == b"\x05\x05\x00\x01\x0a\x00\x00\x01\x1f\x90"
    assert server.state is SocksState.FAILED


def test_domain_of_255_bytes_is_accepted() -> None:
    name = "a" * 255
    ev, _, _ = one_event(greeting(0) + req5(name, 80, AddrType.DOMAIN))
    assert isinstance(ev, SocksRequest)
    assert ev.host == name


# --- SOCKS4 / SOCKS4a --------------------------------------------------------------------
def test_socks4_connect() -> None:
    ev, out, server = one_event(req4("192.0.2.7", 22, b"alice"))
    assert out == b""
    assert ev == SocksRequest(4, SocksCommand.CONNECT, "192.0.2.7", 22, AddrType.IPV4, b"alice", None)
    server.reply(SocksReply.SUCCEEDED)
    assert server.data_to_send() == b"\x00\x5a\x00\x00\x00\x00\x00\x00"
    assert server.state is SocksState.DONE


def test_socks4_empty_userid_is_no_auth_and_failure_reply() -> None:
    ev, _, server = one_event(req4("192.0.2.7", 22))
    assert isinstance(ev, SocksRequest)
    assert ev.username is None
    server.reply(SocksReply.HOST_UNREACHABLE, "192.0.2.7", 22)
    assert server.data_to_send() == b"\x00\x5b\x00\x16\xc0\x00\x02\x07"
    assert server.state is SocksState.FAILED


def test_socks4a_connect() -> None:
    ev, _, _ = one_event(req4("example.onion", 80, b"id", socks4a=True))
    assert ev == SocksRequest(4, SocksCommand.CONNECT, "example.onion", 80, AddrType.DOMAIN, b"id", None)


def test_socks4a_resolve() -> None:
    ev, _, server = one_event(req4("example.org", 0, cmd=SocksCommand.RESOLVE, socks4a=True))
    assert ev == SocksRequest(4, SocksCommand.RESOLVE, "example.org", 0, AddrType.DOMAIN, None, None)
    with pytest.raises(LocalProtocolError):
        server.reply(SocksReply.SUCCEEDED, "2001:db8::1")
    assert server.state is SocksState.AWAITING_REPLY
    server.reply(SocksReply.SUCCEEDED, "93.184.216.34")
    assert server.data_to_send() == b"\x00\x5a\x00\x00" + bytes([93, 184, 216, 34])


@pytest.mark.parametrize(
    "data",
    [
        req4("1.2.3.4", 80, cmd=SocksCommand.BIND),
        req4("1.2.3.4", 80, cmd=SocksCommand.RESOLVE_PTR),
        req4("1.2.3.4", 80, cmd=0x77),
        req4("1.2.3.4", 0),
        req4("h.com", 0, socks4a=True),
        req4("1.2.3.4", 80, b"u" * 256),
        b"\x04\x01\x00\x50\x01\x02\x03\x04" + b"u" * 256,  # no NUL yet: refused without waiting
        req4("h" * 256, 80, socks4a=True),
        b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * 256,
        req4("", 80, socks4a=True),
        b"\x04\x01\x00\x50\x00\x00\x00\x01\x00a b\x00",
    ],
)
def test_socks4_rejections(data: bytes) -> None:
    for chunks in ([data], [bytes([b]) for b in data]):
        events, out, _, state = run(chunks)
        assert len(events) == 1
        assert isinstance(events[0], SocksRejected)
        assert out == b"\x00\x5b" + bytes(6)
        assert state is SocksState.FAILED


def test_socks4_name_bounds_255_accepted() -> None:
    ev, _, _ = one_event(req4("h" * 255, 80, b"u" * 255, socks4a=True))
    assert isinstance(ev, SocksRequest)
    assert ev.username == b"u" * 255
    assert ev.host == "h" * 255


def test_socks4_disabled() -> None:
    ev, out, _ = one_event(req4("1.2.3.4", 80), allow_socks4=False)
    assert isinstance(ev, SocksRejected)
    assert out == b"\x00\x5b" + bytes(6)


def test_socks4_zero_ip_is_plain_socks4() -> None:
    ev, _, _ = one_event(req4("0.0.0.0", 80))
    assert isinstance(ev, SocksRequest)
    assert (ev.host, ev.addr_type) == ("0.0.0.0", AddrType.IPV4)


# --- not SOCKS at all --------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\n", b"CONNECT h:443 HTTP/1.1\r\n", b"HEAD / ", b"PUT "],
)
def test_http_request_detected(data: bytes) -> None:
    ev, out, _ = one_event(data)
    assert isinstance(ev, SocksRejected)
    assert out == HTTP_RESPONSE
    assert out.startswith(b"HTTP/1.0 501 onionmesh is a SOCKS proxy, not an HTTP proxy\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"SOCKS5" in body


@pytest.mark.parametrize("data", [b"\x00", b"\x16\x03\x01\x02\x00", b"\xff" * 2000, b"xyz"])
def test_unknown_first_byte(data: bytes) -> None:
    ev, out, server = one_event(data)
    assert isinstance(ev, SocksRejected)
    assert out == b""
    assert server.buffered == 0


# --- feeding, leftover, misuse -----------------------------------------------------------
FEED_CASES = [
    greeting(0) + req5("example.com", 443, AddrType.DOMAIN) + b"early",
    greeting(0, 2) + userpass(b"u" * 255, b"p" * 255) + req5("::1", 80, AddrType.IPV6) + b"GET /",
    greeting(1) + b"junk",
    req4("1.2.3.4", 80, b"id") + b"\x00\x01",
    req4("h.example", 80, b"id", socks4a=True) + b"x" * 3000,
    req4("1.2.3.4", 80, b"u" * 300),
    b"GET / HTTP/1.0\r\n\r\n",
    greeting(2) + b"\x02",
    greeting(0) + req5("h", 1, AddrType.DOMAIN, cmd=2),
]


@pytest.mark.parametrize("data", FEED_CASES)
def test_whole_equals_byte_by_byte(data: bytes) -> None:
    whole = run([data])
    assert whole == run([bytes([b]) for b in data])
    assert whole == run([data[:7], data[7:19], data[19:]])


def test_leftover_early_data() -> None:
    server = SocksServer()
    server.receive_data(greeting(0) + req5("h.com", 80, AddrType.DOMAIN) + b"hello ")
    assert isinstance(server.next_event(), SocksRequest)
    assert server.leftover == b"hello "
    server.receive_data(b"world")  # still awaiting the reply
    assert server.leftover == b"hello world"
    server.reply(SocksReply.SUCCEEDED)
    server.receive_data(b"!")
    assert server.take_leftover() == b"hello world!"
    assert server.leftover == b""
    server.receive_data(b"more")
    assert server.leftover == b"more"


def test_failed_ignores_input() -> None:
    server = SocksServer()
    server.receive_data(b"\x00")
    assert isinstance(server.next_event(), SocksRejected)
    server.receive_data(greeting(0) + req5("h.com", 80, AddrType.DOMAIN))
    assert server.next_event() is None
    assert server.data_to_send() == b""
    assert server.leftover == b""
    assert server.state is SocksState.FAILED


def test_reply_misuse() -> None:
    server = SocksServer()
    with pytest.raises(LocalProtocolError):
        server.reply(SocksReply.SUCCEEDED)
    server.receive_data(greeting(0) + req5("h.com", 80, AddrType.DOMAIN))
    with pytest.raises(LocalProtocolError):
        server.reply(SocksReply.SUCCEEDED, "h" * 256)
    with pytest.raises(LocalProtocolError):
        server.reply(SocksReply.SUCCEEDED, None, 70000)
    server.reply(SocksReply.SUCCEEDED)
    with pytest.raises(LocalProtocolError):
        server.reply(SocksReply.SUCCEEDED)


def test_empty_receive_is_noop() -> None:
    server = SocksServer()
    server.receive_data(b"")
    assert server.next_event() is None
    assert server.state is SocksState.GREETING


# --- properties --------------------------------------------------------------------------
def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


PENDING = {SocksState.GREETING, SocksState.AUTH, SocksState.REQUEST}


@settings(max_examples=400)
@given(
    prefix=st.sampled_from([b"", b"\x05", b"\x05\x01\x02\x01", b"\x05\x01\x00\x05", b"\x04", b"\x04\x01"]),
    body=st.binary(max_size=1500),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
    allow_socks4=st.booleans(),
    require_auth=st.booleans(),
)
def test_random_bytes_never_raise(
    prefix: bytes, body: bytes, cuts: list[int], allow_socks4: bool, require_auth: bool
) -> None:
    data = prefix + body
    kwargs = {"allow_socks4": allow_socks4, "require_auth": require_auth}
    events, _, leftover, state = result = run(split(data, cuts), **kwargs)
    assert result == run([data], **kwargs)
    assert len(events) <= 1
    if not events:
        assert state in PENDING
        assert leftover == b""
    elif isinstance(events[0], SocksRequest):
        assert state is SocksState.AWAITING_REPLY
        assert data.endswith(leftover)
    else:
        assert isinstance(events[0], SocksRejected)
        assert state is SocksState.FAILED


HOST_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
DOMAINS = st.text(HOST_CHARS, min_size=1, max_size=255)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[SocksRequest, bytes]:
    """A valid request and its encoding (including the SOCKS5 greeting/auth)."""
    if draw(st.booleans()):
        command = draw(st.sampled_from([SocksCommand.CONNECT, SocksCommand.RESOLVE]))
        atyp = draw(st.sampled_from([AddrType.IPV4, AddrType.DOMAIN]))
        if atyp is AddrType.DOMAIN:
            host = draw(DOMAINS)
        else:
            ip = draw(st.ip_addresses(v=4).filter(lambda a: a.packed[:3] != bytes(3) or a.packed[3] == 0))
            host = str(ip)
        port = draw(st.integers(1, 0xFFFF))
        userid = draw(st.binary(max_size=255).filter(lambda b: b"\x00" not in b))
        req = SocksRequest(4, command, host, port, atyp, userid or None, None)
        return req, req4(host, port, userid, command, socks4a=atyp is AddrType.DOMAIN)
    command = draw(st.sampled_from([SocksCommand.CONNECT, SocksCommand.RESOLVE, SocksCommand.RESOLVE_PTR]))
    kinds = [AddrType.IPV4, AddrType.IPV6]
    atyp = draw(st.sampled_from(kinds if command is SocksCommand.RESOLVE_PTR else [*kinds, AddrType.DOMAIN]))
    if atyp is AddrType.DOMAIN:
        host = draw(DOMAINS)
    else:
        host = str(draw(st.ip_addresses(v=4 if atyp is AddrType.IPV4 else 6)))
    port = draw(st.integers(1, 0xFFFF))
    auth = draw(st.none() | st.tuples(st.binary(max_size=255), st.binary(max_size=255)))
    if auth is None:
        head = greeting(*draw(st.sampled_from([(0,), (0, 1), (1, 0, 0x80)])))
        user = pw = None
    else:
        user, pw = auth
        head = greeting(*draw(st.sampled_from([(2,), (0, 2), (2, 0)]))) + userpass(user, pw)
    req = SocksRequest(5, command, host, port, atyp, user, pw)
    return req, head + req5(host, port, atyp, command)


@settings(max_examples=400)
@given(
    case=valid_requests(),
    early=st.binary(max_size=64),
    cuts=st.lists(st.integers(min_value=0, max_value=1200), max_size=30),
)
def test_round_trip(case: tuple[SocksRequest, bytes], early: bytes, cuts: list[int]) -> None:
    expected, encoded = case
    data = encoded + early
    events, out, leftover, state = run(split(data, cuts))
    assert events == [expected]
    assert leftover == early
    assert state is SocksState.AWAITING_REPLY
    if expected.version == 5:
        assert out == (b"\x05\x00" if expected.username is None else b"\x05\x02\x01\x00")
    else:
        assert out == b""
