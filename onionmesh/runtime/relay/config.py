"""A relay's settings (the `onionmesh relay` options), apart from the node so that its roles
(bridge, exit) can read them without importing the node."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onionmesh.runtime.transport.memory_guard import DEFAULT_MAX_MEM_IN_QUEUES


@dataclass
class RelayConfig:
    listen_host: str
    listen_port: int
    data_dir: Path
    nickname: str = "Unnamed"
    exit_policy: str = ""
    exit_policy_udp: str = ""  # UDP exit policy (issue 22); empty: exit no UDP at all
    allow_private_destinations: bool = False
    bandwidth: int = 10_000_000
    advertise: tuple[str, int] | None = None
    family: tuple[bytes, ...] = ()
    dht: tuple[str, int] | None = None  # UDP address of our DHT node; default: the listen host, port 0
    bootstrap: tuple[tuple[str, int], ...] = ()  # none: this relay starts a new network
    resolve_overrides: dict[str, list[str]] = field(default_factory=dict)  # names the exit answers itself
    metrics: tuple[str, int] | None = None  # Prometheus /metrics on loopback; off by default
    # Bridges (runtime.relay.bridge, docs/censorship.md)
    bridge: bool = False  # keep the descriptor out of the DHT; print a bridge line
    ws_listen: tuple[str, int] | None = None  # links over WebSocket behind a decoy web site
    ws_public_url: str | None = None  # wss://HOST[:PORT] of a TLS front, for the bridge line
    tls_cert: Path | None = None
    tls_key: Path | None = None
    bandwidth_rate: int | None = None  # bytes/s in each direction (Tor's BandwidthRate); None: no limit
    bandwidth_burst: int | None = None  # bucket size in bytes (Tor's BandwidthBurst); default: the rate
    max_mem_in_queues: int = DEFAULT_MAX_MEM_IN_QUEUES  # queued bytes before the OOM policy acts
    # Exit streams (runtime.relay.exit_limits); None: 512 per circuit, RLIMIT_NOFILE less headroom per
    # process, half that per link.
    max_streams_per_circuit: int | None = None
    max_streams_per_link: int | None = None
    max_exit_streams: int | None = None
    # UDP flows per circuit and datagrams per second per circuit toward destinations (exit_udp)
    udp_flows_per_circuit: int | None = None
    udp_datagrams_per_second: float | None = None
    # Inbound links at once, over all addresses; None: half the descriptor budget (runtime.fd_budget).
    max_inbound_links: int | None = None
    # The directory (runtime.relay.dir_source): epoch length in seconds; 3600 in a real network,
    # shorter only in tests and the testnet (every relay and client of one network must agree).
    dir_epoch: float = 3600.0

    @property
    def advertised_bandwidth(self) -> int:
        """What the descriptor says we can carry: never more than the rate limit lets through."""
        if self.bandwidth_rate is None:
            return self.bandwidth
        return min(self.bandwidth, self.bandwidth_rate)
