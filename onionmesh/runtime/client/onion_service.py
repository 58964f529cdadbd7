"""An onion service run by a client node: introduction points, publication, rendezvous, streams.

    service = await node.add_onion_service(OnionServiceSpec(key, (PortMap(80, "127.0.0.1", 8080),)))
    await service.wait_published(60)        # service.address is "<56 base32>.onion"

What it keeps up (docs/protocol.md §16.13):

* INTRO_POINTS introduction points, each a circuit on a vanguards-lite path (runtime.client.
  hs_circuits) to a relay, with a fresh auth key and encryption key, registered by ESTABLISH_INTRO
  (bound to the circuit, with Tor's DoS parameters).  An intro circuit that closes is replaced by
  a new one (new relay, new keys) and the descriptor is re-published at once.
* Its descriptor (directory.hs_descriptor.build_record) on the schedule of directory.hs_publish,
  stored by `DhtNode.publish_hs` through circuits (a DHT node whose RPCs go through the node's
  circuits: never from its own address).
* INTRODUCE2: opened with the subcredential of a published period (crypto.hs_intro), a replay
  of the client's X at that intro point is dropped, then ranked in `hs_pow.IntroQueue` (effort 0
  without PoW; an invalid PoW is dropped before any X25519) and served by at most
  MAX_RENDEZVOUS_IN_FLIGHT workers: a circuit to the rendezvous point, RENDEZVOUS1 (hs-ntor's
  answer), then the end-to-end hop.  BEGINs on that circuit are connected to the port map's
  targets (IP literals, usually loopback; no DNS, no exit policy); an unmapped port gets END.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from kademlia.node import Node
from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import hs_address, hs_blinding, hs_ntor, hs_pow
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.crypto.hs_intro import build_establish_intro, open_introduce2
from onionmesh.crypto.keys import IdentityKey
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.hs_descriptor import InnerDescriptor, IntroPoint, PowParams, build_record
from onionmesh.directory.hs_publish import PublishSchedule, periods_to_publish
from onionmesh.directory.vanguards import HsPurpose
from onionmesh.errors import ConfigError, HsCircuitClosed, OnionmeshError, RemoteProtocolError
from onionmesh.proto.events import BeginRequested
from onionmesh.proto.hs_pow_effort import UPDATE_PERIOD, EffortController
from onionmesh.rng import Rng
from onionmesh.runtime.backoff import Backoff
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.hs_circuits import HsCircuits, identity_of
from onionmesh.runtime.client.hs_fetch import seeds_near
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.runtime.transport.stream_pump import StreamPump
from onionmesh.wire.hs_cells import (
    DosParams,
    Extensions,
    ExtType,
    Introduce1,
    PowExtension,
    Rendezvous1,
    first_extension,
)
from onionmesh.wire.relay_msg import EndReason, RelayCommand, RelayMessage

log = limited(get_logger("onionmesh.onion_service"))

INTRO_POINTS = 3
INTRO_DOS = DosParams(25, 200)  # INTRODUCE2 per second and burst at each intro point (Tor's defaults)
INTRO_TIMEOUT = 30.0  # ESTABLISH_INTRO -> INTRO_ESTABLISHED
REPLAY_CACHE_MAX = 16384  # client X values remembered per intro point
INTRO_QUEUE_CAP = 256
MAX_RENDEZVOUS_IN_FLIGHT = 8
CONNECT_TIMEOUT = 10.0
POW_SEED_LIFETIME = 3 * 3600
MAX_WAKEUP = 5.0


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


class _IntroSlot:
    """One introduction point: its relay, its keys, its circuit."""

    def __init__(self, relay: RelayDescriptor, rng: Rng) -> None:
        self.relay = relay
        self.auth = IdentityKey.generate(rng)
        self.enc_secret = rng.random_bytes(32)
        self.enc_pub = crypto_scalarmult_base(self.enc_secret)
        self.handle: CircuitHandle | None = None
        self.established = asyncio.Event()
        self.seen: OrderedDict[bytes, None] = OrderedDict()  # replay cache of X

    def point(self) -> IntroPoint:
        return IntroPoint(
            self.relay.identity_pk, self.relay.onion_pk, self.relay.link_addresses[:2],
            self.auth.public, self.enc_pub,
        )  # fmt: skip

    def replayed(self, x: bytes) -> bool:
        if x in self.seen:
            return True
        self.seen[x] = None
        while len(self.seen) > REPLAY_CACHE_MAX:
            self.seen.popitem(last=False)
        return False


def _target_host(host: str) -> str:
    """Targets are IP literals (or "localhost"): a service never asks a resolver."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfigError(f"onion service target {host!r} must be an IP address") from None


class OnionService:
    def __init__(self, spec: OnionServiceSpec, hs: HsCircuits, dht: DhtNode, rng: Rng) -> None:
        if not spec.ports:
            raise ConfigError("an onion service needs at least one port")
        self.spec, self.hs, self.dht, self.rng = spec, hs, dht, rng
        self.ports = {p.virt_port: (_target_host(p.target_host), p.target_port) for p in spec.ports}
        self.service_id = hs_address.service_id(spec.key.public)
        self.address = self.service_id + ".onion"
        self.state = "starting"
        self.listeners: list[Callable[[str, dict[str, object]], None]] = []
        self.intros: list[_IntroSlot] = []
        self.rend_circuits: set[CircuitHandle] = set()
        self.schedule = PublishSchedule(rng)
        # the suggested effort (proto.hs_pow_effort), told of every drop and every request served
        self.pow = EffortController(time.monotonic(), INTRO_QUEUE_CAP, spec.pow_update_period)
        self.queue: hs_pow.IntroQueue[tuple[_IntroSlot, Introduce1]] = hs_pow.IntroQueue(
            INTRO_QUEUE_CAP, self.pow.trimmed
        )
        self.pow_seed, self.pow_prev_seed = rng.random_bytes(32), b""
        self.pow_seed_expires = int(time.time()) + POW_SEED_LIFETIME
        self.stats: dict[str, int] = {}
        self._published = asyncio.Event()
        self._wake = asyncio.Event()
        self._queued = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._backoff = Backoff(base=1.0, cap=30.0, rng=rng)
        self._failed_relays: dict[str, float] = {}

    # --- life -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.hs.mgr.listeners.append(self._circuit_event)
        self._tasks.append(asyncio.create_task(self._run(), name="onion-service"))
        for _ in range(MAX_RENDEZVOUS_IN_FLIGHT):
            self._tasks.append(asyncio.create_task(self._serve_introductions(), name="onion-rendezvous"))

    async def stop(self) -> None:
        self.state = "stopped"
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        with contextlib.suppress(ValueError):
            self.hs.mgr.listeners.remove(self._circuit_event)
        for handle in [s.handle for s in self.intros if s.handle is not None] + list(self.rend_circuits):
            self.hs.mgr.close_circuit(handle.number)
        self.intros.clear()
        self.rend_circuits.clear()

    async def wait_published(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._published.wait()
        return self._published.is_set()

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
                    self.schedule.intro_points_changed()
                self._wake.set()
                break

    async def _run(self) -> None:
        while True:
            changed = False
            try:
                changed = await self._keep_intro_points()
                if changed:
                    self.schedule.intro_points_changed()
                if self.spec.pow_enabled and self._pow_update():
                    self.schedule.intro_points_changed()  # every period uploaded again
                if any(s.established.is_set() for s in self.intros):
                    await self._publish_due()
            except (OnionmeshError, OSError, TimeoutError) as exc:
                log.info("onion service maintenance failed", error=type(exc).__name__)
            except Exception as exc:  # a bug must not end the service silently
                log.error("onion service maintenance: internal error", error=type(exc).__name__)
            now = time.time()
            delay = min(MAX_WAKEUP, max(0.05, self.schedule.next_wakeup(now) - now))
            if self.spec.pow_enabled:
                delay = min(delay, max(0.05, self.pow.next_update - time.monotonic()))
            if len([s for s in self.intros if s.established.is_set()]) < INTRO_POINTS:
                delay = min(delay, self._backoff.next_delay())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _pow_update(self) -> bool:
        """The effort controller's period: True when the descriptor must be uploaded again (the
        suggested effort moved by more than 15 %, as Tor)."""
        if not self.pow.update(time.monotonic(), len(self.queue), self.queue.head_effort()):
            return False
        self.count("pow_effort_changed")
        log.info("onion service suggested PoW effort changed", effort=self.pow.suggested)
        return self.pow.republish_due()

    # --- introduction points --------------------------------------------------------------------
    async def _keep_intro_points(self) -> bool:
        """Build intro circuits until INTRO_POINTS are established; True if the set changed."""
        missing = INTRO_POINTS - len(self.intros)
        if missing <= 0:
            return False
        now = time.monotonic()
        self._failed_relays = {fp: t for fp, t in self._failed_relays.items() if now - t < 60.0}
        avoid = {s.relay.fingerprint for s in self.intros} | set(self._failed_relays)
        slots = []
        for _ in range(missing):
            try:
                relay = self.hs.choose_last_hop(avoid)
            except OnionmeshError:
                relay = self.hs.choose_last_hop({s.relay.fingerprint for s in self.intros})
            avoid.add(relay.fingerprint)
            slots.append(_IntroSlot(relay, self.rng))
        results = await asyncio.gather(*(self._establish(s) for s in slots), return_exceptions=True)
        ok = [s for s, r in zip(slots, results, strict=True) if r is True]
        if ok:
            self._backoff.reset()
        return bool(ok)

    async def _establish(self, slot: _IntroSlot) -> bool:
        try:
            handle = await self.hs.build(
                HsPurpose.SERVICE_INTRO, slot.relay, self.service_id, lambda m: self._intro_message(slot, m)
            )
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

    def _intro_message(self, slot: _IntroSlot, msg: RelayMessage) -> None:
        """Messages on an intro circuit (from the CircuitMgr's dispatch: must never raise)."""
        if msg.command is RelayCommand.INTRO_ESTABLISHED:
            slot.established.set()
        elif msg.command is RelayCommand.INTRODUCE2 and slot.established.is_set():
            self._on_introduce2(slot, msg.body)
        else:
            self.count("intro_unexpected")

    def _on_introduce2(self, slot: _IntroSlot, body: bytes) -> None:
        self.count("introduce2")
        try:
            cell = Introduce1.decode(body)
        except RemoteProtocolError:
            self.count("introduce2_malformed")
            return
        if cell.auth_key != slot.auth.public:
            self.count("introduce2_malformed")
            return
        effort = 0
        if self.spec.pow_enabled:
            effort = self._pow_effort(cell)
            if effort < 0:
                self.count("introduce2_bad_pow")
                return
        if not self.queue.push((slot, cell), effort):
            self.count("introduce2_dropped")
        self._queued.set()

    def _pow_effort(self, cell: Introduce1) -> int:
        """The PoW's effort (0 without one), or -1 for an invalid one: checked before any X25519."""
        raw = first_extension(cell.extensions, ExtType.POW)
        if raw is None:
            return 0
        try:
            ext = PowExtension.decode(raw)
        except RemoteProtocolError:
            return -1
        seeds = [s for s in (self.pow_seed, self.pow_prev_seed) if s and s[:4] == ext.seed_head]
        for seed in seeds:
            for period in periods_to_publish(time.time()):
                blinded = hs_blinding.blind_public(self.spec.key.public, period)
                if ext.version == hs_pow.VERSION and hs_pow.is_valid(
                    seed, ext.nonce, ext.effort, blinded, cell.client_pk
                ):
                    return ext.effort
        return -1

    # --- rendezvous -----------------------------------------------------------------------------
    async def _serve_introductions(self) -> None:
        while True:
            while not len(self.queue):
                self._queued.clear()
                await self._queued.wait()
            (slot, cell), effort = self.queue.pop()
            self.pow.handled(effort, len(self.queue))
            try:
                await self._rendezvous(slot, cell)
            except (OnionmeshError, OSError, TimeoutError) as exc:
                self.count("rend_failed")
                log.info("rendezvous failed", error=type(exc).__name__)
            except Exception as exc:
                self.count("rend_failed")
                log.error("rendezvous: internal error", error=type(exc).__name__)

    async def _rendezvous(self, slot: _IntroSlot, cell: Introduce1) -> None:
        pk = self.spec.key.public
        opened = None
        for period in periods_to_publish(time.time()):
            subcred = hs_blinding.subcredential(pk, hs_blinding.blind_public(pk, period))
            try:
                opened = open_introduce2(cell, slot.enc_secret, slot.enc_pub, subcred)
                break
            except RemoteProtocolError:
                continue
        if opened is None:
            self.count("introduce2_undecryptable")
            return
        if slot.replayed(cell.client_pk):
            self.count("introduce2_replayed")
            return
        rp_id = identity_of(opened.plaintext.link_specs)
        rp = next((r for r in self.hs.relays() if r.identity_pk == rp_id), None)
        if rp is None:
            self.count("rend_unknown_point")
            return
        info, seed = hs_ntor.service_respond(
            slot.auth.public, slot.enc_secret, slot.enc_pub, cell.client_pk, self.rng
        )
        handle = await self.hs.build(HsPurpose.SERVICE_REND, rp, self.service_id)
        self.hs.forget(handle)
        handle.hs_state = "HSSR_CONNECTING"
        handle.circ.send_message(
            RelayCommand.RENDEZVOUS1, Rendezvous1(opened.plaintext.rendezvous_cookie, info).encode()
        )
        handle.circ.add_virtual_hop(hs_ntor.swap_directions(hs_ntor.e2e_keys(seed)), service_side=True)
        handle.on_begin = lambda event: self._begin(handle, event)
        handle.hs_state = "HSSR_JOINED"
        self.rend_circuits.add(handle)
        self.count("rend_joined")
        self._emit("rend_joined", {"circuit": handle.number, "rendezvous": rp.fingerprint})

    # --- streams --------------------------------------------------------------------------------
    def _begin(self, handle: CircuitHandle, event: BeginRequested) -> None:
        target = self.ports.get(event.begin.port)
        sid = event.stream_id
        if target is None:
            # END DONE as Tor's (not a reason that says "closed port").  The circuit stays open
            # (Tor's HiddenServiceAllowUnknownPorts 1 on this point): browsers try 443 (HTTPS
            # upgrades) alongside 80 on the same circuit, and closing it would kill the page's stream.
            self.count("stream_unmapped_port")
            handle.circ.end_stream(sid, EndReason.DONE)
            return
        if self.spec.max_streams and len(handle.circ.streams) > self.spec.max_streams:
            self.count("stream_over_max")
            handle.circ.end_stream(sid, EndReason.RESOURCELIMIT)
            return
        task = asyncio.create_task(self._connect(handle, sid, target), name="onion-stream")
        self._tasks.append(task)
        task.add_done_callback(lambda t: t in self._tasks and self._tasks.remove(t))

    async def _connect(self, handle: CircuitHandle, sid: int, target: tuple[str, int]) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(*target)
        except (OSError, TimeoutError):
            self.count("stream_connect_failed")
            if handle.closed_reason is None:
                handle.circ.end_stream(sid, EndReason.CONNECTREFUSED)
            return
        if handle.closed_reason is not None or sid not in handle.circ.streams:
            writer.close()
            return
        handle.circ.connected(sid)
        self.count("streams")
        StreamPump(handle.circ, handle.pumps, sid, reader, writer).start()

    # --- publication ----------------------------------------------------------------------------
    def _inner(self) -> InnerDescriptor:
        points = tuple(s.point() for s in self.intros if s.established.is_set())
        pow_params = None
        if self.spec.pow_enabled:
            if time.time() >= self.pow_seed_expires:
                self.pow_prev_seed, self.pow_seed = self.pow_seed, self.rng.random_bytes(32)
                self.pow_seed_expires = int(time.time()) + POW_SEED_LIFETIME
            pow_params = PowParams(self.pow_seed, self.pow.publish(), self.pow_seed_expires)
        return InnerDescriptor(points[:8], pow_params)

    def _seeds(self, key: bytes) -> list[Node]:
        return seeds_near(key, self.dht, self.hs.relays())

    async def _publish_due(self) -> None:
        for upload in self.schedule.due(time.time()):
            raw = build_record(
                self.spec.key, self._inner(), period=upload.period, revision=upload.revision,
                valid_after=upload.valid_after, lifetime_min=upload.lifetime_min, rng=self.rng,
                client_keys=self.spec.client_auth,
            )  # fmt: skip
            info: dict[str, object] = {"period": upload.period, "revision": upload.revision}
            self._emit("desc_upload", info)
            try:
                counts = await self.dht.publish_hs(raw, seeds=self._seeds)
            except (OnionmeshError, OSError, TimeoutError):
                counts = []
            accepted = any(counts)
            self.schedule.uploaded(upload, time.time(), accepted)
            if not accepted:
                self.count("desc_failed")
                self._emit("desc_failed", info)
                continue
            self.count("desc_uploaded")
            for replica, stored in enumerate(counts):
                if stored:  # "hsdir": the replica (0-3); DhtNode.publish_hs counts the nodes that stored it
                    self._emit("desc_uploaded", {**info, "hsdir": f"replica{replica}", "nodes": stored})
            if self.state == "starting":
                self.state = "published"
            self._published.set()


def check_spec(spec: OnionServiceSpec) -> None:
    """ConfigError for what add_onion_service cannot run (before anything is built)."""
    for pm in spec.ports:
        if not (0 < pm.virt_port < 65536 and 0 < pm.target_port < 65536):
            raise ConfigError("onion service ports are 1..65535")
        _target_host(pm.target_host)
    if any(len(k) != 32 for k in spec.client_auth):
        raise ConfigError("client authorization keys are 32-byte x25519 public keys")


__all__ = ["HsCircuitClosed", "OnionService", "OnionServiceSpec", "PortMap", "check_spec"]
