"""An onion service's introductions: INTRODUCE2 in, a rendezvous circuit out.

* An IntroSlot is one introduction point: its relay, its fresh auth and encryption keys, its
  circuit, and the replay cache of the clients' X that reached it (the service keeps a second
  one of rendezvous cookies, Tor's `replay_cache_rend_cookie`: proto.replay_cache says why).
* INTRODUCE2 (`Introductions.on_message`): parsed; with PoW on, the PoW is checked before any
  X25519 (invalid: dropped); ranked in `hs_pow.IntroQueue` (effort 0 without PoW; the queue tells
  the effort controller what it drops).
* At most MAX_RENDEZVOUS_IN_FLIGHT workers take the queue's head (telling the controller its
  effort and the backlog): opened with the subcredential of a published period
  (crypto.hs_intro), a replay of the client's X at that intro point or of a rendezvous cookie
  within 5 minutes dropped, a circuit to the
  rendezvous point, RENDEZVOUS1 (hs-ntor's answer), then the end-to-end hop, whose BEGINs go to
  runtime.client.hs_service_streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import hs_address, hs_blinding, hs_ntor, hs_pow
from onionmesh.crypto.hs_intro import open_introduce2
from onionmesh.crypto.keys import IdentityKey
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.hs_descriptor import IntroPoint
from onionmesh.directory.hs_publish import periods_to_publish
from onionmesh.directory.vanguards import HsPurpose
from onionmesh.errors import OnionmeshError, RemoteProtocolError
from onionmesh.proto.replay_cache import ReplayCache
from onionmesh.rng import Rng
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.hs_circuits import HsCircuits, identity_of
from onionmesh.runtime.client.hs_service_config import OnionServiceSpec
from onionmesh.runtime.client.hs_service_publish import INTRO_QUEUE_CAP, ServicePublisher
from onionmesh.runtime.client.hs_service_streams import ServiceStreams
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger
from onionmesh.wire.hs_cells import ExtType, Introduce1, PowExtension, Rendezvous1, first_extension
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage

log = limited(get_logger("onionmesh.onion_service"))

REPLAY_CACHE_MAX = 16384  # client X values remembered per intro point
REND_COOKIE_HORIZON = 300.0  # Tor's REND_REPLAY_TIME_INTERVAL
REND_COOKIE_CACHE_MAX = 65536  # cookies remembered per service (32 B each: ~4 MB at most)
MAX_RENDEZVOUS_IN_FLIGHT = 8


class IntroSlot:
    """One introduction point: its relay, its keys, its circuit."""

    def __init__(self, relay: RelayDescriptor, rng: Rng) -> None:
        self.relay = relay
        self.auth = IdentityKey.generate(rng)
        self.enc_secret = rng.random_bytes(32)
        self.enc_pub = crypto_scalarmult_base(self.enc_secret)
        self.handle: CircuitHandle | None = None
        self.established = asyncio.Event()
        self.seen = ReplayCache(REPLAY_CACHE_MAX)  # the clients' X, for the point's lifetime

    def point(self) -> IntroPoint:
        return IntroPoint(
            self.relay.identity_pk, self.relay.onion_pk, self.relay.link_addresses[:2],
            self.auth.public, self.enc_pub,
        )  # fmt: skip

    def replayed(self, x: bytes) -> bool:
        return self.seen.seen(x, time.monotonic())


class Introductions:
    """INTRODUCE2 intake, the ranked queue and the rendezvous workers of one service."""

    def __init__(
        self,
        spec: OnionServiceSpec,
        hs: HsCircuits,
        rng: Rng,
        publisher: ServicePublisher,
        streams: ServiceStreams,
        count: Callable[[str], None],
        emit: Callable[[str, dict[str, object]], None],
    ) -> None:
        self.spec, self.hs, self.rng, self.count, self.emit = spec, hs, rng, count, emit
        self.publisher, self.streams = publisher, streams
        self.service_id = hs_address.service_id(spec.key.public)
        self.queue: hs_pow.IntroQueue[tuple[IntroSlot, Introduce1]] = hs_pow.IntroQueue(
            INTRO_QUEUE_CAP, publisher.pow.trimmed
        )
        self.rend_circuits: set[CircuitHandle] = set()
        self.cookies = ReplayCache(REND_COOKIE_CACHE_MAX, REND_COOKIE_HORIZON)
        self._queued = asyncio.Event()

    def workers(self) -> list[asyncio.Task[None]]:
        """The rendezvous workers, started (the service cancels them when it stops)."""
        return [
            asyncio.create_task(self._serve(), name="onion-rendezvous")
            for _ in range(MAX_RENDEZVOUS_IN_FLIGHT)
        ]

    def on_message(self, slot: IntroSlot, msg: RelayMessage) -> None:
        """Messages on an intro circuit (from the CircuitMgr's dispatch: must never raise)."""
        if msg.command is RelayCommand.INTRO_ESTABLISHED:
            slot.established.set()
        elif msg.command is RelayCommand.INTRODUCE2 and slot.established.is_set():
            self._on_introduce2(slot, msg.body)
        else:
            self.count("intro_unexpected")

    def _on_introduce2(self, slot: IntroSlot, body: bytes) -> None:
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
        seeds = [s for s in self.publisher.pow_seeds() if s and s[:4] == ext.seed_head]
        for seed in seeds:
            for period in periods_to_publish(time.time()):
                blinded = hs_blinding.blind_public(self.spec.key.public, period)
                if ext.version == hs_pow.VERSION and hs_pow.is_valid(
                    seed, ext.nonce, ext.effort, blinded, cell.client_pk
                ):
                    return ext.effort
        return -1

    async def _serve(self) -> None:
        while True:
            while not len(self.queue):
                self._queued.clear()
                await self._queued.wait()
            (slot, cell), effort = self.queue.pop()
            self.publisher.pow.handled(effort, len(self.queue))
            try:
                await self._rendezvous(slot, cell)
            except (OnionmeshError, OSError, TimeoutError) as exc:
                self.count("rend_failed")
                log.info("rendezvous failed", error=type(exc).__name__)
            except Exception as exc:
                self.count("rend_failed")
                log.error("rendezvous: internal error", error=type(exc).__name__)

    async def _rendezvous(self, slot: IntroSlot, cell: Introduce1) -> None:
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
        if self.cookies.seen(opened.plaintext.rendezvous_cookie, time.monotonic()):
            self.count("introduce2_cookie_replayed")
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
        handle.on_begin = lambda event: self.streams.begin(handle, event)
        handle.hs_state = "HSSR_JOINED"
        self.rend_circuits.add(handle)
        self.count("rend_joined")
        self.emit("rend_joined", {"circuit": handle.number, "rendezvous": rp.fingerprint})
