"""An onion service's publication: what its descriptor says and when it is uploaded.

* The inner descriptor: the established introduction points (at most 8) and, with PoW on, the
  seed (rotated every POW_SEED_LIFETIME; the previous one stays valid) and the suggested effort
  of the service's EffortController (proto.hs_pow_effort, Tor's update rule).
* Uploads on directory.hs_publish's schedule, every period being published, through
  `DhtNode.publish_hs` (a DHT node whose RPCs go through the node's circuits: never from its own
  address); again at once when the intro points change or the effort moves by more than 15 %.
* `desc_upload` / `desc_uploaded` / `desc_failed` events for the control port's HS_DESC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from kademlia.node import Node

from onionmesh.directory.hs_descriptor import InnerDescriptor, IntroPoint, PowParams, build_record
from onionmesh.directory.hs_publish import PublishSchedule
from onionmesh.errors import OnionmeshError
from onionmesh.proto.hs_pow_effort import EffortController
from onionmesh.rng import Rng
from onionmesh.runtime.client.hs_circuits import HsCircuits
from onionmesh.runtime.client.hs_fetch import seeds_near
from onionmesh.runtime.client.hs_service_config import OnionServiceSpec
from onionmesh.runtime.dht.node import DhtNode

POW_SEED_LIFETIME = 3 * 3600
MAX_INTRO_POINTS_IN_DESCRIPTOR = 8
INTRO_QUEUE_CAP = 256  # the service's introduction queue (runtime.client.hs_service_intro)


class ServicePublisher:
    def __init__(
        self,
        spec: OnionServiceSpec,
        hs: HsCircuits,
        dht: DhtNode,
        rng: Rng,
        count: Callable[[str], None],
        emit: Callable[[str, dict[str, object]], None],
    ) -> None:
        self.spec, self.hs, self.dht, self.rng, self.count, self.emit = spec, hs, dht, rng, count, emit
        self.schedule = PublishSchedule(rng)
        # the suggested effort, told of every drop and every request served by the intro queue
        self.pow = EffortController(time.monotonic(), INTRO_QUEUE_CAP, spec.pow_update_period)
        self.pow_seed, self.pow_prev_seed = rng.random_bytes(32), b""
        self.pow_seed_expires = int(time.time()) + POW_SEED_LIFETIME
        self.published = asyncio.Event()

    async def wait_published(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.published.wait()
        return self.published.is_set()

    def pow_seeds(self) -> tuple[bytes, bytes]:
        """The seeds a PoW may be solved for: the current and the previous (b"" at first)."""
        return self.pow_seed, self.pow_prev_seed

    def pow_update(self, queue_len: int, head_effort: int | None) -> bool:
        """The effort controller's period; True when the descriptor must be uploaded again (the
        suggested effort moved by more than 15 %, as Tor): every period is then re-uploaded."""
        if not self.pow.update(time.monotonic(), queue_len, head_effort):
            return False
        self.count("pow_effort_changed")
        if not self.pow.republish_due():
            return False
        self.schedule.intro_points_changed()
        return True

    def next_wakeup(self, now: float) -> float:
        """When (time.time()) the next upload or effort update is due."""
        wake = self.schedule.next_wakeup(now)
        if self.spec.pow_enabled:
            wake = min(wake, now + self.pow.next_update - time.monotonic())
        return wake

    def inner(self, points: Sequence[IntroPoint]) -> InnerDescriptor:
        pow_params = None
        if self.spec.pow_enabled:
            if time.time() >= self.pow_seed_expires:
                self.pow_prev_seed, self.pow_seed = self.pow_seed, self.rng.random_bytes(32)
                self.pow_seed_expires = int(time.time()) + POW_SEED_LIFETIME
            pow_params = PowParams(self.pow_seed, self.pow.publish(), self.pow_seed_expires)
        return InnerDescriptor(tuple(points[:MAX_INTRO_POINTS_IN_DESCRIPTOR]), pow_params)

    def _seeds(self, key: bytes) -> list[Node]:
        return seeds_near(key, self.dht, self.hs.relays())

    async def publish_due(self, points: Sequence[IntroPoint]) -> bool:
        """Upload what the schedule says is due; True if any upload was accepted."""
        any_accepted = False
        for upload in self.schedule.due(time.time()):
            raw = build_record(
                self.spec.key, self.inner(points), period=upload.period, revision=upload.revision,
                valid_after=upload.valid_after, lifetime_min=upload.lifetime_min, rng=self.rng,
                client_keys=self.spec.client_auth,
            )  # fmt: skip
            info: dict[str, object] = {"period": upload.period, "revision": upload.revision}
            self.emit("desc_upload", info)
            try:
                counts = await self.dht.publish_hs(raw, seeds=self._seeds)
            except (OnionmeshError, OSError, TimeoutError):
                counts = []
            accepted = any(counts)
            self.schedule.uploaded(upload, time.time(), accepted)
            if not accepted:
                self.count("desc_failed")
                self.emit("desc_failed", info)
                continue
            self.count("desc_uploaded")
            for replica, stored in enumerate(counts):
                if stored:  # "hsdir": the replica (0-3); DhtNode.publish_hs counts the nodes that stored it
                    self.emit("desc_uploaded", {**info, "hsdir": f"replica{replica}", "nodes": stored})
            any_accepted = True
            self.published.set()
        return any_accepted
