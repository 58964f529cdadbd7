"""Listening sockets that fail in words, and an accept loop that survives running out of descriptors.

* `ListenError`: "cannot listen on 127.0.0.1:9050 (SOCKS): address already in use", one line
  for the user instead of a traceback (issue 15, item 12).
* `bind_listeners`: the sockets asyncio.start_server would open (every address HOST resolves to).
* `accept_loop`: accepts one connection at a time; on EMFILE/ENFILE (no descriptor left) it asks
  its owner to shed a connection, pauses, and warns at most once a minute with a count of what
  it suppressed (runtime.loglimit).  asyncio's (and uvloop's) own accept loop logged a traceback per failed
  accept: 223 MB of log in 90 s under `ulimit -n 1024` (issue 15, item 9).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable

from onionmesh.errors import ListenError
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger

log = limited(get_logger("onionmesh.listen"))  # accept failures repeat as fast as peers connect

ACCEPT_PAUSE = 0.5  # after EMFILE/ENFILE: stop accepting this long (the kernel keeps the backlog)
OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def bind_listeners(what: str, host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of `host` (one port for all)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ListenError(what, host, port, exc) from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _name, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:  # every address on the port the first one got
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise ListenError(what, host, port, exc) from None
    return socks


async def accept_loop(
    sock: socket.socket,
    what: str,
    on_connection: Callable[[socket.socket], Awaitable[None] | None],
    shed: Callable[[], bool],
) -> None:
    """Accept connections on `sock` until cancelled.  `shed()` frees a descriptor if it can."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            conn, _addr = await loop.sock_accept(sock)
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                shed()
                log.warning(f"{what}: out of file descriptors; pausing accepts (raise `ulimit -n`?)")
                await asyncio.sleep(ACCEPT_PAUSE)
                continue
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EAGAIN):
                continue
            raise
        conn.setblocking(False)
        result = on_connection(conn)
        if result is not None:
            await result
