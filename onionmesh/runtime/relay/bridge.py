"""What a relay does as a bridge: a web front for links, a bridge line, its descriptor on request.

A relay started with `--bridge` keeps its descriptor out of the DHT (its DHT node runs as a
client, with a random node ID, and proves no ID), accepts links over WebSocket at a secret path
of `--ws-listen` (runtime.transport.ws_front), and prints its bridge line, also written to
DATA_DIR/bridge-line (0600), for its operator to share out of band.  Any relay answers
DESCRIPTOR_GET on a link with its signed descriptor: it is how a bridge's client gets the onion
key it needs for CREATE (wire.bridge_cells).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from onionmesh.directory.bridge_line import BridgeLine, parse_bridge_line
from onionmesh.rng import Rng
from onionmesh.runtime.keystore import KeyStore, write_secret
from onionmesh.runtime.relay.config import RelayConfig
from onionmesh.runtime.transport.link import Link
from onionmesh.runtime.transport.ws_front import OnLink, WsFront, load_or_create_secret, server_ssl_context
from onionmesh.wire.bridge_cells import descriptor_payloads
from onionmesh.wire.cell import Cell, CellCommand

BRIDGE_LINE_FILE = "bridge-line"


class BridgeHost(Protocol):
    """What the bridge role needs of its relay."""

    rng: Rng
    keys: KeyStore
    config: RelayConfig


def send_descriptor(link: Link[Any], raw: bytes | None) -> None:
    """Answer DESCRIPTOR_GET; a relay without a descriptor yet says nothing."""
    if raw is None:
        return
    for payload in descriptor_payloads(raw):
        link.send_cell(Cell(0, CellCommand.DESCRIPTOR, payload))


async def start_front(relay: BridgeHost, on_accept: OnLink) -> tuple[WsFront, BridgeLine]:
    """Serve the decoy site on --ws-listen and hand WebSocket links at the secret path to the relay;
    a bridge also writes its bridge line to DATA_DIR/bridge-line."""
    config = relay.config
    assert config.ws_listen is not None
    secret = load_or_create_secret(Path(config.data_dir), relay.rng.random_bytes)
    tls = server_ssl_context(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    front = WsFront(config.ws_listen[0], config.ws_listen[1], secret, on_accept, tls)
    await front.start()
    line = bridge_line(relay, front)
    if config.bridge:
        write_bridge_line(Path(config.data_dir), line)
    return front, line


def bridge_line(relay: BridgeHost, front: WsFront) -> BridgeLine:
    """The line users need: `--ws-public-url` (a TLS front's wss://HOST[:PORT]) or the listen address."""
    config = relay.config
    secret = load_or_create_secret(Path(config.data_dir), relay.rng.random_bytes)
    identity = relay.keys.identity.public
    if config.ws_public_url:
        return parse_bridge_line(f"webtunnel {config.ws_public_url.rstrip('/')}/{secret} {identity.hex()}")
    return BridgeLine(config.tls_cert is not None, front.host, front.port, secret, identity)


def write_bridge_line(data_dir: Path, line: BridgeLine) -> Path:
    path = Path(data_dir) / BRIDGE_LINE_FILE
    write_secret(path, (str(line) + "\n").encode())
    return path
