"""The exit's one decision: may this stream go to host:port, and through which address?

Names are resolved first and every address is judged (so a hostname that resolves to a
private address is refused like the address itself); an exit then tries each allowed address
in turn (`localhost` may give ::1 first) before it reports failure.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from onionmesh.directory.exit_policy import ExitPolicy, is_private_address
from onionmesh.wire.relay_msg import BeginFlags, EndReason

RESOLVE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0


@dataclass
class ExitRules:
    policy: ExitPolicy
    allow_private: bool = False

    def permits(self, address: str, port: int) -> bool:
        if is_private_address(address) and not self.allow_private:
            return False
        return self.policy.allows(address, port)


class ExitRefused(Exception):
    def __init__(self, reason: EndReason) -> None:
        super().__init__(reason.name)
        self.reason = reason


async def resolve(host: str, flags: BeginFlags = BeginFlags.IPV6_OK) -> list[str]:
    """All addresses for host, in resolver order, without duplicates; IP literals pass through."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise ExitRefused(EndReason.RESOLVEFAILED) from exc
    out: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family == socket.AF_INET6 and not flags & BeginFlags.IPV6_OK:
            continue
        if family == socket.AF_INET and flags & BeginFlags.IPV4_NOT_OK:
            continue
        addr = str(ipaddress.ip_address(sockaddr[0].split("%")[0]))
        if addr not in out:
            out.append(addr)
    if flags & BeginFlags.IPV6_PREFERRED:
        out.sort(key=lambda a: ipaddress.ip_address(a).version != 6)
    if not out:
        raise ExitRefused(EndReason.RESOLVEFAILED)
    return out


async def connect(
    rules: ExitRules, host: str, port: int, flags: BeginFlags
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Resolve, check every address against the rules, connect to the first that answers."""
    addresses = [a for a in await resolve(host, flags) if rules.permits(a, port)]
    if not addresses:
        raise ExitRefused(EndReason.EXITPOLICY)
    reason = EndReason.CONNECTREFUSED
    for address in addresses:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT)
            return reader, writer, address
        except ConnectionRefusedError:
            reason = EndReason.CONNECTREFUSED
        except TimeoutError:
            reason = EndReason.TIMEOUT
        except OSError:
            reason = EndReason.NOROUTE
    raise ExitRefused(reason)
