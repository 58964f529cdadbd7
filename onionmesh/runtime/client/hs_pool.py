"""Pre-built internal circuits for onion services, extended by one hop on demand (Tor's cannibalizing).

A first connection to an onion service needs three circuits on its critical path: the client's
rendezvous and introduction circuits and the service's rendezvous circuit.  Built whole, each
costs 3-4 round trips of growing length; taken from this pool, each costs one EXTEND.  The pool
keeps circuits on the paths `directory.hs_prebuilt.prebuilt_path` gives (guard-L2 for client
rendezvous, guard-L2-middle for the rest), with the purpose "hs_vanguards": they carry no
streams (`CircuitHandle.usable_for` takes "general" only), are never dirty, belong to no
isolation key and to no service until `take` hands one out; then it is the caller's alone.

Kept for a node that has used onion services as a client or is configured for them (`want`,
like Tor's predicted HS ports), and for a node while it runs a service (`release_service` when
one stops: after the last, the service-side circuits beyond the client's target are closed).
A circuit whose guard is no longer the first primary guard, whose L2 is no longer a vanguard,
with a hop gone from the directory, or older than MAX_AGE is closed; the background task
refills (backoff on failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.hs_prebuilt import (
    KIND_OF,
    PrebuiltKind,
    choose,
    fits,
    guard_for,
    prebuilt_path,
    still_usable,
)
from onionmesh.directory.vanguards import HsPurpose, VanguardSet
from onionmesh.errors import OnionmeshError
from onionmesh.rng import Rng
from onionmesh.runtime.backoff import Backoff
from onionmesh.runtime.client.circuit_handle import CircuitHandle
from onionmesh.runtime.client.circuit_manager import CircuitMgr
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger

log = limited(get_logger("onionmesh.hs_pool"))

POOL_PURPOSE = "hs_vanguards"  # Tor's HS_VANGUARDS: a pre-built internal circuit
CLIENT_TARGET = {PrebuiltKind.SHORT: 2, PrebuiltKind.LONG: 3}
SERVICE_TARGET = {PrebuiltKind.LONG: 4}
MAX_AGE = 3600.0  # an unused pooled circuit is closed after an hour (Tor's CircuitIdleTimeout)
CHECK_INTERVAL = 60.0  # how often the pool is pruned when nothing wakes it


class HsCircuitPool:
    """The node's pre-built onion-service circuits (one per HsCircuits)."""

    def __init__(
        self, mgr: CircuitMgr, vanguards: VanguardSet, rng: Rng, save_vanguards: Callable[[], None]
    ) -> None:
        self.mgr, self.vanguards, self.rng, self._save = mgr, vanguards, rng, save_vanguards
        self.targets: dict[PrebuiltKind, int] = {kind: 0 for kind in PrebuiltKind}
        self._client_wanted, self._services = False, 0
        self.ready: dict[PrebuiltKind, list[CircuitHandle]] = {kind: [] for kind in PrebuiltKind}
        self._building: dict[PrebuiltKind, int] = {kind: 0 for kind in PrebuiltKind}
        self.stats: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._builds: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(base=1.0, cap=60.0, rng=rng)
        self.changed = asyncio.Event()  # set whenever a circuit enters or leaves the pool (tests wait on it)
        mgr.listeners.append(self._circuit_event)

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    # --- demand ---------------------------------------------------------------------------------
    def want(self, *, client: bool = False, service: bool = False) -> None:
        """Keep circuits for this node's client side from now on, and/or for one more service."""
        self._client_wanted = self._client_wanted or client
        self._services += int(service)
        self._retarget()
        if any(self.targets.values()) and self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: the next want() starts it
                self._task = asyncio.get_running_loop().create_task(self._run(), name="hs-pool")
        self._wake.set()

    def release_service(self) -> None:
        """One service stopped; after the last, keep only what the client side wants."""
        self._services = max(0, self._services - 1)
        self._retarget()
        for kind, target in self.targets.items():
            while len(self.ready[kind]) > target:
                self.count("released")
                self.mgr.close_circuit(self.ready[kind].pop(0).number)  # the oldest first
                self._changed()

    def _retarget(self) -> None:
        demand = ((self._client_wanted, CLIENT_TARGET), (self._services > 0, SERVICE_TARGET))
        wanted = [target for on, target in demand if on]
        self.targets = {kind: max((t.get(kind, 0) for t in wanted), default=0) for kind in PrebuiltKind}

    def full(self) -> bool:
        return all(len(self.ready[k]) >= n for k, n in self.targets.items())

    # --- taking ---------------------------------------------------------------------------------
    def _context(self, last: RelayDescriptor) -> tuple[list[RelayDescriptor], list[str], float]:
        relays = self.mgr.relays()
        if all(r.fingerprint != last.fingerprint for r in relays):
            relays = [*relays, last]
        return relays, self.mgr.policy.primary_guards(relays), time.time()

    def has_fit(self, purpose: HsPurpose, last: RelayDescriptor) -> bool:
        """Is a pooled circuit ready that could be extended to `last` for `purpose`?"""
        kind = KIND_OF.get(purpose)
        if kind is None:
            return False
        relays, guards, now = self._context(last)
        return any(
            fits(h.path, purpose, last, self.vanguards, relays, guards, now)
            for h in self.ready[kind] if h.closed_reason is None
        )  # fmt: skip

    async def take(
        self, purpose: HsPurpose, last: RelayDescriptor, label: str, service_id: str | None
    ) -> CircuitHandle | None:
        """A pooled circuit extended by one hop to `last`, now the caller's (purpose `label`, for
        `service_id`), or None: none fits, or the extension failed (that circuit is closed); the
        caller then builds a whole one."""
        kind = KIND_OF.get(purpose)
        if kind is None:
            return None
        relays, guards, now = self._context(last)
        ready = [h for h in self.ready[kind] if h.closed_reason is None]
        number = choose(
            [(h.number, h.path) for h in ready], purpose, last, self.vanguards, relays, guards, now
        )
        self._save()  # `fits` may have refilled the vanguard set
        if number is None:
            self.count("miss")
            by_fp = {r.fingerprint: r for r in relays}
            if not ready:
                self.count("miss_empty")
            elif guard_for(guards, by_fp, last) != guard_for(guards, by_fp, None):
                self.count("miss_guard")  # the target conflicts with the first guard: another guard
            else:
                self.count("miss_hops")  # the target is (or conflicts with) a hop of each one
            return None
        handle = next(h for h in ready if h.number == number)
        self.ready[kind].remove(handle)
        handle.purpose, handle.hs_service_id = label, service_id  # out of the pool: never back
        self._changed()
        try:
            await self.mgr.extend(handle, last)
        except (OnionmeshError, OSError, TimeoutError):
            self.count("extend_failed")
            return None
        self.count("taken")
        return handle

    # --- keeping it full ------------------------------------------------------------------------
    def _changed(self) -> None:
        self.changed.set()
        self._wake.set()

    def _circuit_event(self, what: str, handle: CircuitHandle) -> None:
        if what == "closed" and handle.purpose == POOL_PURPOSE:
            for kind in PrebuiltKind:
                if handle in self.ready[kind]:
                    self.ready[kind].remove(handle)
                    self._changed()

    def _prune(self) -> None:
        relays = self.mgr.relays()
        guards = self.mgr.policy.primary_guards(relays)
        now, mono = time.time(), time.monotonic()
        for kind in PrebuiltKind:
            for handle in list(self.ready[kind]):
                old = handle.built_at is not None and mono - handle.built_at >= MAX_AGE
                if old or not still_usable(handle.path, self.vanguards, relays, guards, now):
                    self.count("pruned")
                    self.mgr.close_circuit(handle.number)  # its "closed" event removes it

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._prune()
                for kind, target in self.targets.items():
                    while len(self.ready[kind]) + self._building[kind] < target:
                        self._building[kind] += 1
                        task = asyncio.create_task(self._build(kind), name="hs-pool-build")
                        self._builds.add(task)
                        task.add_done_callback(self._builds.discard)
            except Exception as exc:  # a bug here must not end the pool silently
                log.error("onion-service circuit pool: internal error", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_INTERVAL):
                    await self._wake.wait()

    async def _build(self, kind: PrebuiltKind) -> None:
        try:
            relays = self.mgr.relays()
            path = prebuilt_path(
                kind, self.vanguards, relays, self.mgr.policy.primary_guards(relays), time.time(), self.rng
            )  # fmt: skip
            self._save()
            handle = await self.mgr.build(
                path=path, hops=len(path), purpose=POOL_PURPOSE, wait_directory=False
            )
        except (OnionmeshError, OSError, TimeoutError) as exc:
            self.count("build_failed")
            log.info("pre-built onion-service circuit failed", error=type(exc).__name__)
            await asyncio.sleep(self._backoff.next_delay())  # still counted as building: no hot loop
            return
        finally:
            self._building[kind] -= 1
            self._wake.set()
        self._backoff.reset()
        self.count("built")
        if len(self.ready[kind]) >= self.targets[kind]:  # demand fell while it was building
            self.count("released")
            self.mgr.close_circuit(handle.number)
        elif handle.closed_reason is None:
            self.ready[kind].append(handle)
            self._changed()

    def close(self) -> None:
        """Stop refilling and close the pooled circuits (the node is stopping)."""
        for task in [*self._builds, *([self._task] if self._task else [])]:
            task.cancel()
        self._task = None
        for kind in PrebuiltKind:
            for handle in list(self.ready[kind]):
                self.mgr.close_circuit(handle.number)
            self.ready[kind].clear()
