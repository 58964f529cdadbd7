"""The client's directory: a verified view of every relay, found only through the DHT.

Fetch broadly, choose locally: the client crawls the whole DHT (every node proves its ID and
hands over its own signed descriptor) and never looks up the relays of a circuit it is about
to build.  The view is refreshed every `refresh` seconds, cached on disk so that a restart
starts from it (and from its relays as bootstrap contacts) instead of an empty list, and a
relay that left drops out after two crawls that did not find it.  A crawl that failed or found
nothing is retried with backoff (runtime.backoff), not after the full refresh interval: an offline
first start would otherwise stay empty for ten minutes once the network came up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from pathlib import Path

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.descriptor_file import decode_descriptor_file, encode_descriptor_file
from onionmesh.directory.view import NetView
from onionmesh.errors import OnionmeshError
from onionmesh.runtime.backoff import Backoff
from onionmesh.runtime.client.dht_over_circuits import CircuitDhtChannel, CircuitDhtProtocol
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.keystore import write_secret
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger

log = limited(get_logger("onionmesh.directory"))  # a failing crawl repeats on every retry

CACHE_NAME = "cached-descriptors.json"
DEFAULT_REFRESH = 600.0
RETRY_BASE = 1.0  # after a crawl that failed or found nothing: 1, 2, 4 ... s (jittered)
RETRY_CAP = 60.0


def parse_bootstrap_file(path: Path) -> list[tuple[str, int]]:
    """One HOST:PORT per line; '#' starts a comment."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, port = line.rpartition(":")
        out.append((str(ipaddress.ip_address(host.strip("[]"))), int(port)))
    return out


def local_bind_for(contacts: list[tuple[str, int]]) -> str:
    """Bind the client's DHT socket to loopback when every contact is on loopback (a test mesh)."""
    if contacts and all(ipaddress.ip_address(h).is_loopback for h, _ in contacts):
        return "127.0.0.1" if all(ipaddress.ip_address(h).version == 4 for h, _ in contacts) else "::1"
    return "0.0.0.0"


class DhtDirectory:
    def __init__(
        self,
        data_dir: Path,
        bootstrap: list[tuple[str, int]],
        *,
        refresh: float = DEFAULT_REFRESH,
        max_relays: int = 20_000,
        max_per_subnet: int = 4,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.bootstrap = list(bootstrap)
        self.refresh_interval = refresh
        self.view = NetView(max_relays, max_per_subnet)
        self.dht = DhtNode(None)
        self._task: asyncio.Task[None] | None = None
        self.last_crawl: float | None = None
        self.last_found = 0  # descriptors the last crawl found
        self.crawls = 0  # crawls the refresh loop finished, failed ones included
        self.crawled = asyncio.Event()
        # Set before start(): DHT RPCs go through circuits (runtime.client.dht_over_circuits)
        # and no UDP socket opens.
        self.channel: CircuitDhtChannel | None = None

    def relays(self) -> list[RelayDescriptor]:
        return self.view.relays(time.time())

    def _load_cache(self) -> None:
        path = self.data_dir / CACHE_NAME
        if not path.exists():
            return
        try:
            descriptors, _errors = decode_descriptor_file(path.read_text(encoding="utf-8"), time.time())
        except (OSError, OnionmeshError, ValueError):
            return
        self.view.merge(descriptors, time.time(), crawl=False)

    def _save_cache(self) -> None:
        with contextlib.suppress(OSError):
            write_secret(self.data_dir / CACHE_NAME, encode_descriptor_file(self.relays()).encode())

    def _contacts(self) -> list[tuple[str, int]]:
        contacts = list(self.bootstrap)
        for desc in self.relays():
            if desc.dht_contact is not None and desc.dht_contact not in contacts:
                contacts.append(desc.dht_contact)
        return contacts

    async def start(self) -> None:
        self._load_cache()
        contacts = self._contacts()
        if self.channel is not None:
            dht = self.dht
            dht.protocol = CircuitDhtProtocol(
                dht.node, dht.storage, dht.ksize, lambda: None, dht.clock, channel=self.channel
            )
        else:
            await self.dht.listen(0, local_bind_for(contacts))
        self._task = asyncio.create_task(self._refresh_loop(), name="dht-directory-refresh")

    async def refresh(self) -> int:
        """Crawl the DHT now; returns how many relays the view holds afterwards."""
        contacts = self._contacts()
        if not contacts and self.channel is not None:
            contacts = self.bootstrap = await self.channel.seed_contacts()
        if not self.dht.protocol.router.find_neighbors(self.dht.node):  # type: ignore[union-attr]
            await self.dht.bootstrap(contacts[:16])
        found = await self.dht.crawl(extra=contacts)
        self.last_found = len(found)
        self.view.merge(found, time.time())
        self.last_crawl = time.time()
        self._save_cache()
        self.crawled.set()
        log.info("directory refreshed", relays=len(self.view), found=len(found))
        return len(self.view)

    async def _refresh_loop(self) -> None:
        backoff = Backoff(min(RETRY_BASE, self.refresh_interval), min(RETRY_CAP, self.refresh_interval))
        delay = 0.0
        while True:
            await asyncio.sleep(delay)
            found = 0
            try:
                await self.refresh()
                found = self.last_found
            except Exception as exc:  # keep refreshing whatever one crawl met
                log.warning("directory refresh failed", error=type(exc).__name__)
            self.crawls += 1
            if found:
                backoff.reset()
                delay = self._after_success_delay()
            else:  # nothing reachable yet (offline, or a wrong contact): soon again, less and less often
                delay = backoff.next_delay()

    def _after_success_delay(self) -> float:
        return self.refresh_interval

    async def wait_for(self, relays: int, timeout: float) -> int:
        """Crawl until the view holds at least `relays` relays or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while len(self.view) < relays and time.monotonic() < deadline:
            await self.refresh()
            if len(self.view) < relays:
                await asyncio.sleep(0.2)
        return len(self.view)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.dht.stop()


__all__ = ["DhtDirectory", "local_bind_for", "parse_bootstrap_file"]
