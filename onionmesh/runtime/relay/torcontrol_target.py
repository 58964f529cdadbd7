"""A relay as a Tor control port sees it: what nyx shows an operator (`onionmesh relay --tor-control`).

A relay builds no circuits of its own and has no SOCKS port; it knows its own descriptor (its
`ns/id/<fp>` entry and `fingerprint`), its exit policy and the bytes its links carried.  Onion
services and circuit commands answer 551/552.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from onionmesh import __version__
from onionmesh.errors import ListenError, NotFound, Unsupported
from onionmesh.proto.torcontrol_onion import AddOnion, ClientAuthAdd
from onionmesh.rng import DEFAULT_RNG
from onionmesh.runtime.keystore import write_secret
from onionmesh.runtime.metrics import is_loopback_host
from onionmesh.runtime.relay.node import RelayNode
from onionmesh.runtime.torcontrol.server import TorControlServer, cookie_auth
from onionmesh.runtime.torcontrol.target import (
    CircuitInfo,
    Event,
    OnionService,
    RelayEntry,
    StreamInfo,
)

NOT_A_CLIENT = "a relay builds no circuits of its own and hosts no onion services"


class RelayControlTarget:
    role = "relay"
    version = __version__

    def __init__(self, node: RelayNode) -> None:
        self.node = node
        self.data_dir = str(Path(node.config.data_dir).resolve())
        self.config_file: str | None = None

    def socks_listeners(self) -> list[str]:
        return []

    def bootstrap(self) -> tuple[int, str, str]:
        return (100, "done", "Done") if self.node.descriptor is not None else (0, "starting", "Starting")

    def circuits(self) -> list[CircuitInfo]:
        return []

    def streams(self) -> list[StreamInfo]:
        return []

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        return lambda: None  # a relay's circuits are other people's: no CIRC/STREAM events

    def traffic(self) -> tuple[int, int]:
        stats = self.node.stats
        read = int(stats.get("closed_link_bytes_in", 0))
        written = int(stats.get("closed_link_bytes_out", 0))
        for link in list(self.node.links):
            read += getattr(link.proto, "bytes_received", 0) or 0
            written += getattr(link.proto, "bytes_sent", 0) or 0
        return read, written

    def relays(self) -> list[RelayEntry]:
        d = self.node.descriptor
        if d is None:
            return []
        host, port = d.link_addresses[0]
        flags = ("Exit", "Fast", "Running", "Valid") if d.is_exit else ("Fast", "Running", "Valid")
        return [RelayEntry(d.nickname, d.fingerprint, host, port, float(d.published), d.bandwidth, flags)]

    def fingerprint(self) -> str | None:
        return self.node.descriptor.fingerprint if self.node.descriptor is not None else None

    def exit_policy(self) -> list[str]:
        policy = self.node.config.exit_policy.strip()
        rules = [r.strip() for r in policy.replace(";", ",").split(",") if r.strip()] if policy else []
        return rules or ["reject *:*"]

    def get_conf(self, name: str) -> list[str] | None:
        config = self.node.config
        values = {
            "Nickname": [config.nickname],
            "ORPort": [str(config.listen_port)],
            "DataDirectory": [self.data_dir],
            "ExitRelay": ["1" if config.exit_policy.strip() else "0"],
            "ExitPolicy": self.exit_policy(),
            "BridgeRelay": ["1" if config.bridge else "0"],
            "SocksPort": ["0"],
            "DisableNetwork": ["0"],
        }
        return sorted(values) if name == "__names__" else values.get(name)

    def set_conf(self, values: dict[str, str | None]) -> None:
        for name, value in values.items():
            if value is not None and [value] != self.get_conf(name):
                raise ValueError(f"{name} cannot be changed at run time (restart the relay)")

    def newnym(self) -> None:
        pass  # a relay has no identity of its own to renew

    def close_circuit(self, circuit: int) -> bool:
        return False

    async def extend_circuit(self, path: list[str] | None, purpose: str) -> int:
        raise Unsupported(NOT_A_CLIENT)

    def attach_stream(self, stream: int, circuit: int) -> None:
        raise NotFound("Unknown stream")

    def signal(self, name: str) -> None:
        pass

    async def add_onion(self, request: AddOnion) -> OnionService:
        raise Unsupported(NOT_A_CLIENT)

    def del_onion(self, service_id: str) -> None:
        raise NotFound(service_id)

    def client_auth_add(self, request: ClientAuthAdd) -> None:
        raise Unsupported(NOT_A_CLIENT)

    def client_auth_remove(self, service_id: str) -> None:
        raise Unsupported(NOT_A_CLIENT)

    def client_auth_view(self, service_id: str | None) -> list[str]:
        return []

    def geoip_available(self, version: int) -> bool:
        return False  # a relay holds no GeoIP database: ip-to-country is "GeoIP data not loaded"

    def ip_to_country(self, ip: str) -> str:
        return "??"


async def start_tor_control(
    node: RelayNode, address: tuple[str, int], passwords: tuple[str, ...] = ()
) -> TorControlServer:
    """The relay's Tor control port, loopback only, with a fresh cookie in DATA_DIR/control_auth_cookie."""
    host, port = address
    if not is_loopback_host(host):
        raise ListenError("Tor control", host, port, OSError("a relay's control port must be on loopback"))
    cookie = DEFAULT_RNG.random_bytes(32)
    write_secret(Path(node.config.data_dir) / "control_auth_cookie", cookie)
    server = TorControlServer(
        RelayControlTarget(node), host, port, cookie_auth(cookie, node.config.data_dir, passwords)
    )
    try:
        await server.start()
    except OSError as exc:
        raise ListenError("Tor control", host, port, exc) from None
    return server
