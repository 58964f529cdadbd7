"""Tor's text forms of circuits, streams and relays (control-spec §4.1.1-§4.1.2, dir-spec §3.4.1).

`circuit_line` is both a `circuit-status` line and the body of a `650 CIRC` event; relays are
written `$FINGERPRINT~nickname`, as stem, nyx and Tor Browser's circuit display parse them.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress

from onionmesh.proto.torcontrol import quote
from onionmesh.runtime.torcontrol.target import CircuitInfo, RelayEntry, StreamInfo

# Tor's version: the tools compare it with Tor's minimums (OnionShare wants >= 0.3.5.7 for v3
# onion services, stem >= 0.4.6.1 for V3Auth), so the control port claims the Tor release whose
# commands it speaks, and names onionmesh beside it in the parenthesised tag stem's parser allows.
TOR_COMPAT_VERSION = "0.4.8.10"


def tor_version(onionmesh_version: str) -> str:
    return f"{TOR_COMPAT_VERSION} (onionmesh-{onionmesh_version})"


def _time(unix: float) -> str:
    moment = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _socks_isolation(info: CircuitInfo | StreamInfo) -> list[str]:
    """SOCKS_USERNAME= and SOCKS_PASSWORD=, quoted: the isolation a circuit or stream serves."""
    parts = []
    if info.socks_username is not None:
        parts.append(f"SOCKS_USERNAME={quote(info.socks_username)}")
    if info.socks_password is not None:
        parts.append(f"SOCKS_PASSWORD={quote(info.socks_password)}")
    return parts


def path_text(info: CircuitInfo) -> str:
    return ",".join(f"${hop.fingerprint}~{hop.nickname}" for hop in info.path)


def circuit_line(info: CircuitInfo) -> str:
    parts = [str(info.id), info.status]
    if info.path:
        parts.append(path_text(info))
    parts += ["BUILD_FLAGS=NEED_CAPACITY", f"PURPOSE={info.purpose}"]
    if info.hs_state:
        parts.append(f"HS_STATE={info.hs_state}")
    if info.rend_query:
        parts.append(f"REND_QUERY={info.rend_query}")
    if info.created is not None:
        parts.append(f"TIME_CREATED={_time(info.created)}")
    if info.reason:
        parts.append(f"REASON={info.reason}")
    parts += _socks_isolation(info)
    return " ".join(parts)


def stream_status_line(info: StreamInfo) -> str:
    """A `stream-status` line: StreamID SP StreamStatus SP CircuitID SP Target."""
    return f"{info.id} {info.status} {info.circuit} {info.target}"


def stream_event(info: StreamInfo) -> str:
    """The body of a `650 STREAM` event, its keywords in control-spec §4.1.2's order."""
    parts = [stream_status_line(info)]
    if info.reason:
        parts.append(f"REASON={info.reason}")
        if info.remote_reason:
            parts.append(f"REMOTE_REASON={info.remote_reason}")
    if info.source:
        parts.append(f"SOURCE={info.source}")
    if info.source_addr:
        parts.append(f"SOURCE_ADDR={info.source_addr}")
    parts.append("PURPOSE=USER")
    parts += _socks_isolation(info)
    return " ".join(parts)


def _b64_digest(hex_fp: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_fp)).decode("ascii").rstrip("=")


def ns_entry(relay: RelayEntry) -> str:
    """A v3 network-status entry (`r`/`s`/`w`/`p` lines) for a relay we hold a verified descriptor of.

    onionmesh has no consensus: the descriptor digest is the fingerprint again (there is no
    separate descriptor digest a controller could fetch by), the flags are what the client
    itself decided (Running, Valid, Fast, Stable, Exit, Guard), the bandwidth is the advertised one
    in kilobytes."""
    published = datetime.datetime.fromtimestamp(relay.published, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    try:
        address = str(ipaddress.IPv4Address(relay.address))
        extra = ""
    except ValueError:  # an IPv6-only relay: Tor puts 0.0.0.0-style placeholders aside, keep it parseable
        address, extra = "0.0.0.0", f"\na [{relay.address}]:{relay.or_port}"
    digest = _b64_digest(relay.fingerprint)
    return (
        f"r {relay.nickname} {digest} {digest} {published} {address} {relay.or_port} 0{extra}\n"
        f"s {' '.join(sorted(relay.flags))}\n"
        f"w Bandwidth={max(1, relay.bandwidth // 1000)}\n"
        f"p {relay.exit_summary}\n"
    )
