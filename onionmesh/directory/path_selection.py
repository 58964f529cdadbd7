"""Choosing relays for a circuit, after Tor's path-spec §2.2: exit first, then hop 1, then middles.

This module owns the path constraints (no relay twice, no two relays in one IPv4 /16 or IPv6 /32,
no two relays of one family where both list each other), the bandwidth weight of a relay (its
self-reported bandwidth capped at MAX_ADVERTISED_BANDWIDTH, at least 1), the exact integer
weighted choice, the "might this exit accept the port" test used before DNS, and `select_path`.

Each position is drawn bandwidth-weighted among the relays that do not conflict with any relay
already chosen.  If a draw leads to a dead end (no relay left for a later position), the search
backs up and tries the next candidate, so DirectoryError means "no valid path exists" (within a
search budget that small and ordinary directories never reach; it only bounds pathological ones).
In ordinary directories the first draw at every position succeeds, so the weights are exact.

Not in this module: guard state (guards.py: the caller passes its usable primary guards in
`PathRequest.guards`), circuit-build timeouts (cbt.py), Tor's position weights (Wgg, Wmd, ...)
and consensus flags (onionmesh has no bandwidth authorities), building circuits (runtime).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.exit_policy import ExitPolicy
from onionmesh.directory.subnets import subnet
from onionmesh.errors import DirectoryError, PolicyError, RestrictedExitError
from onionmesh.rng import Rng

MAX_ADVERTISED_BANDWIDTH = 10_000_000  # bytes/s: a relay's self-reported bandwidth counts at most this
MAX_HOPS = 8
MAX_SEARCH_STEPS = 4096  # candidates tried by one select_path before it gives up


# --------------------------------------------------------------------------- the rules
def bandwidth_weight(desc: RelayDescriptor, measured_kbps: int = 0) -> int:
    """The selection weight of a relay in bytes/s: its measured weight (kB/s, directory.measurement,
    the directory entry's `weight`) when there is one, else the self-report; never above the
    self-report nor the cap, at least 1.  The measured weight is what peers saw the relay carry,
    so a relay cannot raise it by advertising more (docs/directory-design.md §6)."""
    claimed = min(desc.bandwidth, MAX_ADVERTISED_BANDWIDTH)
    if measured_kbps > 0:
        claimed = min(claimed, measured_kbps * 1000)
    return max(1, claimed)


def same_family(a: RelayDescriptor, b: RelayDescriptor) -> bool:
    """True if each relay lists the other's identity key (a one-sided claim proves nothing)."""
    return a.identity_pk in b.family and b.identity_pk in a.family


def subnet16(ip: str) -> str:
    """The network two relays must not share: IPv4 /16, IPv6 /32 (IPv4-mapped judged as IPv4)."""
    return subnet(ip, 16, 32)


def relay_subnets(desc: RelayDescriptor) -> frozenset[str]:
    return frozenset(subnet16(ip) for ip, _port in desc.link_addresses)


def relays_conflict(a: RelayDescriptor, b: RelayDescriptor, *, distinct_subnets: bool = True) -> bool:
    """May these two relays not share a circuit?  Same relay, mutual family, or (if enforced) a
    shared /16 between ANY of their link addresses."""
    if a.identity_pk == b.identity_pk or same_family(a, b):
        return True
    return distinct_subnets and bool(relay_subnets(a) & relay_subnets(b))


def exit_accepts_port(desc: RelayDescriptor, port: int | None) -> bool:
    """Could this relay's exit policy accept `port` for some destination (before DNS is done)?
    `port` None means "any exit".  Beyond the public-address summary, a policy that accepts the
    port for some range only (a test mesh's loopback exits: `accept 127.0.0.0/8:*`) counts if a
    host of that range really passes first-match on the port (so `reject *:25; accept *:*` does
    not accept 25, which runtime/path.py's first form got wrong)."""
    if not desc.is_exit:
        return False
    return port is None or _policy_accepts(desc.exit_policy, port)


def exit_accepts_udp_port(desc: RelayDescriptor, port: int) -> bool:
    """Could this relay's UDP exit policy (descriptor extension, issue 22) accept UDP to `port`?
    Judged as exit_accepts_port judges TCP; a relay without a UDP policy exits no UDP."""
    return desc.exits_udp and _policy_accepts(desc.exit_policy_udp, port)


@functools.lru_cache(maxsize=4096)  # few distinct policies; select_path asks once per relay
def _policy_accepts(text: str, port: int) -> bool:
    try:
        policy = ExitPolicy.parse(text)
    except PolicyError:
        return False
    if policy.allows_port_somewhere(port):
        return True
    # Summaries ignore rules for parts of the address space; such an exit still serves those
    # parts if an address there really passes first-match evaluation on this port.
    return any(policy.allows(host, port) for host in _sample_hosts(policy, port))


def _sample_hosts(policy: ExitPolicy, port: int) -> Iterator[str]:
    for rule in policy.rules:
        if not (rule.accept and rule.port_lo <= port <= rule.port_hi):
            continue
        if rule.private:
            yield from (("::1",) if rule.family == 6 else ("127.0.0.1", "::1"))
        elif rule.network is not None:
            net = rule.network
            yield str(net.network_address + (1 if net.num_addresses > 2 else 0))


def weighted_index(rng: Rng, weights: Sequence[int]) -> int:
    """Index i with probability weights[i] / sum(weights), exactly (integer arithmetic)."""
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative with a positive sum")
    r = rng.randbelow(total)
    for i, w in enumerate(weights):
        if r < w:
            return i
        r -= w
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- the request
@dataclass(frozen=True)
class PathRequest:
    """What the caller wants.  `via` forces hops 1..len(via) in order; `guards` (used only when
    `via` is empty) restricts hop 1 to those fingerprints: the first one that does not conflict
    with the exit (and leaves room for the middles) is hop 1; exits that conflict with every
    guard are not drawn.  With one hop the exit is hop 1 and must be a guard, unless `exit_fp`
    names it.  `avoid` relays are used only when nothing else works for that position.
    `distinct_subnets=False` is Tor's `EnforceDistinctSubnets 0`, for test meshes whose relays
    all listen on loopback.  `excluded` relays (ExcludeNodes, resolved by
    directory.node_restrictions) are never used at any position, even when named by `via` or
    `exit_fp`; `exits`, when not None, are the only relays allowed as exit (ExitNodes minus
    ExcludeExitNodes; `exit_fp` included), and `restriction` says so in words for the error."""

    hops: int = 3
    port: int | None = None
    exit_fp: str | None = None
    via: tuple[str, ...] = ()
    avoid: frozenset[str] = frozenset()
    guards: tuple[str, ...] = ()
    distinct_subnets: bool = True
    excluded: frozenset[str] = frozenset()
    exits: frozenset[str] | None = None
    restriction: str = ""
    # Measured weights (kB/s) by fingerprint, from the directory entries; absent or 0: self-report.
    weights: Mapping[str, int] | None = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "via", tuple(fp.upper() for fp in self.via))
        object.__setattr__(self, "guards", tuple(fp.upper() for fp in self.guards))
        object.__setattr__(self, "avoid", frozenset(fp.upper() for fp in self.avoid))
        if self.exit_fp is not None:
            object.__setattr__(self, "exit_fp", self.exit_fp.upper())


# --------------------------------------------------------------------------- the search
@dataclass(frozen=True, eq=False)
class _Relay:
    desc: RelayDescriptor
    fp: str
    weight: int
    nets: frozenset[str]


@dataclass(frozen=True)
class _Slot:
    kind: str  # "forced" (avoid ignored), "ordered" (caller's order), "weighted"
    pool: tuple[_Relay, ...]
    free_middle: bool = False


class _Search:
    def __init__(self, req: PathRequest, rng: Rng, slots: list[_Slot]) -> None:
        self.req, self.rng, self.slots, self.steps = req, rng, slots, 0
        self.free_left = [sum(s.free_middle for s in slots[i:]) for i in range(len(slots) + 1)]

    def _conflict(self, a: _Relay, b: _Relay) -> bool:
        if a is b or same_family(a.desc, b.desc):
            return True
        return self.req.distinct_subnets and not a.nets.isdisjoint(b.nets)

    def _order(self, slot: _Slot, cands: list[_Relay]) -> Iterator[_Relay]:
        if slot.kind == "forced":
            return iter(cands)
        preferred = [r for r in cands if r.fp not in self.req.avoid]
        fallback = [r for r in cands if r.fp in self.req.avoid]
        if slot.kind == "ordered":
            return chain(preferred, fallback)
        return chain(self._weighted_order(preferred), self._weighted_order(fallback))

    def _weighted_order(self, pool: list[_Relay]) -> Iterator[_Relay]:
        pool = list(pool)
        while pool:
            yield pool.pop(weighted_index(self.rng, [r.weight for r in pool]))

    def run(self, i: int, chosen: list[_Relay], excluded: frozenset[_Relay]) -> list[_Relay] | None:
        if i == len(self.slots):
            return chosen
        slot = self.slots[i]
        cands = [r for r in slot.pool if r not in excluded and not any(self._conflict(r, c) for c in chosen)]
        if len(cands) < max(1, self.free_left[i] if slot.free_middle else 1):
            return None
        failed: set[_Relay] = set()
        for relay in self._order(slot, cands):
            self.steps += 1
            if self.steps > MAX_SEARCH_STEPS:
                raise DirectoryError("path search budget exhausted: the directory is too constrained")
            # Middles are interchangeable: a relay that failed here cannot complete a later middle.
            below = excluded | failed if slot.free_middle else excluded
            found = self.run(i + 1, [*chosen, relay], frozenset(below))
            if found is not None:
                return found
            if slot.free_middle:
                failed.add(relay)
        return None


def _dedupe(relays: Sequence[RelayDescriptor], weights: Mapping[str, int] | None = None) -> dict[str, _Relay]:
    newest: dict[bytes, RelayDescriptor] = {}
    for desc in relays:
        old = newest.get(desc.identity_pk)
        if old is None or desc.published > old.published:
            newest[desc.identity_pk] = desc
    out = {}
    for desc in newest.values():
        measured = weights.get(desc.fingerprint, 0) if weights else 0
        out[desc.fingerprint] = _Relay(
            desc, desc.fingerprint, bandwidth_weight(desc, measured), relay_subnets(desc)
        )
    return out


def _lookup(by_fp: dict[str, _Relay], fp: str, what: str) -> _Relay:
    if fp not in by_fp:
        raise DirectoryError(f"unknown {what} relay {fp[:16]}")
    return by_fp[fp]


def select_path(relays: Sequence[RelayDescriptor], req: PathRequest, rng: Rng) -> list[RelayDescriptor]:
    """Pick `req.hops` relays, hop 1 first and the exit last; DirectoryError when impossible."""
    if not 1 <= req.hops <= MAX_HOPS:
        raise DirectoryError(f"hop count must be 1..{MAX_HOPS}")
    if req.port is not None and not 1 <= req.port <= 0xFFFF:
        raise DirectoryError("port must be 1..65535")
    if len(req.via) > req.hops - 1:
        room = req.hops - 1
        raise DirectoryError(f"--via names {len(req.via)} relays; a {req.hops}-hop path has room for {room}")
    by_fp = _dedupe(relays, req.weights)
    for fp in (*req.via, *((req.exit_fp,) if req.exit_fp else ())):
        if fp in req.excluded:
            raise DirectoryError(f"relay {fp[:16]} is excluded (ExcludeNodes)")
    if req.exit_fp is not None and req.exits is not None and req.exit_fp not in req.exits:
        raise RestrictedExitError(
            f"exit {req.exit_fp[:16]} is not allowed by {req.restriction or 'the node restrictions'}"
        )
    by_fp = {fp: r for fp, r in by_fp.items() if fp not in req.excluded}
    everyone = tuple(by_fp.values())
    use_guards = bool(req.guards) and not req.via
    guard_pool = tuple(by_fp[fp] for fp in dict.fromkeys(req.guards) if fp in by_fp)
    if use_guards and not guard_pool:
        raise DirectoryError("none of the given guards is in the directory")

    if req.exit_fp is not None:
        exit_slot = _Slot("forced", (_lookup(by_fp, req.exit_fp, "exit"),))
    else:
        candidates = guard_pool if req.hops == 1 and use_guards else everyone
        accepting = tuple(r for r in candidates if exit_accepts_port(r.desc, req.port))
        allowed = accepting if req.exits is None else tuple(r for r in accepting if r.fp in req.exits)
        exit_slot = _Slot("ordered" if req.hops == 1 and use_guards else "weighted", allowed)
        if not allowed:
            port_text = "any port" if req.port is None else f"port {req.port}"
            among = " among the guards" if exit_slot.kind == "ordered" else ""
            if accepting:
                raise RestrictedExitError(
                    f"no exit relay{among} allowed by {req.restriction or 'the node restrictions'}"
                    f" accepts {port_text}"
                )
            raise DirectoryError(f"no exit relay{among} accepts {port_text}")
    slots = [exit_slot]
    for hop in range(1, req.hops):  # hop 1 .. hops-1 (the exit is hop `hops`)
        if hop <= len(req.via):
            slots.append(_Slot("forced", (_lookup(by_fp, req.via[hop - 1], "--via"),)))
        elif hop == 1 and use_guards:
            slots.append(_Slot("ordered", guard_pool))
        else:
            slots.append(_Slot("weighted", everyone, free_middle=True))

    found = _Search(req, rng, slots).run(0, [], frozenset())
    if found is None:
        rules = "distinct relays, families" + (", /16 subnets" if req.distinct_subnets else "")
        where = " with the given guards" if use_guards else " with the given --via relays" if req.via else ""
        raise DirectoryError(f"no {req.hops}-hop path{where} satisfies the path rules ({rules})")
    return [r.desc for r in found[1:]] + [found[0].desc]
