"""The network an address belongs to, for the rules that keep one operator from being everywhere."""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=65536)
def subnet(ip: str, v4_prefix: int, v6_prefix: int) -> str:
    """The /v4_prefix (IPv4) or /v6_prefix (IPv6) network of `ip`; IPv4-mapped IPv6 is judged as IPv4."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))
