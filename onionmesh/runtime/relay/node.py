"""A relay: keys, the listeners (TCP, or a bridge's WebSocket front), inbound link admission,
and its descriptor in the DHT.  What it does with cells and circuits (CREATE, forwarding,
extending, the exit, teardown, the OOM policy) is its `runtime.relay.switch.CircuitSwitch`,
which owns every link; the node gives it keys, the exit, DHT answers and a way to reach relays.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from onionmesh.directory.bridge_line import BridgeLine
from onionmesh.directory.descriptor import MAX_EXIT_POLICY_LEN, RelayDescriptor
from onionmesh.directory.dir_budget import DIR_SHARE, DirBudget
from onionmesh.directory.exit_policy import ExitPolicy, is_private_address
from onionmesh.errors import OnionmeshError, PolicyError
from onionmesh.proto.scheduler import QueueBudget
from onionmesh.rng import DEFAULT_RNG, Rng
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.fd_budget import descriptor_budget
from onionmesh.runtime.keystore import KeyStore, write_secret
from onionmesh.runtime.metrics import MetricsServer, relay_metrics
from onionmesh.runtime.ratelimit import ByteBucket, HandshakeGate, TokenBuckets
from onionmesh.runtime.relay import bridge as bridge_relay
from onionmesh.runtime.relay import exit_rules as exit_mod
from onionmesh.runtime.relay.circuit_entry import RelayCircuitEntry
from onionmesh.runtime.relay.config import RelayConfig
from onionmesh.runtime.relay.dht_answers import DhtRpcService
from onionmesh.runtime.relay.dir_answers import DirAnswers
from onionmesh.runtime.relay.dir_source import DirSource
from onionmesh.runtime.relay.exit_limits import StreamCaps
from onionmesh.runtime.relay.exit_streams import ExitService
from onionmesh.runtime.relay.exit_udp import udp_exit
from onionmesh.runtime.relay.hs_intro_point import IntroPoint
from onionmesh.runtime.relay.hs_rend_point import RendezvousPoint
from onionmesh.runtime.relay.switch import CircuitSwitch, RelayLink
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport.link import LinkLimits
from onionmesh.runtime.transport.link_setup import accept_link, open_link
from onionmesh.runtime.transport.ws_front import WsFront

log = get_logger("onionmesh.relay")

MAX_LINKS_PER_IP = 64  # inbound links from one address; more are closed at once
ACCEPT_RATE = 200.0  # new inbound connections per second per address ...
ACCEPT_BURST = 400.0  # ... with this burst: a connection flood costs an accept and a close, nothing more
# Over all addresses (runtime.ratelimit.HandshakeGate): connections that may start a link handshake,
# per second and in a burst, and handshakes in progress at once (the oldest gives way to a new one).
# 256/s of responder handshakes is about 4 % of a core in public-key work (bench/flood.py).
HANDSHAKE_RATE = 256.0
HANDSHAKE_BURST = 512.0
MAX_PENDING_HANDSHAKES = 256
# A descriptor is re-signed daily (and at once on any change: onion-key rotation, restart) with a
# 72-hour lifetime, the most protocol §9.1 allows: every re-signing is a RENEW in the directory's
# hourly diff, so signing every 30 minutes would put one per relay in every diff (directory-design
# §7.1).  Liveness rides on heartbeats, not on descriptor freshness.  The same signed bytes are
# still stored in the DHT every 30 minutes: DHT holders come and go, and a holder that already has
# them answers ALREADY_HELD, so this costs lookups, not diff entries.
DESCRIPTOR_LIFETIME = 72 * 3600
RESIGN_INTERVAL = 24 * 3600
REPUBLISH_INTERVAL = 1800


def descriptor_due(now: float, signed_at: float, stored_at: float, rotated: bool) -> tuple[bool, bool]:
    """(re-sign, store in the DHT) at `now`: re-sign daily or after a rotation; store what was
    (re-)signed, and the unchanged descriptor every REPUBLISH_INTERVAL."""
    resign = rotated or now - signed_at >= RESIGN_INTERVAL
    return resign, resign or now - stored_at >= REPUBLISH_INTERVAL


class RelayNode:
    """A relay's life: keys, listeners and inbound links, its descriptor in the DHT; what it does
    with cells and circuits is its `switch`'s."""

    def __init__(self, config: RelayConfig, rng: Rng = DEFAULT_RNG) -> None:
        self.config = config
        self.rng = rng
        self.keys = KeyStore(config.data_dir, rng)
        self.policy = ExitPolicy.parse(config.exit_policy) if config.exit_policy.strip() else None
        if self.policy is not None and len(str(self.policy).encode()) > MAX_EXIT_POLICY_LEN:
            raise PolicyError(f"the exit policy is too long to publish (at most {MAX_EXIT_POLICY_LEN} bytes)")
        self.exit_rules = (
            exit_mod.ExitRules(
                self.policy,
                config.allow_private_destinations,
                {k.lower().rstrip("."): v for k, v in config.resolve_overrides.items()},
            )
            if self.policy
            else None
        )
        self.allow_private_links = is_private_address(config.listen_host)
        self._server: asyncio.base_events.Server | None = None
        self.descriptor: RelayDescriptor | None = None
        self.dht = DhtNode(None if config.bridge else self.keys.identity)  # a bridge's DHT node is a client
        self.dht_rpc = DhtRpcService(self.dht, lambda: self.config.bootstrap, self._own_dht_contact)
        self.front: WsFront | None = None
        self.bridge_line: BridgeLine | None = None
        caps = StreamCaps.derive(
            config.max_streams_per_circuit, config.max_streams_per_link, config.max_exit_streams
        )
        self.stats: dict[str, int] = {}
        self.exit_service = ExitService(self.exit_rules, self._local_host_for, self._count, caps)
        # UDP flows share the exit's stream ledger (each holds a socket as a stream does)
        self.udp_exit = udp_exit(config, self.exit_service.streams, self._count, self._local_host_for)
        self.udp_policy = self.udp_exit.rules.policy if self.udp_exit.rules else None
        self.metrics_server: MetricsServer | None = None
        self._inbound_per_ip: dict[str, int] = {}
        self._inbound_ip: dict[RelayLink, str] = {}
        self.max_inbound_links = config.max_inbound_links or max(1, descriptor_budget() // 2)
        self.inbound_links_shed = 0  # idle inbound links closed to make room (the global link cap)
        self.inbound_links_refused_cap = 0  # newcomers closed: at the cap and every link carries circuits
        self._accept_budget = TokenBuckets(ACCEPT_RATE, ACCEPT_BURST, 65536)
        self.handshakes = HandshakeGate(HANDSHAKE_RATE, HANDSHAKE_BURST, MAX_PENDING_HANDSHAKES)
        self.switch = CircuitSwitch(
            self.keys,
            rng,
            QueueBudget(config.max_mem_in_queues),
            self.exit_service,
            self.dht_rpc,
            lambda: self.descriptor.encode() if self.descriptor else None,
            self._link_to,
            self._link_gone,
            self.stats,
            udp=self.udp_exit,
        )
        # Onion services: introduction and rendezvous points are handlers at the switch's seam.
        self.intro_point = IntroPoint(self.switch.destroy, self.switch.count)
        self.intro_point.register(self.switch.handlers)
        self.rend_point = RendezvousPoint(self.switch.destroy, self.switch.count)
        self.rend_point.register(self.switch.handlers)
        # The directory: every relay (not a bridge) is a source; clients fetch through DIR_GET.
        self.dir_source: DirSource | None = None
        if not config.bridge:
            self.dir_source = DirSource(
                self.keys.identity, self.dht, lambda: self.descriptor, epoch_len=config.dir_epoch, rng=rng
            )
        budget = DirBudget(config.advertised_bandwidth * DIR_SHARE, window=config.dir_epoch, now=time.time())
        self.dir_answers = DirAnswers(lambda: self.dir_source, budget, self._count)
        self.dir_answers.register(self.switch.handlers)
        if config.bandwidth_rate is not None:
            rate = config.bandwidth_rate
            burst = config.bandwidth_burst or rate
            self.limits.read = ByteBucket(rate, burst, now=0.0)
            self.limits.write = ByteBucket(rate, burst, now=0.0)

    @property
    def fingerprint(self) -> str:
        return self.keys.identity.fingerprint

    @property
    def links(self) -> set[RelayLink]:
        return self.switch.links.links

    @property
    def limits(self) -> LinkLimits:
        return self.switch.links.limits

    def queued_bytes(self) -> int:
        return self.switch.queued_bytes()

    def _count(self, name: str, n: int = 1) -> None:
        self.switch.count(name, n)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.switch.spawn(coro, name)

    # --- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.config.bridge:  # links over WebSocket only: no onionmesh port for a censor to scan for
            self.front, self.bridge_line = await bridge_relay.start_front(self, self._on_accept)  # type: ignore[arg-type]
            self.config.listen_port = self.front.port
        else:
            self._server = await asyncio.start_server(
                self._on_accept, self.config.listen_host, self.config.listen_port, reuse_address=True
            )
            self.config.listen_port = self._server.sockets[0].getsockname()[1]
        dht_host, dht_port = self.config.dht or (self.config.listen_host, 0)
        await self.dht.listen(dht_port, dht_host)
        self.keys.maybe_rotate(time.time())  # after a long sleep, never publish an expired onion key
        self.publish_descriptor()
        if self.dir_source is not None:
            # Before joining: the sources our bootstrap proves us to may ask for our heartbeat at once.
            self.dir_source.start()
        if self.config.bootstrap:
            await self.dht.bootstrap(list(self.config.bootstrap))
        if not self.config.bridge:
            self._spawn(self._publish_to_dht(), "relay-publish")
        if self.config.ws_listen is not None and self.front is None:
            self.front, self.bridge_line = await bridge_relay.start_front(self, self._on_accept)  # type: ignore[arg-type]
        self._spawn(self._maintenance(), "relay-maintenance")
        self._spawn(self.switch.memory_watch(), "relay-memory")
        if self.config.metrics is not None:
            self.metrics_server = MetricsServer(*self.config.metrics, lambda: relay_metrics(self))
            await self.metrics_server.start()
        log.info(
            "relay listening",
            identity=self.keys.identity.public.hex(),
            fingerprint=self.fingerprint,
            port=self.config.listen_port,
            dht_port=self.dht.address[1],
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.dir_source is not None:
            await self.dir_source.stop()
        self.dht.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        for link in list(self.links):
            link.close()
        if self.front is not None:
            with contextlib.suppress(OSError, RuntimeError):
                await self.front.stop()
        self.switch.cancel_tasks()
        if self._server is not None:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    def make_descriptor(self) -> RelayDescriptor:
        host, port = self.config.advertise or (self.config.listen_host, self.config.listen_port)
        dht_host, dht_port = self.dht.address
        if ipaddress.ip_address(dht_host).is_unspecified:
            dht_host = host
        return RelayDescriptor.create(
            identity=self.keys.identity,
            onion_cert=self.keys.onion_cert(),
            nickname=self.config.nickname,
            link_addresses=((host, port),),
            dht_contact=(dht_host, dht_port),
            exit_policy=str(self.policy) if self.policy else "",
            bandwidth=self.config.advertised_bandwidth,
            family=self.config.family,
            published=int(time.time()),
            lifetime=DESCRIPTOR_LIFETIME,
            exit_policy_udp=str(self.udp_policy) if self.udp_policy else "",
        )

    def _own_dht_contact(self) -> tuple[str, int] | None:
        return None if self.config.bridge or self.descriptor is None else self.descriptor.dht_contact

    def publish_descriptor(self) -> None:
        """Sign a fresh descriptor: our DHT node serves it, and a copy goes to DATA_DIR/descriptor."""
        self.descriptor = self.make_descriptor()
        if self.exit_rules is not None:  # the exit never connects to the relay's own addresses
            own = {h for h, _ in self.descriptor.link_addresses} | {self.descriptor.dht_contact[0]}
            own.add(self.config.listen_host)
            self.exit_rules.own_addresses = frozenset(
                a for a in own if _is_ip(a) and not ipaddress.ip_address(a).is_unspecified
            )
        if self.udp_exit.rules is not None:  # nor does its UDP
            own = {h for h, _ in self.descriptor.link_addresses} | {self.config.listen_host}
            self.udp_exit.rules.own_addresses = frozenset(
                a for a in own if _is_ip(a) and not ipaddress.ip_address(a).is_unspecified
            )
        raw = self.descriptor.encode()
        if not self.config.bridge:  # a bridge's DHT node serves no descriptor and proves no ID
            self.dht.descriptor_raw = raw
        path = Path(self.config.data_dir) / "descriptor"
        write_secret(path, base64.b64encode(raw).decode().encode() + b"\n")
        path.chmod(0o644)

    async def _publish_to_dht(self) -> None:
        """Store the descriptor at the nodes closest to its key (retrying while the network is small)."""
        for attempt in range(5):
            raw = self.dht.descriptor_raw
            if raw is not None and await self.dht.publish(raw) > 0:
                return
            await asyncio.sleep(1 + attempt)

    async def _maintenance(self) -> None:
        signed = stored = time.time()
        while True:
            await asyncio.sleep(60)
            now = time.time()
            resign, store = descriptor_due(now, signed, stored, self.keys.maybe_rotate(now))
            if resign:
                self.publish_descriptor()
                signed = now
            if store:
                if not self.config.bridge:
                    self._spawn(self._publish_to_dht(), "relay-publish")
                stored = now

    # --- links ---------------------------------------------------------------------------------
    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A plain callback, not a coroutine: asyncio then spends no task on a connection it refuses."""
        peer = writer.get_extra_info("peername")
        ip = peer[0] if peer else "?"
        now = time.monotonic()
        over_rate = not self._accept_budget.allow(ip, now)
        if over_rate or self._inbound_per_ip.get(ip, 0) >= MAX_LINKS_PER_IP:
            self._count("links_refused")
            writer.close()
            return
        if not self.handshakes.admit(now):  # many addresses at once: the global bound
            self._count("links_refused_global")
            writer.close()
            return
        if len(self._inbound_ip) >= self.max_inbound_links and not self._shed_idle_inbound():
            self.inbound_links_refused_cap += 1
            self._count("links_refused_cap")
            writer.close()
            return
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = accept_link(
            reader, writer, self.keys.identity, self.switch, self.rng, self.limits, self.handshakes.finished
        )
        self._inbound_per_ip[ip] = self._inbound_per_ip.get(ip, 0) + 1
        self._inbound_ip[link] = ip
        self.switch.links.add(link)
        displaced = self.handshakes.started(link)
        if displaced is not None:
            self._count("handshakes_displaced")
            displaced.close()  # type: ignore[attr-defined]

    def _shed_idle_inbound(self) -> bool:
        """At the inbound link cap (64 addresses x 64 links could otherwise hold ~4,096 descriptors
        until the idle timeout): close the idlest inbound link that carries no circuit, if any."""
        idle = [link for link in self._inbound_ip if not link.circuits and not link.closed]
        if not idle:
            return False
        victim = min(idle, key=lambda link: link.last_heard)
        self.inbound_links_shed += 1
        self._count("links_shed_cap")
        victim.close()  # calls link_closed: its slot is free at once
        return True

    async def _link_to(self, addresses: tuple[tuple[str, int], ...], identity_pk: bytes) -> RelayLink:
        """The link to the next hop of an EXTEND: the open one, else one over its first usable address."""

        async def opener() -> RelayLink:
            last_error: Exception = OSError("no usable address")
            for host, port in addresses:
                if is_private_address(host) and not self.allow_private_links:
                    continue
                try:
                    return await open_link(
                        host,
                        port,
                        identity_pk,
                        self.switch,
                        self.rng,
                        local_host=self._local_host_for(host),
                        limits=self.limits,
                    )
                except (OSError, TimeoutError, OnionmeshError) as exc:
                    last_error = exc
            raise OSError(str(last_error))

        return await self.switch.links.get_or_open(identity_pk, opener)

    def _local_host_for(self, host: str) -> str | None:
        """Bind outgoing links to our listen address when it is a specific address of the same family."""
        ours = self.config.listen_host
        try:
            if ipaddress.ip_address(ours).is_unspecified:
                return None
            if ipaddress.ip_address(ours).version != ipaddress.ip_address(host).version:
                return None
        except ValueError:
            return None
        return ours

    def _link_gone(self, link: RelayLink) -> None:
        """After the switch tore down the link's circuits: the node's own bookkeeping."""
        self.handshakes.finished(link)
        ip = self._inbound_ip.pop(link, None)
        if ip is not None:
            left = self._inbound_per_ip.get(ip, 1) - 1
            if left > 0:
                self._inbound_per_ip[ip] = left
            else:
                self._inbound_per_ip.pop(ip, None)
        self.stats["closed_link_bytes_in"] = (
            self.stats.get("closed_link_bytes_in", 0) + link.proto.bytes_received
        )
        self.stats["closed_link_bytes_out"] = (
            self.stats.get("closed_link_bytes_out", 0) + link.proto.bytes_sent
        )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


__all__ = ["CircuitSwitch", "RelayCircuitEntry", "RelayConfig", "RelayNode"]
