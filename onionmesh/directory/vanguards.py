"""Vanguards-lite (Tor proposal 333): a second layer of guards for onion-service circuits.

An attacker who can make a service (or a client) build many circuits to relays it runs learns
the middle hop next to the guard quickly; with that, the guard.  Onion-service circuits therefore
take their second hop from a small set of layer-2 guards kept for days:

* `NUM_LAYER2` = 4 layer-2 guards, each kept for a lifetime drawn as max(X, Y) of two uniform
  draws in [1, 12] days (prop 333's max(x,x) distribution: about a week on average), and
  replaced when that ends or when the relay leaves the directory.  Chosen bandwidth-weighted
  among listed relays, never two in one /16 or family.
* Paths (prop 333 §1): client rendezvous `G, L2, RP`; every other onion-service circuit (client
  intro and HSDir, service intro, rendezvous and HSDir) `G, L2, M, last` with a fresh middle M,
  so that the last hop never sees an L2.  No two hops share a /16 or a family.
* Unlike Tor (which keeps them in memory only), onionmesh persists the set
  (runtime.client.vanguard_state, vanguards.json beside guards.json), so a restart does not
  draw a fresh L2 set: forcing restarts would otherwise rotate them at will.

Sans-I/O: fed the time, the relays and a random source.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import bandwidth_weight, relays_conflict, weighted_index
from onionmesh.errors import NoHsPath
from onionmesh.rng import Rng

NUM_LAYER2 = 4
DAY = 86400
MIN_LIFETIME = 1 * DAY
MAX_LIFETIME = 12 * DAY
STATE_VERSION = 1
MAX_STATE_CHARS = 64 * 1024
_HEX = set("0123456789ABCDEF")


class HsPurpose(enum.Enum):
    CLIENT_REND = "client-rend"  # G, L2, RP
    CLIENT_INTRO = "client-intro"  # G, L2, M, intro point
    CLIENT_HSDIR = "client-hsdir"
    SERVICE_INTRO = "service-intro"
    SERVICE_REND = "service-rend"
    SERVICE_HSDIR = "service-hsdir"


@dataclass(frozen=True)
class Vanguard:
    fingerprint: str
    added_at: float
    expires_at: float


def draw_lifetime(rng: Rng) -> float:
    """max(X, Y), X and Y uniform in [MIN_LIFETIME, MAX_LIFETIME] (whole seconds)."""
    span = MAX_LIFETIME - MIN_LIFETIME + 1
    return float(MIN_LIFETIME + max(rng.randbelow(span), rng.randbelow(span)))


class VanguardSet:
    def __init__(self, vanguards: Sequence[Vanguard] = (), rng: Rng | None = None) -> None:
        self.rng = rng
        self._vanguards = list(vanguards)

    @property
    def vanguards(self) -> tuple[Vanguard, ...]:
        return tuple(self._vanguards)

    def update(self, now: float, relays: Sequence[RelayDescriptor]) -> list[str]:
        """Drop expired and unlisted layer-2 guards, fill up to NUM_LAYER2; the current fingerprints."""
        by_fp = {r.fingerprint: r for r in relays}
        self._vanguards = [v for v in self._vanguards if v.expires_at > now and v.fingerprint in by_fp]
        while len(self._vanguards) < NUM_LAYER2 and self.rng is not None:
            chosen = [by_fp[v.fingerprint] for v in self._vanguards]
            pool = [r for r in relays if not any(relays_conflict(r, c) for c in chosen)]
            if not pool:
                break
            pick = pool[weighted_index(self.rng, [bandwidth_weight(r) for r in pool])]
            self._vanguards.append(Vanguard(pick.fingerprint, now, now + draw_lifetime(self.rng)))
        return [v.fingerprint for v in self._vanguards]

    # --- paths --------------------------------------------------------------------------------
    def path(
        self,
        purpose: HsPurpose,
        relays: Sequence[RelayDescriptor],
        guard: str,
        last_hop: str,
        now: float,
        rng: Rng,
    ) -> list[RelayDescriptor]:
        """The hops of an onion-service circuit: guard, an L2 vanguard, (a middle,) the last hop."""
        by_fp = {r.fingerprint: r for r in relays}
        if guard not in by_fp or last_hop not in by_fp:
            raise NoHsPath("guard or last hop not in the directory")
        g, last = by_fp[guard], by_fp[last_hop]
        if relays_conflict(g, last):
            raise NoHsPath("guard and last hop conflict")
        layer2 = [by_fp[fp] for fp in self.update(now, relays)]
        l2s = [v for v in layer2 if not relays_conflict(v, g) and not relays_conflict(v, last)]
        if not l2s:
            raise NoHsPath("no layer-2 vanguard fits this guard and last hop")
        l2 = l2s[rng.randbelow(len(l2s))]
        if purpose is HsPurpose.CLIENT_REND:
            return [g, l2, last]
        pool = [r for r in relays if not any(relays_conflict(r, x) for x in (g, l2, last))]
        if not pool:
            raise NoHsPath("no middle relay fits")
        middle = pool[weighted_index(rng, [bandwidth_weight(r) for r in pool])]
        return [g, l2, middle, last]

    # --- state file ---------------------------------------------------------------------------
    def to_json(self) -> str:
        entries = [asdict(v) for v in self._vanguards]
        return json.dumps({"version": STATE_VERSION, "layer2": entries}, indent=1)

    @classmethod
    def from_json(cls, text: object, rng: Rng | None = None) -> VanguardSet:
        """Read what to_json wrote; junk gives an empty set, bad entries are skipped."""
        out: list[Vanguard] = []
        try:
            data = json.loads(text) if isinstance(text, str) and len(text) <= MAX_STATE_CHARS else None
        except (ValueError, RecursionError):
            data = None
        ok = isinstance(data, dict) and data.get("version") == STATE_VERSION
        entries = data.get("layer2") if ok else None  # type: ignore[union-attr]
        for entry in entries if isinstance(entries, list) else []:
            v = _parse(entry)
            if v is not None and all(x.fingerprint != v.fingerprint for x in out) and len(out) < NUM_LAYER2:
                out.append(v)
        return cls(out, rng)


def _parse(entry: object) -> Vanguard | None:
    if not isinstance(entry, dict):
        return None
    fp, added, expires = entry.get("fingerprint"), entry.get("added_at"), entry.get("expires_at")
    if not (isinstance(fp, str) and len(fp) == 40 and set(fp) <= _HEX):
        return None
    if type(added) not in (int, float) or type(expires) not in (int, float):
        return None
    assert isinstance(added, int | float) and isinstance(expires, int | float)
    if not (0 <= added < expires <= added + MAX_LIFETIME):  # NaN fails too; no longer than allowed
        return None
    return Vanguard(fp, float(added), float(expires))
