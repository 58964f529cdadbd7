"""Authentication and the control port's own defences, through stem and raw sockets:
SAFECOOKIE, passwords, a wrong cookie, hostile input."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

from tests.helpers.torcontrol import control_port, needs_stem, stem

SAFECOOKIE = """
import sys
from stem.control import Controller
from stem.connection import authenticate_safecookie
from stem.response.protocolinfo import ProtocolInfoResponse
with Controller.from_port(port=int(sys.argv[1])) as c:
    info = c.get_protocolinfo()
    authenticate_safecookie(c, info.cookie_path, info)
    print(c.get_info("status/bootstrap-phase"))
"""

PASSWORD = """
import sys
from stem.control import Controller
import stem.connection
with Controller.from_port(port=int(sys.argv[1])) as c:
    stem.connection.authenticate_password(c, sys.argv[2])
    print(c.get_info("version"))
"""


@needs_stem
def test_safecookie_and_password_with_stem(testnet: dict[str, object]) -> None:
    port = str(control_port(testnet))
    safe = stem(SAFECOOKIE, port)
    assert safe.returncode == 0 and "PROGRESS=100" in safe.stdout, safe.stderr
    good = stem(PASSWORD, port, "pw")
    assert good.returncode == 0 and "onionmesh" in good.stdout, good.stderr
    bad = stem(PASSWORD, port, "wrong")
    assert bad.returncode != 0 and "IncorrectPassword" in bad.stderr


def _talk(port: int, data: bytes, read_until_eof: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_eof:
                break
        return b"".join(chunks)


def _closed(socks: list[socket.socket], quiet: float, bound: float = 30.0) -> int:
    """How many of `socks` the peer closed, waiting (at most `bound`) until none closes for `quiet` s:
    one wait for all of them, not one per socket that stays open."""
    pending, closed = set(socks), 0
    deadline = time.monotonic() + bound
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], quiet)
        if not ready:
            break
        for s in ready:
            pending.discard(s)
            closed += s.recv(1) == b""
    return closed


def test_a_wrong_cookie_is_refused_and_the_connection_closed(testnet: dict[str, object]) -> None:
    cookie = Path(str(testnet["cookie"])).read_bytes()
    wrong = bytes(b ^ 1 for b in cookie)
    reply = _talk(control_port(testnet), b"AUTHENTICATE " + wrong.hex().encode() + b"\r\nGETINFO version\r\n")
    assert reply.startswith(b"515 ") and reply.count(b"\r\n") == 1  # refused, then EOF: nothing more
    ok = _talk(
        control_port(testnet), b"AUTHENTICATE " + cookie.hex().encode() + b"\r\nGETINFO version\r\nQUIT\r\n"
    )
    assert ok.startswith(b"250 OK\r\n250-version=0.4.8.10 (onionmesh-") and ok.endswith(
        b"250 closing connection\r\n"
    )


def test_hostile_input_gets_clean_closes_and_bounded_service(testnet: dict[str, object]) -> None:
    port = control_port(testnet)
    cookie_hex = Path(str(testnet["cookie"])).read_bytes().hex().encode()
    # a line past the limit, and binary: one 500 line, then the connection is closed
    assert _talk(port, b"GETINFO " + b"A" * 100_000).startswith(b"500 Protocol error: line longer")
    assert _talk(port, b"\x16\x03\x01\x00\xff\x01\x00\r\n").startswith(b"500 Protocol error: binary")
    # an HTTP request (a web page poking the port) gets an HTTP refusal and a close
    assert _talk(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.0 501")
    # anything but the four commands before authentication: 514 and a close
    assert _talk(port, b"GETINFO version\r\nGETINFO version\r\n") == b"514 Authentication required.\r\n"
    # a flood of commands on one authenticated connection: every one answered, in order (past the
    # burst of 200 the port paces the connection at 100 commands/s: these 400 more take 4 s)
    n = 600
    flood = b"AUTHENTICATE " + cookie_hex + b"\r\n" + b"GETINFO version\r\n" * n + b"QUIT\r\n"
    reply = _talk(port, flood)
    assert reply.count(b"250-version=") == n and reply.endswith(b"250 closing connection\r\n")
    # many connections at once: the ones past the unauthenticated cap are closed at once, and
    # once they are gone an authenticated controller gets in again
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
    closed = _closed(held, quiet=0.5)
    for s in held:
        s.close()
    assert 200 - 16 <= closed < 200
    deadline = time.monotonic() + 10
    reply = b""
    while time.monotonic() < deadline and not reply.startswith(b"250 OK"):
        reply = _talk(port, b"AUTHENTICATE " + cookie_hex + b"\r\nQUIT\r\n")
        time.sleep(0.1)
    assert reply == b"250 OK\r\n250 closing connection\r\n"
    assert testnet["proc"].poll() is None  # type: ignore[attr-defined]
