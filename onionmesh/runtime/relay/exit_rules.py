"""The exit's one decision: may this stream go to host:port, and through which address?

Names are resolved first and every address is judged (so a hostname that resolves to a
private address is refused like the address itself); an exit then tries each allowed address
in turn (`localhost` may give ::1 first) before it reports failure.  The relay's own published
addresses are refused whatever the policy says (as Tor's ExitPolicyRejectPrivate does): a client
has no business reaching the relay's other services, its link port or its DHT node through it.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from onionmesh.directory.exit_policy import ExitPolicy, is_private_address
from onionmesh.directory.special_addresses import same_host
from onionmesh.errors import ExitRefused
from onionmesh.wire.relay_msg import BeginFlags, EndReason

RESOLVE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
# What an exit reads ahead from a destination per stream (asyncio pauses reading at twice this):
# a read then brings up to 32 KiB (8 cells), and more would multiply memory by the number of open
# streams (measured: 64 KiB bought 3 % of bulk throughput, within the noise).
STREAM_READ_LIMIT = 16 * 1024
# Out of descriptors or buffers: the exit is at its limit, not the destination unreachable
# (Tor's errno_to_stream_end_reason gives RESOURCELIMIT for these too).
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass
class ExitRules:
    policy: ExitPolicy
    allow_private: bool = False
    # Names this exit answers itself, before any resolver (an operator's /etc/hosts of sorts;
    # test meshes use it for names that only the exit can resolve).
    overrides: dict[str, list[str]] = field(default_factory=dict)
    # The relay's own addresses (listen, advertised, DHT): refused on every port, even with
    # allow_private.  Set by the relay when it publishes its descriptor.
    own_addresses: frozenset[str] = frozenset()

    def permits(self, address: str, port: int) -> bool:
        if is_private_address(address) and not self.allow_private:
            return False
        if any(same_host(address, own) for own in self.own_addresses):
            return False
        return self.policy.allows(address, port)

    @property
    def loopback_only(self) -> bool:
        """True when the policy accepts nothing but loopback (a test mesh's exit).

        Such an exit never asks the system resolver: a browser's background requests through a
        test mesh must not cause a single packet beyond loopback, not even a DNS query.
        """
        accepts = [r for r in self.policy.rules if r.accept]
        return bool(accepts) and all(r.network is not None and r.network.is_loopback for r in accepts)


def local_name_addresses(host: str) -> list[str] | None:
    """RFC 6761: "localhost" and "*.localhost" are loopback, answered without any DNS query."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return ["::1", "127.0.0.1"]
    return None


async def resolve(
    host: str,
    flags: BeginFlags = BeginFlags.IPV6_OK,
    *,
    local_only: bool = False,
    overrides: dict[str, list[str]] | None = None,
) -> list[str]:
    """All addresses for host, in resolver order, without duplicates; IP literals pass through.

    With `local_only`, names other than localhost are refused without asking the resolver.
    """
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    local = (overrides or {}).get(host.lower().rstrip(".")) or local_name_addresses(host)
    if local is not None:
        return _filter_family(local, flags)
    if local_only:
        raise ExitRefused(EndReason.RESOLVEFAILED)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise ExitRefused(EndReason.RESOLVEFAILED) from exc
    out: list[str] = []
    for _family, *_rest, sockaddr in infos:
        addr = str(ipaddress.ip_address(sockaddr[0].split("%")[0]))
        if addr not in out:
            out.append(addr)
    return _filter_family(out, flags)


def _filter_family(addresses: list[str], flags: BeginFlags) -> list[str]:
    """Apply BEGIN's IPv4/IPv6 flags; an empty result means the name did not resolve usably."""
    out = []
    for addr in addresses:
        version = ipaddress.ip_address(addr).version
        if version == 6 and not flags & BeginFlags.IPV6_OK:
            continue
        if version == 4 and flags & BeginFlags.IPV4_NOT_OK:
            continue
        out.append(addr)
    if flags & BeginFlags.IPV6_PREFERRED:
        out.sort(key=lambda a: ipaddress.ip_address(a).version != 6)
    if not out:
        raise ExitRefused(EndReason.RESOLVEFAILED)
    return out


async def connect(
    rules: ExitRules,
    host: str,
    port: int,
    flags: BeginFlags,
    local_host: Callable[[str], str | None] = lambda _: None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Resolve, check every address against the rules, connect to the first that answers.

    `local_host(address)` names the source address to use (the relay's own, when it has one of
    that family), so that traffic leaves from the address the relay advertises.
    """
    found = await resolve(host, flags, local_only=rules.loopback_only, overrides=rules.overrides)
    addresses = [a for a in found if rules.permits(a, port)]
    if not addresses:
        raise ExitRefused(EndReason.EXITPOLICY)
    reason = EndReason.CONNECTREFUSED
    for address in addresses:
        try:
            source = local_host(address)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(
                    address, port, local_addr=(source, 0) if source else None, limit=STREAM_READ_LIMIT
                )
            return reader, writer, address
        except ConnectionRefusedError:
            reason = EndReason.CONNECTREFUSED
        except TimeoutError:
            reason = EndReason.TIMEOUT
        except OSError as exc:
            reason = EndReason.RESOURCELIMIT if exc.errno in _RESOURCE_ERRNOS else EndReason.NOROUTE
    raise ExitRefused(reason)
