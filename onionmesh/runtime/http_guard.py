"""Checks that keep web pages out of onionmesh's loopback HTTP servers (control and metrics).

Two attacks need no credential of their own. DNS rebinding: a page at evil.example points its
name at 127.0.0.1 and reads our answers as same-origin; every such request carries
`Host: evil.example[:port]`, so a Host header that is neither an IP literal nor `localhost` is
refused (an attacker cannot make a browser send an IP literal for its own name). Cross-origin
requests from another loopback port: 127.0.0.1:8000 and 127.0.0.1:9051 are the *same site*, so
SameSite cookies do not stop them; the browser's `Origin` and `Sec-Fetch-Site` headers do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# What a browser sends in Sec-Fetch-Site for a request its user or the page itself made:
# "none" (typed, bookmarked, opened from a terminal) or "same-origin".
TRUSTED_FETCH_SITES = frozenset({"none", "same-origin"})


def split_host(host_header: str) -> tuple[str, str | None] | None:
    """`HOST[:PORT]` or `[V6]:PORT` into (host, port or None); None if malformed."""
    if host_header.startswith("["):
        end = host_header.find("]")
        if end < 0:
            return None
        host, rest = host_header[1:end], host_header[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        host, sep, port_text = host_header.partition(":")
        port = port_text if sep else None
    if port is not None and not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        return None
    return host, port


def host_is_safe(host_header: str | None, extra_names: Iterable[str] = ()) -> bool:
    """True for a Host header that DNS rebinding cannot produce: an IP literal, `localhost`, or one
    of `extra_names` (a name the server was told to listen on). A missing header (HTTP/1.0, a
    non-browser client) is allowed: browsers always send one."""
    if host_header is None:
        return True
    parts = split_host(host_header.strip())
    if parts is None:
        return False
    host = parts[0].lower()
    if host == "localhost" or host in {n.lower() for n in extra_names}:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def origin_is_own(origin: str, host_header: str | None) -> bool:
    """True if a request's Origin is the server's own origin (`http://` + the Host it was sent to)."""
    return host_header is not None and origin == f"http://{host_header.strip()}"
