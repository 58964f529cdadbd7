"""Bridge lines: how a bridge's operator tells a user where the bridge is (after Tor's WebTunnel).

    webtunnel wss://HOST[:PORT]/SECRETPATH IDENTITY

* `wss://` (TLS at the bridge or at a front such as nginx) or `ws://` (plain; only behind a
  TLS-terminating front the client reaches another way, or in tests);
* HOST is an IPv4 literal, a bracketed IPv6 literal or a DNS name; PORT defaults to 443 / 80;
* SECRETPATH is one path segment of 22..128 URL-safe base64 characters (at least 128 bits):
  only this path is upgraded to a WebSocket, every other request gets the decoy site;
* IDENTITY is the bridge's Ed25519 identity key, 64 hex digits: the link handshake pins it, so
  whoever answers at the URL cannot pose as the bridge.  Its fingerprint follows from it.

Parsing is strict and total: `parse_bridge_line` raises ValueError with a reason for anything
else, never another exception.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from onionmesh.crypto.keys import fingerprint

TRANSPORT = "webtunnel"
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{22,128}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")
URL_RE = re.compile(r"(wss?)://(\[[0-9A-Fa-f:.]+\]|[^/:\[\]]+)(?::([0-9]{1,5}))?/([^/?#]*)")
MAX_LINE = 512


@dataclass(frozen=True)
class BridgeLine:
    tls: bool
    host: str
    port: int
    secret_path: str
    identity_pk: bytes

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}/{self.secret_path}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.identity_pk)

    def __str__(self) -> str:
        return f"{TRANSPORT} {self.url} {self.identity_pk.hex()}"

    def __repr__(self) -> str:  # never print the secret path by accident (logs, tracebacks)
        return f"BridgeLine({self.fingerprint})"


def _host(text: str) -> str:
    if text.startswith("["):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise ValueError("bad IPv6 address") from None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", text) or not HOSTNAME_RE.fullmatch(text):
        raise ValueError("bad host")
    return text.lower().rstrip(".")


def parse_bridge_line(line: str) -> BridgeLine:
    """Parse `webtunnel wss://HOST[:PORT]/SECRET IDENTITY`; raise ValueError saying what is wrong."""
    if not isinstance(line, str) or len(line) > MAX_LINE:
        raise ValueError("not a bridge line (too long)")
    parts = line.split()
    if parts and parts[0].lower() == "bridge":  # as pasted from a torrc-style "Bridge ..." line
        parts = parts[1:]
    if len(parts) != 3 or parts[0].lower() != TRANSPORT:
        raise ValueError("expected: webtunnel wss://HOST:PORT/SECRETPATH IDENTITY")
    match = URL_RE.fullmatch(parts[1])
    if match is None:
        raise ValueError("the URL must be ws:// or wss://HOST[:PORT]/SECRETPATH")
    scheme, host_text, port_text, secret = match.groups()
    if not SECRET_RE.fullmatch(secret):
        raise ValueError("the secret path must be 22..128 characters of A-Z a-z 0-9 _ -")
    port = int(port_text) if port_text else (443 if scheme == "wss" else 80)
    if not 0 < port <= 0xFFFF:
        raise ValueError("port out of range")
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", parts[2]):
        raise ValueError("the identity must be 64 hex digits")
    return BridgeLine(scheme == "wss", _host(host_text), port, secret, bytes.fromhex(parts[2]))


__all__ = ["BridgeLine", "parse_bridge_line"]
