"""Reaching an onion service from the SOCKS port: descriptor, rendezvous, introduction, stream.

    handle = await connector.circuit_for("xyz….onion", isolation)      # or OnionConnectFailed(code)
    sid = await mgr.streams.open_stream(handle, "xyz….onion", 80, timeout)

1. The name is parsed locally (a malformed one: 0xF6; no resolver ever sees it).  A rendezvous
   circuit already joined to this service for this isolation key is reused.
2. The descriptor is fetched through circuits (runtime.client.hs_fetch, with the node's client
   authorization key for the service): 0xF0 / 0xF1 / 0xF4 / 0xF5 as it says.
3. As Tor does, the rendezvous circuit (vanguards path guard-L2-RP, then ESTABLISH_RENDEZVOUS
   with a random 20-byte cookie) is launched at once, in parallel with the descriptor fetch; the
   introduction circuit (guard-L2-M-intro, and the PoW when the descriptor asks for one) is built
   while the rendezvous circuit is still on its way.  INTRODUCE1 (hs-ntor sealed) goes out once
   both are ready; intro point after intro point (shuffled) until one acknowledges.  Then
   RENDEZVOUS2 finishes hs-ntor and the end-to-end hop is added.  A first connection thus costs
   max(fetch, rendezvous circuit) + introduction + rendezvous, not their sum.
4. Failures: every intro point refused or failed 0xF2 (0xF7 if the last one timed out), no
   RENDEZVOUS2 or a bad one 0xF3; a cached descriptor whose intro points all fail is fetched
   again once, the newest revision of every replica (the next SOCKS request after a failed
   first-answer descriptor therefore asks every replica).  The
   whole attempt is bounded by CONNECT_DEADLINE.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from onionmesh.crypto import hs_address, hs_blinding, hs_ntor, hs_pow
from onionmesh.crypto.hs_intro import seal_introduce1
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.hs_descriptor import InnerDescriptor, IntroPoint
from onionmesh.directory.vanguards import HsPurpose
from onionmesh.errors import BadOnionAddress, CryptoError, OnionConnectFailed, OnionmeshError
from onionmesh.rng import Rng
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.hs_circuits import HsCircuits, link_specs
from onionmesh.runtime.client.hs_fetch import FetchOutcome, fetch_onion_descriptor
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.wire.hs_cells import (
    EstablishRendezvous,
    Extensions,
    ExtType,
    IntroduceAck,
    IntroduceAckStatus,
    IntroducePlaintext,
    PowExtension,
    Rendezvous2,
)
from onionmesh.wire.relay_msg import RelayCommand

NOT_FOUND, INVALID, INTRO_FAILED, REND_FAILED = 0xF0, 0xF1, 0xF2, 0xF3
BAD_ADDRESS, INTRO_TIMEOUT_CODE = 0xF6, 0xF7
CONNECT_DEADLINE = 60.0  # the whole attempt (the SOCKS request's deadline)
STEP_TIMEOUT = 15.0  # one message awaited on one circuit
DESCRIPTOR_CACHE = 64
DESCRIPTOR_TTL = 600.0
BUILD_TRIES = 3  # circuits to other rendezvous points (or through other hops) before giving up
MAX_POW_TRIALS = 1 << 22  # a client pays at most this many hashes for one introduction


class OnionConnector:
    """The client half of onion services for one node."""

    def __init__(
        self,
        hs: HsCircuits,
        dht: Callable[[], DhtNode],
        client_auth: dict[str, bytes],
        rng: Rng,
    ) -> None:
        self.hs, self._dht, self.client_auth, self.rng = hs, dht, client_auth, rng
        # service id -> (fetched at, descriptor, subcredential, blinded key of its period)
        self._descriptors: dict[str, tuple[float, InnerDescriptor, bytes, bytes]] = {}
        self._circuits: dict[tuple[str, object], CircuitHandle] = {}
        self._locks: dict[tuple[str, object], asyncio.Lock] = {}
        self.stats: dict[str, int] = {}
        # rendezvous circuits of failed attempts, closed when their build ends
        self._pending: set[asyncio.Task[tuple[CircuitHandle, bytes, RelayDescriptor]]] = set()
        # (what, service id, info) for each descriptor fetch: "requested", "received" (info:
        # blinded), "failed" (info: outcome); the Tor control port's HS_DESC events
        self.fetch_listeners: list[Callable[[str, str, dict[str, object]], None]] = []

    def _fetch_event(self, what: str, service_id: str, info: dict[str, object]) -> None:
        for listener in list(self.fetch_listeners):
            listener(what, service_id, info)

    def purge(self) -> None:
        """Forget fetched descriptors and the rendezvous circuits kept for reuse (NEWNYM, as Tor's
        hs_client_purge_state): the next connection to any service fetches and rendezvouses anew."""
        self._descriptors.clear()
        self._circuits.clear()

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    async def circuit_for(
        self, host: str, isolation: object, deadline: float = CONNECT_DEADLINE
    ) -> CircuitHandle:
        """A rendezvous circuit joined to the service at `host`; OnionConnectFailed(code) otherwise."""
        try:
            service_pk = hs_address.parse_onion_host(host)
        except BadOnionAddress:
            self.count("bad_address")
            raise OnionConnectFailed(BAD_ADDRESS) from None
        service_id = hs_address.service_id(service_pk)
        self.hs.pool.want(client=True)  # from now on keep pre-built circuits (Tor's predicted HS use)
        key = (service_id, isolation)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with asyncio.timeout(deadline), lock:
                handle = self._circuits.get(key)
                if handle is not None and handle.closed_reason is None:
                    return handle
                handle = await self._connect(host, service_pk, service_id)
                self._circuits[key] = handle
                return handle
        except TimeoutError:
            self.count("deadline")
            raise OnionConnectFailed(INTRO_TIMEOUT_CODE, "onion service connection timed out") from None
        finally:
            if not lock.locked() and key not in self._circuits:
                self._locks.pop(key, None)

    async def _descriptor(
        self, host: str, service_id: str, service_pk: bytes, fresh: bool
    ) -> tuple[InnerDescriptor, bytes, bytes]:
        cached = self._descriptors.get(service_id)
        if cached is not None and not fresh and time.monotonic() - cached[0] < DESCRIPTOR_TTL:
            return cached[1], cached[2], cached[3]
        relays = self.hs.relays()
        self._fetch_event("requested", service_id, {})
        result = await fetch_onion_descriptor(
            self._dht(), host, relays, client_secret=self.client_auth.get(service_id), complete=fresh
        )
        if result.outcome is not FetchOutcome.OK or result.descriptor is None or result.record is None:
            self.count(f"fetch_{result.outcome.name.lower()}")
            self._fetch_event("failed", service_id, {"outcome": result.outcome.name})
            raise OnionConnectFailed(result.socks_reply)
        self._fetch_event("received", service_id, {"blinded": result.record.blinded_pk})
        subcred = hs_blinding.subcredential(service_pk, result.record.blinded_pk)
        if len(self._descriptors) >= DESCRIPTOR_CACHE:
            self._descriptors.pop(next(iter(self._descriptors)))
        blinded = result.record.blinded_pk
        self._descriptors[service_id] = (time.monotonic(), result.descriptor, subcred, blinded)
        return result.descriptor, subcred, blinded

    async def _connect(self, host: str, service_pk: bytes, service_id: str) -> CircuitHandle:
        """A cached descriptor or the first replica's answer; if every introduction point of a
        cached one fails, once more with the newest revision of all replicas
        (`fetch_onion_descriptor`'s `complete`): the service may have moved its intro points, or
        the replica that answered first served an old revision."""
        had_cached = service_id in self._descriptors
        try:
            return await self._attempt(host, service_pk, service_id, fresh=False)
        except OnionConnectFailed as exc:
            if not had_cached or exc.code not in (INTRO_FAILED, INTRO_TIMEOUT_CODE):
                raise
        self.count("descriptor_refetch")  # the service may have moved its intro points
        return await self._attempt(host, service_pk, service_id, fresh=True)

    async def _attempt(self, host: str, service_pk: bytes, service_id: str, *, fresh: bool) -> CircuitHandle:
        # Launched first: its build and ESTABLISH_RENDEZVOUS overlap the fetch and the intro circuit.
        rend_task = asyncio.create_task(self._rendezvous_circuit(service_id), name="onion-client-rend")
        ok = False
        try:
            desc, subcred, blinded = await self._descriptor(host, service_id, service_pk, fresh)
            state, rend = await self._introduce(desc, subcred, blinded, rend_task)
            rend.hs_state = "HSCR_ESTABLISHED_WAITING"
            msg = await self._expect(rend, RelayCommand.RENDEZVOUS2, REND_FAILED)
            try:
                seed = hs_ntor.client_finish(state, Rendezvous2.decode(msg.body).handshake_info)
            except (CryptoError, OnionmeshError):
                self.count("rend_bad_handshake")
                raise OnionConnectFailed(REND_FAILED, "the service did not prove its key") from None
            rend.circ.add_virtual_hop(hs_ntor.e2e_keys(seed), service_side=False)
            rend.hs_state = "HSCR_JOINED"
            self.hs.forget(rend)
            ok = True
            self.count("joined")
            return rend
        finally:
            if not ok:
                self._drop_rendezvous(rend_task)

    def _drop_rendezvous(self, task: asyncio.Task[tuple[CircuitHandle, bytes, RelayDescriptor]]) -> None:
        """Close the attempt's rendezvous circuit, now or when its build ends (not cancelled mid-build:
        the circuit manager then closes what it started)."""

        def close(done: asyncio.Task[tuple[CircuitHandle, bytes, RelayDescriptor]]) -> None:
            self._pending.discard(done)
            if done.cancelled() or done.exception() is not None:
                return
            rend = done.result()[0]
            self.hs.forget(rend)
            self.hs.mgr.close_circuit(rend.number)

        self._pending.add(task)
        task.add_done_callback(close)

    async def _rendezvous_circuit(self, service_id: str) -> tuple[CircuitHandle, bytes, RelayDescriptor]:
        """A circuit waiting at a rendezvous point under a fresh cookie (another point if one fails)."""
        tried: set[str] = set()
        for _ in range(BUILD_TRIES):
            try:
                rp = self.hs.choose_last_hop(tried)
            except OnionmeshError:
                break
            tried.add(rp.fingerprint)
            try:
                rend = await self.hs.build(HsPurpose.CLIENT_REND, rp, service_id)
            except (OnionmeshError, OSError, TimeoutError):
                self.count("rend_circuit_failed")
                continue
            cookie = self.rng.random_bytes(20)
            rend.hs_state = "HSCR_CONNECTING"
            try:
                rend.circ.send_message(
                    RelayCommand.ESTABLISH_RENDEZVOUS, EstablishRendezvous(cookie).encode()
                )
                await self._expect(rend, RelayCommand.RENDEZVOUS_ESTABLISHED, REND_FAILED)
            except (OnionConnectFailed, OnionmeshError):
                self.count("rend_circuit_failed")
                self.hs.forget(rend)
                self.hs.mgr.close_circuit(rend.number)
                continue
            rend.hs_state = "HSCR_ESTABLISHED_IDLE"
            return rend, cookie, rp
        raise OnionConnectFailed(REND_FAILED, "no rendezvous circuit")

    async def _expect(self, handle: CircuitHandle, command: RelayCommand, code: int):  # type: ignore[no-untyped-def]
        try:
            return await self.hs.expect(handle, command, STEP_TIMEOUT)
        except TimeoutError:
            raise OnionConnectFailed(code, f"no {command.name}") from None
        except OnionmeshError:
            raise OnionConnectFailed(code, f"circuit closed before {command.name}") from None

    async def _introduce(
        self,
        desc: InnerDescriptor,
        subcred: bytes,
        blinded: bytes,
        rend_task: asyncio.Task[tuple[CircuitHandle, bytes, RelayDescriptor]],
    ) -> tuple[hs_ntor.ClientState, CircuitHandle]:
        points = list(desc.intro_points)
        order = [points.pop(self.rng.randbelow(len(points))) for _ in range(len(points))]
        code = INTRO_FAILED
        for point in order:
            try:
                return await self._introduce_at(point, desc, subcred, blinded, rend_task)
            except OnionConnectFailed as exc:
                if exc.code == REND_FAILED:  # no rendezvous circuit: another intro point cannot help
                    raise
                code = exc.code
                self.count("intro_point_failed")
        raise OnionConnectFailed(code, "every introduction point failed")

    async def _introduce_at(
        self,
        point: IntroPoint,
        desc: InnerDescriptor,
        subcred: bytes,
        blinded: bytes,
        rend_task: asyncio.Task[tuple[CircuitHandle, bytes, RelayDescriptor]],
    ) -> tuple[hs_ntor.ClientState, CircuitHandle]:
        relay = next((r for r in self.hs.relays() if r.identity_pk == point.identity_pk), None)
        if relay is None:
            raise OnionConnectFailed(INTRO_FAILED, "introduction point not in the directory")
        state = hs_ntor.client_start(point.auth_key, point.enc_key, subcred, self.rng)
        solving: asyncio.Task[Extensions] | None = None
        if desc.pow is not None and desc.pow.suggested_effort > 0:  # solved while the circuits build
            solving = asyncio.create_task(self._solve(desc, blinded, state.x_public), name="onion-client-pow")
        intro = None
        try:
            for _ in range(BUILD_TRIES):  # another vanguard and middle if a hop on the way failed
                try:
                    intro = await self.hs.build(HsPurpose.CLIENT_INTRO, relay, None)
                    break
                except (OnionmeshError, OSError, TimeoutError):
                    self.count("intro_circuit_failed")
            exts: Extensions = await solving if solving is not None else ()
        finally:
            if solving is not None and not solving.done():
                solving.cancel()  # the thread finishes its slice; its result is dropped
        if intro is None:
            raise OnionConnectFailed(INTRO_FAILED, "no introduction circuit")
        try:
            intro.hs_state = "HSCI_CONNECTING"
            rend, cookie, rp = await asyncio.shield(rend_task)  # INTRODUCE1 needs the ready rendezvous
            plaintext = IntroducePlaintext(cookie, rp.onion_pk, link_specs(rp))
            if intro.closed_reason is not None:
                raise OnionConnectFailed(INTRO_FAILED, "introduction circuit closed")
            intro.circ.send_message(RelayCommand.INTRODUCE1, seal_introduce1(state, plaintext, exts).encode())
            intro.hs_state = "HSCI_INTRO_SENT"
            msg = await self._expect(intro, RelayCommand.INTRODUCE_ACK, INTRO_TIMEOUT_CODE)
            try:
                status = IntroduceAck.decode(msg.body).status
            except (OnionmeshError, ValueError):
                status = IntroduceAckStatus.BAD_MESSAGE_FORMAT
            if status is not IntroduceAckStatus.SUCCESS:
                raise OnionConnectFailed(INTRO_FAILED, f"introduction refused ({status.name})")
            intro.hs_state = "HSCI_DONE"
            return state, rend
        finally:
            self.hs.forget(intro)
            self.hs.mgr.close_circuit(intro.number)

    async def _solve(self, desc: InnerDescriptor, blinded: bytes, x_public: bytes) -> Extensions:
        """The PoW extension for the descriptor's suggested effort, solved in slices off the loop."""
        assert desc.pow is not None
        seed, effort = desc.pow.seed, min(desc.pow.suggested_effort, 2**32 - 1)
        start = self.rng.random_bytes(16)
        nonce = await asyncio.to_thread(hs_pow.solve, seed, effort, blinded, x_public, start, MAX_POW_TRIALS)
        if nonce is None:
            return ()
        return ((ExtType.POW, PowExtension(hs_pow.VERSION, nonce, effort, seed[:4]).encode()),)

    def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        for handle in list(self._circuits.values()):  # closing may call back into this table
            self.hs.mgr.close_circuit(handle.number)  # False for one already gone: nothing to do
        self._circuits.clear()
