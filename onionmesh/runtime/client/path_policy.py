"""What the client has learned about the network, and the paths it asks for because of it.

* **Entry guards** (`directory.guards`): hop 1 of every circuit of 2 or more hops is one of
  three primary guards, kept for months in DATA_DIR/guards.json and replaced only when unusable,
  so that a client meets a hostile first hop rarely and for long, not often and briefly.
* **Circuit build timeout** (`directory.cbt`): learned from observed build times, kept in
  DATA_DIR/cbt.json; a request whose build passes the learned timeout is retried elsewhere, while
  that build goes on, for measurement only, until the close timeout.
* **Relays that failed lately** (a build died at them, their exit refused without reason) are
  avoided for `AVOID_SECONDS` once they failed `AVOID_AFTER` times within that window.

* **Node restrictions** (`directory.node_restrictions`: ExitNodes, ExcludeNodes, ...), global
  (`restrictions`, settable at run time through runtime/client/node_choice.py) and per stream
  (a SOCKS username `exit=...`, which reaches us inside the circuit's isolation key), judged
  with the client's own GeoIP database (`geoip`), never with what a relay says about itself.

Path selection itself is `directory.path_selection.select_path` (bandwidth-weighted, exit first,
distinct /16s and families).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from onionmesh.directory.cbt import BuildTimeLearner
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.geoip import GeoIP
from onionmesh.directory.guards import GuardSet
from onionmesh.directory.node_restrictions import NodeRestrictions, StreamRestriction
from onionmesh.directory.path_selection import PathRequest, RestrictedExitError, relay_subnets, select_path
from onionmesh.rng import Rng
from onionmesh.runtime.keystore import write_secret
from onionmesh.runtime.loglimit import limited
from onionmesh.runtime.safelog import get_logger

log = limited(get_logger("onionmesh.path"))  # a refused stream can be repeated at will

AVOID_AFTER = 2
AVOID_SECONDS = 300.0
# On loopback a build takes milliseconds, but a loaded event loop can stall for a second: a
# learned timeout below this floor would abandon healthy builds.
MIN_BUILD_TIMEOUT = 2.0
INITIAL_BUILD_TIMEOUT = 30.0
# guards.json and cbt.json are rewritten (with fsync) only when their text changed, and at most once
# per this many seconds; stop() saves whatever is pending.  A failing build loop must not wear the disk.
SAVE_INTERVAL = 10.0


class PathPolicy:
    def __init__(
        self,
        data_dir: Path | None,
        rng: Rng,
        *,
        use_guards: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self._saved: dict[str, str] = {}
        self._last_save: float | None = None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.rng = rng
        self.use_guards = use_guards
        self.guards = GuardSet.from_json(self._read("guards.json"), rng=rng)
        self.cbt = BuildTimeLearner.from_json(
            self._read("cbt.json"), initial_timeout=INITIAL_BUILD_TIMEOUT, min_timeout=MIN_BUILD_TIMEOUT
        )
        self._failures: dict[str, deque[float]] = {}
        self.restrictions = NodeRestrictions()
        self.geoip = GeoIP()

    # --- persistence -----------------------------------------------------------------------------
    def _read(self, name: str) -> str:
        if self.data_dir is None:
            return ""
        try:
            return (self.data_dir / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return ""

    def save(self, *, force: bool = False) -> None:
        """Write the state files that changed; unless `force`, at most once per SAVE_INTERVAL."""
        if self.data_dir is None:
            return
        now = self.clock()
        if not force and self._last_save is not None and now - self._last_save < SAVE_INTERVAL:
            return
        texts = {"guards.json": self.guards.to_json(), "cbt.json": self.cbt.to_json()}
        for name, text in texts.items():
            if self._saved.get(name) == text:
                continue
            with contextlib.suppress(OSError):
                write_secret(self.data_dir / name, text.encode())
                self._saved[name] = text
        self._last_save = now

    # --- choosing ----------------------------------------------------------------------------------
    def avoided(self, now: float) -> frozenset[str]:
        out = set()
        for fp, times in list(self._failures.items()):
            while times and now - times[0] > AVOID_SECONDS:
                times.popleft()
            if len(times) >= AVOID_AFTER:
                out.add(fp)
            elif not times:
                del self._failures[fp]
        return frozenset(out)

    def primary_guards(self, relays: list[RelayDescriptor]) -> list[str]:
        return self.guards.primary(time.time(), relays)

    def restrictions_for(self, isolation: object = None) -> NodeRestrictions:
        """The global restrictions narrowed by the stream's (its isolation key's first item, the
        SOCKS username, may say `exit=...`); RestrictionError if that does not parse."""
        return self.restrictions.with_stream(stream_restriction(isolation))

    def country(self, desc: RelayDescriptor) -> str:
        """The relay's country by our database (its first address), "??" when unknown."""
        return self.geoip.country(desc.link_addresses[0][0]) if desc.link_addresses else "??"

    def choose(
        self,
        relays: list[RelayDescriptor],
        *,
        hops: int,
        port: int | None = None,
        exit_fp: str | None = None,
        via: list[str] | None = None,
        avoid: set[str] | None = None,
        isolation: object = None,
    ) -> list[RelayDescriptor]:
        """A path; DirectoryError when none exists, RestrictedExitError when the node restrictions
        leave no exit for the port (never silently widened: only a stream that asked for
        `fallback`, without StrictNodes, is given any permitted exit instead, and the log says so)."""
        now = time.time()
        rules = self.restrictions_for(isolation)
        allowed = rules.resolve(relays, self.geoip.country) if rules else None
        guards: tuple[str, ...] = ()
        if self.use_guards and hops > 1 and not via:
            out = allowed.excluded if allowed else frozenset()
            usable = [d for d in relays if d.fingerprint not in out]
            guards = tuple(self.guards.primary(now, usable))
        request = PathRequest(
            hops=hops,
            port=port,
            exit_fp=exit_fp,
            via=tuple(via or ()),
            avoid=frozenset(avoid or ()) | self.avoided(now),
            guards=guards,
            excluded=allowed.excluded if allowed else frozenset(),
            exits=allowed.exits if allowed else None,
            restriction=rules.describe() if rules else "",
        )
        try:
            return select_path(relays, request, self.rng)
        except RestrictedExitError as exc:
            if not rules.fallback:
                log.warning("stream refused: no permitted exit", reason=str(exc))
                raise
            wider = self.restrictions.resolve(relays, self.geoip.country) if self.restrictions else None
            log.warning(
                "no exit for the stream's own restriction; it allowed fallback (StrictNodes is off): "
                "using any exit the global restrictions permit",
                reason=str(exc),
            )
            request = replace(
                request,
                excluded=wider.excluded if wider else frozenset(),
                exits=wider.exits if wider else None,
                restriction=self.restrictions.describe(),
            )
            return select_path(relays, request, self.rng)

    def build_timeout(self) -> float:
        return self.cbt.timeout()

    def build_timeouts(self) -> tuple[float, float]:
        """(stop waiting for a build, stop measuring it): directory.cbt's two timeouts."""
        return self.cbt.timeout(), self.cbt.close_timeout()

    # --- learning ----------------------------------------------------------------------------------
    def built(
        self, path: list[RelayDescriptor], seconds: float, *, timed_out: bool = False, learn: bool = True
    ) -> None:
        """A build completed after `seconds`; `timed_out`: after the build timeout (measured);
        `learn` False keeps its time out of the build-timeout learner (a circuit shorter than the
        general ones, e.g. a pre-built guard-L2 one, would lower it)."""
        if learn:
            self.cbt.add(seconds, timed_out=timed_out)
        self.guards.mark_success(path[0].fingerprint, time.time())
        self.save()

    def build_failed(self, path: list[RelayDescriptor], hops_done: int, timed_out: bool) -> None:
        """A build died while extending to hop `hops_done` (0-based): blame that relay.
        `timed_out`: abandoned at the close timeout.

        A relay that could not be reached at all (not a timeout) is avoided at once: a killed relay
        stays in the directory until the next crawls, and must not be tried again meanwhile.
        """
        if timed_out:
            self.cbt.add_timeout()
        culprit = path[min(hops_done, len(path) - 1)]
        self.relay_failed(culprit.fingerprint, 1 if timed_out else AVOID_AFTER)
        if hops_done == 0 or (not timed_out and self.guards.get(culprit.fingerprint) is not None):
            # Unreachable at any position: if it is one of our guards, it is unusable as a guard too.
            self.guards.mark_failure(culprit.fingerprint, time.time())
        self.save()

    def relay_failed(self, fingerprint: str, count: int = 1) -> None:
        times = self._failures.setdefault(fingerprint, deque(maxlen=16))
        now = time.time()
        times.extend([now] * count)


@functools.lru_cache(maxsize=1024)
def _parse_username(username: bytes | str) -> StreamRestriction | None:
    return StreamRestriction.from_username(username)


def stream_restriction(isolation: object) -> StreamRestriction | None:
    """What the isolation key asks: its first item is the SOCKS username (or the control API's
    `exit=...` text); RestrictionError when it starts with `exit=` but does not parse."""
    if not isinstance(isolation, tuple) or not isolation:
        return None
    first = isolation[0]
    if not isinstance(first, bytes | str) or len(first) > 4096:
        return None
    return _parse_username(first)


def no_path_reason(relays: list[RelayDescriptor], hops: int) -> str | None:
    """Why no path can exist when the known relays share too few /16 networks, in words; else None.

    Relays started by hand on 127.0.0.1, 127.0.0.2, ... all sit in 127.0.0.0/16, and no two relays
    of a path may share a /16: such a mesh can never carry traffic, and the user must be told why.
    """
    if not relays or hops < 2:
        return None
    nets = sorted({min(relay_subnets(d)) for d in relays if d.link_addresses})
    if len(nets) >= hops:
        return None
    known = f"{len(relays)} relay{'s' if len(relays) != 1 else ''} known"
    if len(nets) == 1:
        where = f"all in {nets[0]}" if len(relays) > 1 else f"in {nets[0]}"
        return f"{known}, {where}: no path satisfies the /16 rule"
    return (
        f"{known}, in only {len(nets)} /16 networks ({', '.join(nets)}): "
        f"no {hops}-hop path satisfies the /16 rule"
    )
