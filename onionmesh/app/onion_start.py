"""Start the configured persistent onion services and load client authorization keys on a client
node (`proxy`, `testnet`): keys and hostname from each service's directory
(app.onion_config), then the runtime's `ClientNode.add_onion_service`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onionmesh.app.onion_config import (
    OnionServiceConfig,
    load_or_create_service_dir,
    read_authorized_clients,
    read_client_auth_dir,
)
from onionmesh.errors import Unsupported


async def start_onion_services(
    node: Any, services: tuple[OnionServiceConfig, ...], auth_dir: Path | None
) -> list[str]:
    """Publish every configured service; the addresses, in configuration order."""
    if auth_dir is not None:
        if not hasattr(node, "client_auth"):
            raise Unsupported("this onionmesh has no onion-service runtime yet")
        node.client_auth.update(read_client_auth_dir(auth_dir))
    if not services:
        return []
    try:
        from onionmesh.runtime.client.onion_service import OnionServiceSpec, PortMap
    except ImportError:
        raise Unsupported("this onionmesh has no onion-service runtime yet") from None
    addresses = []
    for cfg in services:
        key, address = load_or_create_service_dir(cfg.dir)
        spec = OnionServiceSpec(
            key=key,
            ports=tuple(PortMap(p.virt_port, p.target_host, p.target_port) for p in cfg.ports),
            client_auth=cfg.client_auth + read_authorized_clients(cfg.dir),
        )
        await node.add_onion_service(spec)
        addresses.append(address)
    return addresses
