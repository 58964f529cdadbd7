"""An onion service run by a client node: its introduction points, and the parts that do the rest.

    service = await node.add_onion_service(OnionServiceSpec(key, (PortMap(80, "127.0.0.1", 8080),)))
    await service.wait_published(60)        # service.address is "<56 base32>.onion"

What it keeps up (docs/protocol.md §16.13): INTRO_POINTS introduction points, each a circuit on a
vanguards-lite path (runtime.client.hs_circuits) to a relay, with a fresh auth key and encryption
key, registered by ESTABLISH_INTRO (bound to the circuit, with Tor's DoS parameters).  An intro
circuit that closes is replaced by a new one (new relay, new keys; the failed relay avoided for
60 s) and the descriptor is re-published at once.  The rest has one module each:

* publication (descriptor contents, PoW seed and suggested effort, uploads):
  runtime.client.hs_service_publish;
* introductions (INTRODUCE2, the ranked queue, replays, the rendezvous workers):
  runtime.client.hs_service_intro;
* streams on the joined circuits (the port map): runtime.client.hs_service_streams;
* the configuration (spec, port map, checks): runtime.client.hs_service_config.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from onionmesh.crypto import hs_address
from onionmesh.crypto.hs_intro import build_establish_intro
from onionmesh.directory.vanguards import HsPurpose
from onionmesh.errors import ConfigError, HsCircuitClosed, OnionmeshError
from onionmesh.rng import Rng
from onionmesh.runtime.backoff import Backoff
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.hs_circuits import HsCircuits
from onionmesh.runtime.client.hs_service_config import OnionServiceSpec, PortMap, check_spec
from onionmesh.runtime.client.hs_service_intro import Introductions, IntroSlot
from onionmesh.runtime.client.hs_service_publish import ServicePublisher
from onionmesh.runtime.client.hs_service_streams import ServiceStreams
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.wire.hs_cells import DosParams, Extensions, ExtType
from onionmesh.wire.relay_msg import RelayCommand

log = limited(get_logger("onionmesh.onion_service"))

INTRO_POINTS = 3
INTRO_DOS = DosParams(25, 200)  # INTRODUCE2 per second and burst at each intro point (Tor's defaults)
INTRO_TIMEOUT = 30.0  # ESTABLISH_INTRO -> INTRO_ESTABLISHED
FAILED_RELAY_AVOID = 60.0  # a relay whose intro circuit failed is not picked again for this long
MAX_WAKEUP = 5.0


class OnionService:
    def __init__(self, spec: OnionServiceSpec, hs: HsCircuits, dht: DhtNode, rng: Rng) -> None:
        if not spec.ports:
            raise ConfigError("an onion service needs at least one port")
        self.spec, self.hs, self.dht, self.rng = spec, hs, dht, rng
        self.service_id = hs_address.service_id(spec.key.public)
        self.address = self.service_id + ".onion"
        self.state = "starting"
        self.listeners: list[Callable[[str, dict[str, object]], None]] = []
        self.stats: dict[str, int] = {}
        self.intros: list[IntroSlot] = []
        self.publisher = ServicePublisher(spec, hs, dht, rng, self.count, self._emit)
        self.pow = self.publisher.pow  # the suggested PoW effort (proto.hs_pow_effort)
        self.streams = ServiceStreams(spec, self.count)
        self.introductions = Introductions(
            spec, hs, rng, self.publisher, self.streams, self.count, self._emit
        )  # fmt: skip
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._backoff = Backoff(base=1.0, cap=30.0, rng=rng)
        self._failed_relays: dict[str, float] = {}
        self._holds_pool = False  # counted in the pool's service demand (start) until stop

    @property
    def rend_circuits(self) -> set[CircuitHandle]:
        """The joined rendezvous circuits (clients connected now)."""
        return self.introductions.rend_circuits

    # --- life -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.hs.mgr.listeners.append(self._circuit_event)
        self.hs.pool.want(service=True)  # rendezvous circuits cannibalized from pre-built ones
        self._holds_pool = True
        self._tasks.append(asyncio.create_task(self._run(), name="onion-service"))
        self._tasks.extend(self.introductions.workers())

    async def stop(self) -> None:
        if self._holds_pool:
            self._holds_pool = False
            self.hs.pool.release_service()
        self.state = "stopped"
        tasks = self._tasks + self.streams.cancel()
        for task in self._tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        with contextlib.suppress(ValueError):
            self.hs.mgr.listeners.remove(self._circuit_event)
        for handle in [s.handle for s in self.intros if s.handle is not None] + list(self.rend_circuits):
            self.hs.mgr.close_circuit(handle.number)
        self.intros.clear()
        self.rend_circuits.clear()

    async def wait_published(self, timeout: float) -> bool:
        return await self.publisher.wait_published(timeout)

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _emit(self, what: str, info: dict[str, object]) -> None:
        for listener in list(self.listeners):
            try:
                listener(what, info)
            except Exception as exc:  # a listener's bug must not stop the service
                log.warning("onion service listener failed", error=type(exc).__name__)

    def _circuit_event(self, what: str, handle: CircuitHandle) -> None:
        if what != "closed":
            return
        self.rend_circuits.discard(handle)
        for slot in self.intros:
            if slot.handle is handle:
                self.intros.remove(slot)
                self.count("intro_lost")
                self._failed_relays[slot.relay.fingerprint] = time.monotonic()
                if slot.established.is_set():
                    self.publisher.schedule.intro_points_changed()
                self._wake.set()
                break

    async def _run(self) -> None:
        while True:
            try:
                if await self._keep_intro_points():
                    self.publisher.schedule.intro_points_changed()
                if self.spec.pow_enabled:
                    queue = self.introductions.queue
                    self.publisher.pow_update(len(queue), queue.head_effort())
                established = [s.point() for s in self.intros if s.established.is_set()]
                if established and await self.publisher.publish_due(established) and self.state == "starting":
                    self.state = "published"
            except (OnionmeshError, OSError, TimeoutError) as exc:
                log.info("onion service maintenance failed", error=type(exc).__name__)
            except Exception as exc:  # a bug must not end the service silently
                log.error("onion service maintenance: internal error", error=type(exc).__name__)
            now = time.time()
            delay = min(MAX_WAKEUP, max(0.05, self.publisher.next_wakeup(now) - now))
            if len([s for s in self.intros if s.established.is_set()]) < INTRO_POINTS:
                delay = min(delay, self._backoff.next_delay())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    # --- introduction points --------------------------------------------------------------------
    async def _keep_intro_points(self) -> bool:
        """Build intro circuits until INTRO_POINTS are established; True if the set changed."""
        missing = INTRO_POINTS - len(self.intros)
        if missing <= 0:
            return False
        now = time.monotonic()
        self._failed_relays = {
            fp: t for fp, t in self._failed_relays.items() if now - t < FAILED_RELAY_AVOID
        }  # fmt: skip
        avoid = {s.relay.fingerprint for s in self.intros} | set(self._failed_relays)
        slots = []
        for _ in range(missing):
            try:
                relay = self.hs.choose_last_hop(avoid)
            except OnionmeshError:
                relay = self.hs.choose_last_hop({s.relay.fingerprint for s in self.intros})
            avoid.add(relay.fingerprint)
            slots.append(IntroSlot(relay, self.rng))
        results = await asyncio.gather(*(self._establish(s) for s in slots), return_exceptions=True)
        ok = [s for s, r in zip(slots, results, strict=True) if r is True]
        if ok:
            self._backoff.reset()
        return bool(ok)

    async def _establish(self, slot: IntroSlot) -> bool:
        try:
            handle = await self.hs.build(
                HsPurpose.SERVICE_INTRO, slot.relay, self.service_id,
                lambda m: self.introductions.on_message(slot, m),
            )  # fmt: skip
        except (OnionmeshError, OSError, TimeoutError):
            self._failed_relays[slot.relay.fingerprint] = time.monotonic()
            return False
        slot.handle = handle
        handle.hs_state = "HSSI_CONNECTING"
        self.intros.append(slot)
        exts: Extensions = ((ExtType.DOS_PARAMS, INTRO_DOS.encode()),)
        cell = build_establish_intro(slot.auth, exts, handle.circ.hops[-1].binding_key)
        try:
            handle.circ.send_message(RelayCommand.ESTABLISH_INTRO, cell.encode())
            async with asyncio.timeout(INTRO_TIMEOUT):
                await slot.established.wait()
        except (OnionmeshError, TimeoutError):
            if slot in self.intros:
                self.intros.remove(slot)
            self.hs.mgr.close_circuit(handle.number)
            return False
        if handle.closed_reason is not None or slot not in self.intros:
            return False
        handle.hs_state = "HSSI_ESTABLISHED"
        self._emit("intro_established", {"intro": slot.relay.fingerprint, "circuit": handle.number})
        return True


__all__ = ["HsCircuitClosed", "OnionService", "OnionServiceSpec", "PortMap", "check_spec"]
