"""What an onion service is configured with: its key, its port map, its client keys, its defences.

spec = OnionServiceSpec(key, (PortMap(80, "127.0.0.1", 8080),), client_auth=(x25519_pub,))
check_spec(spec)      # ConfigError for what cannot run, before anything is built
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.errors import ConfigError
from onionmesh.proto.hs_pow_effort import UPDATE_PERIOD


@dataclass(frozen=True)
class PortMap:
    virt_port: int
    target_host: str
    target_port: int


@dataclass(frozen=True)
class OnionServiceSpec:
    key: ExpandedKey  # the service's identity key
    ports: tuple[PortMap, ...]
    client_auth: tuple[bytes, ...] = ()  # x25519 public keys (32 bytes) of authorized clients
    pow_enabled: bool = False
    max_streams: int = 0  # 0: no cap (Tor's MaxStreams)
    pow_update_period: float = UPDATE_PERIOD  # Tor's HS_UPDATE_PERIOD (shorter in benches and tests)


def target_host(host: str) -> str:
    """Targets are IP literals (or "localhost"): a service never asks a resolver."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfigError(f"onion service target {host!r} must be an IP address") from None


def check_spec(spec: OnionServiceSpec) -> None:
    """ConfigError for what add_onion_service cannot run (before anything is built)."""
    for pm in spec.ports:
        if not (0 < pm.virt_port < 65536 and 0 < pm.target_port < 65536):
            raise ConfigError("onion service ports are 1..65535")
        target_host(pm.target_host)
    if any(len(k) != 32 for k in spec.client_auth):
        raise ConfigError("client authorization keys are 32-byte x25519 public keys")
