"""Directory guards: the few stable relays a client fetches its directory from (sans-I/O).

Why: so that over time only a handful of relays learn that this client exists (proposal 207:
directory guards), instead of every relay of a crawl (issue 23).  As in prop 207 they are
disjoint from the client's entry guards, so no single relay sees both roles; no two share a /16
or a family.  The first usable one is the primary (its diffs build the view); the others are
cross-check sources.  A source shown to lie (directory.dir_client evidence) is marked bad and
replaced, never sampled again.  Sampling is bandwidth-weighted.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.path_selection import bandwidth_weight, same_family, weighted_index
from onionmesh.rng import Rng

N_DIR_GUARDS = 3
MAX_BAD = 1024


def _net16(desc: RelayDescriptor) -> str:
    host = desc.link_addresses[0][0]
    prefix = 16 if ipaddress.ip_address(host).version == 4 else 32
    return str(ipaddress.ip_network(f"{host}/{prefix}", strict=False))


class DirGuardSet:
    def __init__(self, n: int = N_DIR_GUARDS) -> None:
        self.n = n
        self.sampled: list[str] = []  # fingerprints, sample order: the first usable is the primary
        self.bad: list[str] = []  # shown to lie: never sampled again
        self.ever: set[str] = set()  # every relay that was ever one (tests, the status page)

    @property
    def primary(self) -> str | None:
        return self.sampled[0] if self.sampled else None

    def mark_bad(self, fp: str) -> None:
        if fp in self.sampled:
            self.sampled.remove(fp)
        if fp not in self.bad:
            self.bad.append(fp)
            del self.bad[:-MAX_BAD]

    def update(
        self,
        relays: Sequence[RelayDescriptor],
        entry_guards: Iterable[str],
        rng: Rng,
        listed: Iterable[str] | None = None,
    ) -> list[str]:
        """Keep the guards still `listed` in the directory (RUNNING or not: one that is down for a
        while stays a guard, as Tor keeps its guards), drop those that turned bad or became entry
        guards; sample from the running `relays` up to n, and more (at most 2n) while none of the
        sampled ones is running.  Returns the usable ones (running), primary first."""
        by_fp = {d.fingerprint: d for d in relays}
        entry = set(entry_guards)
        keep = set(by_fp) if listed is None else set(listed) | set(by_fp)
        self.sampled = [fp for fp in self.sampled if fp in keep and fp not in entry and fp not in self.bad]
        chosen = [by_fp[fp] for fp in self.sampled if fp in by_fp]
        candidates = [
            d
            for d in relays
            if d.fingerprint not in entry
            and d.fingerprint not in self.bad
            and d.fingerprint not in self.sampled
        ]
        while len(self.sampled) < self.n or (not chosen and len(self.sampled) < 2 * self.n):
            nets = {_net16(c) for c in chosen}
            fit = [
                d for d in candidates if _net16(d) not in nets and not any(same_family(d, c) for c in chosen)
            ]
            if not fit:
                break
            pick = fit[weighted_index(rng, [bandwidth_weight(d) for d in fit])]
            candidates.remove(pick)
            chosen.append(pick)
            self.sampled.append(pick.fingerprint)
        self.ever.update(self.sampled)
        return [fp for fp in self.sampled if fp in by_fp]

    def to_json(self) -> str:
        return json.dumps({"sampled": self.sampled, "bad": self.bad})

    @classmethod
    def from_json(cls, text: object, n: int = N_DIR_GUARDS) -> DirGuardSet:
        """A saved set; anything malformed gives an empty one (it is only a cache of choices)."""
        out = cls(n)
        try:
            data = json.loads(text)  # type: ignore[arg-type]
            sampled, bad = data["sampled"], data["bad"]
        except (TypeError, ValueError, KeyError):
            return out
        fps = [
            x for x in (sampled if isinstance(sampled, list) else []) if isinstance(x, str) and len(x) == 40
        ]
        out.sampled = fps[: 2 * n]
        out.bad = [x for x in (bad if isinstance(bad, list) else []) if isinstance(x, str)][-MAX_BAD:]
        out.ever.update(out.sampled)
        return out


__all__ = ["N_DIR_GUARDS", "DirGuardSet"]
