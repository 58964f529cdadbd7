"""The client ("proxy"): the DHT directory, circuits, the SOCKS listener and the control API together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onionmesh.directory.bridge_line import BridgeLine
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.errors import (
    ConfigError,
    ListenerClash,
    ListenError,
    NotFound,
    OnionmeshError,
    PublicListenerRefused,
)
from onionmesh.rng import DEFAULT_RNG, Rng
from onionmesh.runtime.backoff import Backoff
from onionmesh.runtime.client import client_auth_store, onion_api, status_page
from onionmesh.runtime.client.bridges import BridgeSet
from onionmesh.runtime.client.circuit_manager import NO_ISOLATION, CircuitMgr
from onionmesh.runtime.client.control import ControlServer, load_or_create_cookie
from onionmesh.runtime.client.dht_over_circuits import CircuitDhtChannel
from onionmesh.runtime.client.dir_fetch import DirFetchDirectory
from onionmesh.runtime.client.directory import DEFAULT_REFRESH, DhtDirectory
from onionmesh.runtime.client.hs_circuits import HsCircuits
from onionmesh.runtime.client.hs_fetch import circuit_dht_node
from onionmesh.runtime.client.onion_client import OnionConnector
from onionmesh.runtime.client.onion_service import OnionService, OnionServiceSpec, check_spec
from onionmesh.runtime.client.path_policy import PathPolicy, no_path_reason
from onionmesh.runtime.client.socks_server import SocksListener
from onionmesh.runtime.client.torcontrol_target import start_tor_control
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.keystore import private_dir
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.metrics import MetricsServer, client_metrics, is_loopback_host
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.torcontrol.server import TorControlServer

log = get_logger("onionmesh.client")
bug_log = limited(log)  # a bug that fails every pre-build must not fill the disk

PREBUILT_CIRCUITS = 2
POOL_PORTS = 4  # pre-build for at most this many recently used destination ports
PORT_MEMORY = 3600.0
PREBUILD_BACKOFF_BASE = 0.5  # after a failed pre-build: 0.25-0.5 s, doubling ...
PREBUILD_BACKOFF_CAP = 60.0  # ... up to 30-60 s; reset by the first build that works
IDLE_WAKEUP = 1.0  # with nothing to do, look again this often


@dataclass
class ClientConfig:
    data_dir: Path
    socks_host: str = "127.0.0.1"
    socks_port: int = 9050
    control_host: str = "127.0.0.1"
    control_port: int = 9052  # the JSON API; Tor's control protocol has 9051 (torcontrol)
    bootstrap: tuple[tuple[str, int], ...] = ()
    dht_refresh: float = DEFAULT_REFRESH
    hops: int = 3
    prebuilt_circuits: int = PREBUILT_CIRCUITS
    metrics: tuple[str, int] | None = None  # Prometheus /metrics on loopback; off by default
    bridges: tuple[BridgeLine, ...] = ()  # first hops reached over WebSocket (docs/censorship.md)
    dht_over_circuits: bool = False  # send DHT RPCs through circuits (always so with bridges)
    # "guards": the directory from directory guards over one-hop circuits (runtime.client.dir_fetch);
    # "crawl": the whole-DHT crawl (always so with bridges and dht_over_circuits), which tells every
    # relay the client's address (issue 23).
    directory: str = "guards"
    dir_epoch: float = 3600.0  # the network's directory epoch (only tests and the testnet shorten it)
    allow_public_listeners: bool = False  # SOCKS/control on a non-loopback address (--allow-public-listeners)
    # Tor's control protocol (runtime/torcontrol, docs/control-port.md): off unless given; the
    # commands default it to 127.0.0.1:9051. Passwords are `16:` hashes (tor --hash-password).
    torcontrol: tuple[str, int] | None = None
    torcontrol_passwords: tuple[str, ...] = ()


def clashing_listeners(config: ClientConfig) -> str | None:
    """Two of this proxy's own listeners asked for one address (port 0 means "any": never a clash).
    The JSON control API moved from 9051 to 9052 when Tor's control port took 9051, so an old
    `--control 127.0.0.1:9051` must get this sentence, not "address already in use"."""
    seen: dict[tuple[str, int], str] = {}
    for what, host, port in (
        ("--socks", config.socks_host, config.socks_port),
        ("--control", config.control_host, config.control_port),
        *([("--tor-control", *config.torcontrol)] if config.torcontrol else []),
    ):
        if port and (host, port) in seen:
            return (
                f"{seen[(host, port)]} and {what} both ask for {host}:{port}; Tor's control port "
                "(--tor-control) is 127.0.0.1:9051 and the JSON control API (--control) 127.0.0.1:9052 "
                "by default (docs/control-port.md)"
            )
        seen[(host, port)] = what
    return None


def public_listeners(config: ClientConfig) -> list[str]:
    """The listeners others than this machine's users could reach, as "SOCKS 0.0.0.0:9050"."""
    out = []
    for what, host, port in (
        ("SOCKS", config.socks_host, config.socks_port),
        ("control", config.control_host, config.control_port),
        *([("Tor control", *config.torcontrol)] if config.torcontrol else []),
    ):
        if not is_loopback_host(host):
            out.append(f"{what} {host}:{port}")
    return out


class ClientNode:
    def __init__(self, config: ClientConfig, rng: Rng = DEFAULT_RNG) -> None:
        self.config = config
        self.rng = rng
        clash = clashing_listeners(config)
        if clash:
            raise ListenerClash(clash)
        exposed = public_listeners(config)
        if exposed and not config.allow_public_listeners:
            raise PublicListenerRefused(
                f"refusing to listen on {' and '.join(exposed)}: anyone who reaches it can use this proxy "
                "(and its control API); keep it on loopback, or pass --allow-public-listeners"
            )
        for listener in exposed:  # allowed, but never quietly (Tor warns the same way)
            log.warning(
                "listening on a non-loopback address: anyone who can reach it can use this proxy",
                listener=listener,
            )
        private_dir(Path(config.data_dir))
        crawl = config.directory == "crawl" or bool(config.bridges) or config.dht_over_circuits
        if config.directory not in ("guards", "crawl"):
            raise ConfigError(f"--directory is guards or crawl, not {config.directory!r}")
        self.directory: DhtDirectory = (
            DhtDirectory(Path(config.data_dir), list(config.bootstrap), refresh=config.dht_refresh)
            if crawl
            else DirFetchDirectory(
                Path(config.data_dir), list(config.bootstrap), epoch_len=config.dir_epoch, rng=rng
            )
        )
        self.policy = PathPolicy(Path(config.data_dir), rng)
        self.circuits = CircuitMgr(self.directory.relays, rng, hops=config.hops, policy=self.policy)
        if isinstance(self.directory, DirFetchDirectory):
            # Directory circuits (one hop, to directory guards) live in a manager of their own:
            # never offered to streams, never in the circuit list, their builds not in the build-time
            # statistics of real circuits, and their links apart.
            self.directory.circuits = CircuitMgr(
                self.directory.relays, rng, hops=1, policy=PathPolicy(None, rng)
            )
            self.directory.entry_guards = self._entry_guards
        self.circuits.directory_ready = self.directory.crawled
        if config.bridges:
            self.circuits.first_hops = BridgeSet(list(config.bridges), rng)
        if config.bridges or config.dht_over_circuits:
            self.directory.channel = CircuitDhtChannel(self.circuits)
        self.socks = SocksListener(self.circuits, config.socks_host, config.socks_port)
        # Onion services (docs/protocol.md §16.13): the services this node runs, the clients' keys
        # for restricted discovery (service id -> x25519 private key), and the SOCKS side's connector.
        self.onion_services: dict[str, OnionService] = {}
        self.client_auth: dict[str, bytes] = client_auth_store.load(Path(config.data_dir))  # Permanent ones
        self.onion_service_listeners: list[Callable[[OnionService], None]] = []  # told of each new service
        self.hs = HsCircuits(self.circuits, Path(config.data_dir), rng)
        self._hs_dht: DhtNode | None = None
        self.onion = OnionConnector(self.hs, self.hs_dht, self.client_auth, rng)
        self.socks.requests.onion = self.onion
        self.control: ControlServer | None = None
        self.metrics_server: MetricsServer | None = None
        self.torcontrol: TorControlServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.time()
        # What the pre-build loop did, for tests and the curious: wake-ups and builds it started.
        self.prebuild_wakeups = 0
        self.prebuild_attempts = 0
        self.prebuild_failures = 0  # builds the network failed (no path, timeouts, unreachable relays)
        self.prebuild_errors = 0  # builds that raised anything else: a bug, logged (rate-limited)
        self._build_backoff = Backoff(base=PREBUILD_BACKOFF_BASE, cap=PREBUILD_BACKOFF_CAP, rng=rng)
        self.no_path: str | None = None  # why the known relays can form no path, once said

    @property
    def relays(self) -> list[RelayDescriptor]:
        return self.directory.relays()

    def _entry_guards(self, relays: list[RelayDescriptor]) -> set[str]:
        """Our entry guards (sampled now if need be): directory guards are chosen apart from them."""
        if not self.policy.use_guards:
            return set()
        return set(self.policy.primary_guards(relays)) | {g.fingerprint for g in self.policy.guards.sampled}

    def hs_dht(self) -> DhtNode:
        """The DHT node onion descriptors are published and fetched with: its RPCs go through
        circuits (the directory's channel when it has one), never from this node's address."""
        if self._hs_dht is None:
            channel = self.directory.channel or CircuitDhtChannel(self.circuits)
            self._hs_dht = circuit_dht_node(channel)
        return self._hs_dht

    async def add_onion_service(self, spec: OnionServiceSpec) -> OnionService:
        """Start a service (intro circuits, then publication); `wait_published` says when it is reachable.
        ConfigError for a spec that cannot run; a key already running here is refused the same way."""
        check_spec(spec)
        service = OnionService(spec, self.hs, self.hs_dht(), self.rng)
        if service.service_id in self.onion_services:
            raise ConfigError(f"onion service {service.service_id} is already running")
        self.onion_services[service.service_id] = service
        for listener in list(self.onion_service_listeners):
            listener(service)  # before start: a listener sees the first upload too
        service.start()
        log.info("onion service started", ports=len(spec.ports))
        return service

    async def remove_onion_service(self, service_id: str) -> None:
        """Stop a service: its circuits close and its descriptor expires (NotFound if not running)."""
        service = self.onion_services.pop(service_id.removesuffix(".onion").lower(), None)
        if service is None:
            raise NotFound(f"no onion service {service_id}")
        await service.stop()

    async def start(self) -> None:
        """Open every listener; one that cannot be opened raises ListenError (one line, no traceback)."""
        await self.directory.start()
        await self.socks.start()
        cookie = load_or_create_cookie(Path(self.config.data_dir), self.rng.random_bytes(32))
        self.control = ControlServer(self, self.config.control_host, self.config.control_port, cookie)
        self.control.extra_routes += status_page.routes(self.control) + onion_api.routes(self.control)
        try:
            await self.control.start()
        except OSError as exc:
            self.control = None
            raise ListenError("control", self.config.control_host, self.config.control_port, exc) from None
        if self.config.torcontrol is not None:  # Tor's control port: runtime/client/torcontrol_target.py
            self.torcontrol = await start_tor_control(self, cookie)
        if self.config.metrics is not None:
            self.metrics_server = MetricsServer(*self.config.metrics, lambda: client_metrics(self))
            try:
                await self.metrics_server.start()
            except OSError as exc:
                self.metrics_server = None
                raise ListenError("metrics", *self.config.metrics, exc) from None
        self._tasks.append(asyncio.create_task(self._prebuild(), name="circuit-prebuild"))
        if self.client_auth:  # configured for onion services: their pre-built circuits from the start
            self.hs.pool.want(client=True)
        log.info(
            "proxy ready", socks_port=self.socks.port, control_port=self.control.port, relays=len(self.relays)
        )

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once a circuit is open (the proxy can carry traffic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(h.built_at for h in self.circuits.circuits.values()):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("no circuit could be built")

    def _ports_in_use(self, now: float) -> list[int]:
        recent = sorted(self.circuits.ports_seen.items(), key=lambda kv: -kv[1])
        return [port for port, seen in recent if now - seen < PORT_MEMORY][:POOL_PORTS] or [80, 443]

    def _ready_for(self, port: int, now: float) -> bool:
        return any(
            h.usable_for(port, NO_ISOLATION, now) and not h.circ.streams
            for h in self.circuits.circuits.values()
        )

    async def _prebuild(self) -> None:
        """Keep a clean circuit ready for each port in use (and a few in all), so that a new stream
        does not wait for a build; retire expired and idle circuits.

        Every pass sleeps: one second when there is nothing to do (or nothing to build with), a
        backoff with jitter after a build failed.  Cancellation (stop, SIGTERM) always ends it.
        """
        while True:
            self.prebuild_wakeups += 1
            now = time.monotonic()
            self.circuits.maintain(now)
            self.policy.save()  # what changed since the last save, at a bounded rate
            failed = False
            relays = self.relays
            if self.config.prebuilt_circuits and relays:
                for port in self._ports_wanted(now):
                    self.prebuild_attempts += 1
                    try:
                        await self.circuits.build(port=port, wait_directory=False)
                    except (OnionmeshError, OSError, TimeoutError) as exc:  # the network's doing
                        failed = True
                        self.prebuild_failures += 1
                        self._explain_failure(relays, exc)
                        break
                    except Exception as exc:  # a bug: it must not stop the loop, nor pass unseen
                        failed = True
                        self.prebuild_errors += 1
                        bug_log.error("pre-build failed: internal error", error=type(exc).__name__)
                        break
                    self._build_backoff.reset()
                    self.no_path = None
            if failed:
                await asyncio.sleep(self._build_backoff.next_delay())
            else:
                await self._directory_changed()

    def _ports_wanted(self, now: float) -> list[int]:
        clean = sum(
            1
            for h in self.circuits.circuits.values()
            if h.usable_for(None, NO_ISOLATION, now) and not h.circ.streams
        )
        missing = [p for p in self._ports_in_use(now) if not self._ready_for(p, now)]
        if clean < self.config.prebuilt_circuits and not missing:
            missing = self._ports_in_use(now)[:1]
        return missing

    def _explain_failure(self, relays: list[RelayDescriptor], exc: Exception) -> None:
        """Say once (until it changes) when the known relays can form no path at all."""
        reason = no_path_reason(relays, self.config.hops)
        if reason is not None and reason != self.no_path:
            log.warning(reason)
        self.no_path = reason
        if reason is None:
            log.debug("pre-build failed", error=type(exc).__name__)

    async def _directory_changed(self) -> None:
        """Sleep until the first crawl lands, or IDLE_WAKEUP; never return at once (an Event that
        stays set after the first crawl made this loop spin at 100 % of a core)."""
        if self.directory.crawled.is_set() or self.relays:
            await asyncio.sleep(IDLE_WAKEUP)
            return
        try:
            async with asyncio.timeout(IDLE_WAKEUP):  # unlike wait_for (3.11), never loses a cancel
                await self.directory.crawled.wait()
        except TimeoutError:
            pass

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for service in list(self.onion_services.values()):
            await service.stop()
        self.onion.close()
        self.hs.close()
        await self.socks.stop()
        await self.directory.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.control is not None:
            await self.control.stop()
        if self.torcontrol is not None:
            await self.torcontrol.stop()
        if self._tasks:  # bounded: a task that swallowed its cancel must not hang the shutdown
            await asyncio.wait(self._tasks, timeout=2.0)
        self.circuits.close_all()
        self.policy.save(force=True)

    def status(self) -> dict[str, Any]:
        return {
            "socks": f"{self.config.socks_host}:{self.socks.port}",
            "relays_known": len(self.relays),
            "directory_last_crawl": self.directory.last_crawl,
            "circuits_open": sum(1 for h in self.circuits.circuits.values() if h.built_at),
            "uptime_s": round(time.time() - self.started_at, 1),
            "no_path": self.no_path,  # why the known relays can form no path, if they cannot
            "prebuild_wakeups": self.prebuild_wakeups,
            "prebuild_attempts": self.prebuild_attempts,
            "prebuild_failures": self.prebuild_failures,
            "prebuild_errors": self.prebuild_errors,
        }
