"""A host as relay bodies carry it (BEGIN, CONNECTED, RESOLVE, DHT_RPC): a type byte, then a
hostname (vec8 of visible ASCII), 4 or 16 address bytes, or nothing.  Layout: docs/protocol.md.
"""

from __future__ import annotations

import enum
import ipaddress

from onionmesh.wire.buffer import Buffer


class AddrType(enum.IntEnum):
    NONE = 0
    HOSTNAME = 1
    IPV4 = 4
    IPV6 = 6


def _printable(raw: bytes) -> bool:
    """Hostnames on the wire are visible ASCII without spaces (0x21..0x7E)."""
    return all(0x21 <= b <= 0x7E for b in raw)


def push_address(buf: Buffer, host: str | None) -> None:
    """Encode a hostname or IP literal as type u8 + value."""
    if host is None:
        buf.push_u8(AddrType.NONE)
        return
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raw = host.encode("ascii")
        if not 0 < len(raw) <= 255 or not _printable(raw):
            raise ValueError("hostname must be 1..255 printable ASCII bytes") from None
        buf.push_u8(AddrType.HOSTNAME).push_vec8(raw)
        return
    buf.push_u8(AddrType.IPV4 if ip.version == 4 else AddrType.IPV6).push_bytes(ip.packed)


def pull_address(buf: Buffer) -> str | None:
    kind = buf.pull_u8()
    if kind == AddrType.NONE:
        return None
    if kind == AddrType.HOSTNAME:
        raw = buf.pull_vec8()
        if not raw or not _printable(raw):
            raise ValueError("hostname must be printable ASCII")
        return raw.decode("ascii")
    if kind == AddrType.IPV4:
        return str(ipaddress.IPv4Address(buf.pull_bytes(4)))
    if kind == AddrType.IPV6:
        return str(ipaddress.IPv6Address(buf.pull_bytes(16)))
    raise ValueError("unknown address type")
