"""Which relays a client may use where: Tor's ExitNodes, ExcludeNodes, ExcludeExitNodes, StrictNodes.

Syntax (Tor's routerset, tor(1) "ExitNodes"): a comma-separated list of
* `{cc}`: every relay whose address the CLIENT's GeoIP database puts in country cc; `{??}` is
  "unknown" (no database answer, private addresses);
* `$FP` or bare 40-hex fingerprint (`$FP~name` / `$FP=name` accepted, the name ignored);
* an IPv4/IPv6 address or CIDR network (`10.1.2.3`, `192.0.2.0/24`, `[2001:db8::]/32`).
Relay nicknames are not accepted: anyone can choose any nickname.

Meanings, as in Tor:
* ExitNodes: the exit of every circuit that carries user streams is one of these relays.  Never
  falls back to other exits (Tor does not either).
* ExcludeExitNodes: never the exit.
* ExcludeNodes: onionmesh never uses these relays at any position of any circuit it builds, with
  or without StrictNodes (stricter than Tor, which still uses them for a few internal circuits
  when StrictNodes is 0).  ExcludeNodes wins over ExitNodes and over `--via`/`--exit`.
* StrictNodes: with it, a per-stream request that allowed fallback (SOCKS username
  `exit=...;fallback`, client/README.md) is still refused; without it, such a stream whose
  countries have no exit for its port goes through any permitted exit, and the log says so.
* Tor's GeoIPExcludeUnknown "auto": when ExcludeNodes names a country, relays of unknown country
  ({??}) are excluded everywhere; when only ExcludeExitNodes does, they are not used as exits.

Where a relay has several addresses, its country (shown, and matched by ExitNodes) is that of its
first address; ExcludeNodes/ExcludeExitNodes match if ANY of its addresses matches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.geoip import UNKNOWN
from onionmesh.errors import RestrictionError

MAX_ENTRIES = 1024
MAX_TEXT = 64 * 1024
_HEX = frozenset("0123456789abcdefABCDEF")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RouterSet:
    """A parsed node list: countries, fingerprints and networks."""

    countries: frozenset[str] = frozenset()
    fingerprints: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> RouterSet:
        if len(text) > MAX_TEXT:
            raise RestrictionError(f"node list longer than {MAX_TEXT} characters")
        countries: set[str] = set()
        fps: set[str] = set()
        nets: list[Network] = []
        items = [item.strip() for item in text.split(",")]
        items = [item for item in items if item]
        if len(items) > MAX_ENTRIES:
            raise RestrictionError(f"node list has more than {MAX_ENTRIES} entries")
        for item in items:
            if item.startswith("{"):
                countries.add(_country(item))
            elif (fp := _fingerprint(item)) is not None:
                fps.add(fp)
            else:
                nets.append(_network(item))
        return cls(frozenset(countries), frozenset(fps), tuple(dict.fromkeys(nets)))

    def __bool__(self) -> bool:
        return bool(self.countries or self.fingerprints or self.networks)

    def __str__(self) -> str:
        """Canonical text (parses back to an equal set): countries, fingerprints, networks."""
        parts = [f"{{{cc.lower()}}}" for cc in sorted(self.countries)]
        parts += [f"${fp}" for fp in sorted(self.fingerprints)]
        parts += [_net_text(n) for n in self.networks]
        return ",".join(parts)

    def matches(self, desc: RelayDescriptor, country_of: Callable[[str], str], *, any_address: bool) -> bool:
        """Is the relay in the set?  Countries are judged on its first address (or on any address
        when `any_address`: the exclusion lists), networks on any of its addresses."""
        if desc.fingerprint.upper() in self.fingerprints:
            return True
        addresses = [ip for ip, _port in desc.link_addresses]
        if self.countries:
            judged = addresses if any_address else addresses[:1]
            codes = {country_of(ip) for ip in judged} if judged else {UNKNOWN}
            if codes & self.countries:
                return True
        return any(_in(ip, net) for ip in addresses for net in self.networks)


def _country(item: str) -> str:
    if not item.endswith("}") or len(item) != 4:
        raise RestrictionError(f"country must be {{cc}} (two letters or ??), got {item[:12]!r}")
    cc = item[1:3].upper()
    if cc != UNKNOWN and not (cc.isascii() and cc.isalpha()):
        raise RestrictionError(f"country must be {{cc}} (two letters or ??), got {item[:12]!r}")
    return cc


def _fingerprint(item: str) -> str | None:
    text = item[1:] if item.startswith("$") else item
    for sep in ("~", "="):
        text = text.split(sep, 1)[0]
    if len(text) == 40 and set(text) <= _HEX:
        return text.upper()
    if item.startswith("$"):
        raise RestrictionError(f"fingerprint must be 40 hex digits, got {item[:48]!r}")
    return None


def _network(item: str) -> Network:
    text = item.replace("[", "").replace("]", "")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise RestrictionError(
            f"not a {{country}}, $fingerprint, address or network: {item[:48]!r} "
            "(relay nicknames are not accepted)"
        ) from None


def _net_text(net: Network) -> str:
    full = net.prefixlen == net.max_prefixlen
    return str(net.network_address) if full else str(net)


def _in(ip: str, net: Network) -> bool:
    try:
        addr = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None and net.version == 4:
        addr = addr.ipv4_mapped
    return addr.version == net.version and addr in net


@dataclass(frozen=True)
class Allowed:
    """The restrictions applied to one relay list: fingerprints never used, and (None: any) the
    fingerprints allowed as exit."""

    excluded: frozenset[str] = frozenset()
    exits: frozenset[str] | None = None


@dataclass(frozen=True)
class NodeRestrictions:
    """ExitNodes / ExcludeNodes / ExcludeExitNodes / StrictNodes; `fallback` is the per-stream
    permission to use any exit when ExitNodes cannot serve the port (ignored under StrictNodes)."""

    exit_nodes: RouterSet = field(default_factory=RouterSet)
    exclude_nodes: RouterSet = field(default_factory=RouterSet)
    exclude_exit_nodes: RouterSet = field(default_factory=RouterSet)
    strict_nodes: bool = False
    fallback: bool = False

    @classmethod
    def parse(
        cls,
        exit_nodes: str = "",
        exclude_nodes: str = "",
        exclude_exit_nodes: str = "",
        strict_nodes: bool = False,
    ) -> NodeRestrictions:
        return cls(
            RouterSet.parse(exit_nodes),
            RouterSet.parse(exclude_nodes),
            RouterSet.parse(exclude_exit_nodes),
            strict_nodes,
        )

    def __bool__(self) -> bool:
        return bool(self.exit_nodes or self.exclude_nodes or self.exclude_exit_nodes)

    def with_stream(self, stream: StreamRestriction | None) -> NodeRestrictions:
        """These restrictions narrowed by one stream's request: its exits replace ExitNodes, its
        exclusions add to ExcludeExitNodes; the global exclusions always stay."""
        if stream is None:
            return self
        return replace(
            self,
            exit_nodes=stream.exit_nodes if stream.exit_nodes else self.exit_nodes,
            exclude_exit_nodes=_union(self.exclude_exit_nodes, stream.exclude_exit_nodes),
            fallback=stream.fallback and not self.strict_nodes,
        )

    def resolve(self, relays: Iterable[RelayDescriptor], country_of: Callable[[str], str]) -> Allowed:
        """Apply to a relay list: which fingerprints are never used, which may be exits."""
        unknown_out = bool(self.exclude_nodes.countries)  # GeoIPExcludeUnknown auto
        unknown_no_exit = unknown_out or bool(self.exclude_exit_nodes.countries)
        excluded, exits = set(), set()
        for desc in relays:
            fp = desc.fingerprint.upper()
            unknown = UNKNOWN in _codes(desc, country_of)
            if self.exclude_nodes.matches(desc, country_of, any_address=True) or (unknown_out and unknown):
                excluded.add(fp)
                continue
            if self.exclude_exit_nodes.matches(desc, country_of, any_address=True) or (
                unknown_no_exit and unknown
            ):
                continue
            if not self.exit_nodes or self.exit_nodes.matches(desc, country_of, any_address=False):
                exits.add(fp)
        if not self.exit_nodes and not self.exclude_exit_nodes and not unknown_no_exit:
            return Allowed(frozenset(excluded), None)
        return Allowed(frozenset(excluded), frozenset(exits))

    def describe(self) -> str:
        """In words, for refusals and logs (countries and counts only: no addresses)."""
        parts = []
        if self.exit_nodes:
            parts.append(f"ExitNodes {_brief(self.exit_nodes)}")
        if self.exclude_exit_nodes:
            parts.append(f"ExcludeExitNodes {_brief(self.exclude_exit_nodes)}")
        if self.exclude_nodes:
            parts.append(f"ExcludeNodes {_brief(self.exclude_nodes)}")
        return "; ".join(parts) or "no node restrictions"


def _codes(desc: RelayDescriptor, country_of: Callable[[str], str]) -> set[str]:
    return {country_of(ip) for ip, _port in desc.link_addresses} or {UNKNOWN}


def _union(a: RouterSet, b: RouterSet) -> RouterSet:
    return RouterSet(a.countries | b.countries, a.fingerprints | b.fingerprints, (*a.networks, *b.networks))


def _brief(rs: RouterSet) -> str:
    parts: Sequence[str] = [f"{{{cc.lower()}}}" for cc in sorted(rs.countries)]
    extra = len(rs.fingerprints) + len(rs.networks)
    return ",".join([*parts, f"+{extra} relays/networks"] if extra else parts)


# ----------------------------------------------------------------------------- per stream
USERNAME_PREFIX = "exit="


@dataclass(frozen=True)
class StreamRestriction:
    """What a SOCKS username asks for one stream's circuit (client/README.md):

    `exit=<node list>[;exclude=<node list>][;fallback][;<anything>]` — `exit=` takes an
    ExitNodes list (`{de}`, `{de},{fr}`, `$FP`...), `exclude=` adds exits to avoid, `fallback`
    allows any exit when none of those serves the port (never under StrictNodes), and anything
    else after a `;` only isolates (different usernames never share a circuit)."""

    exit_nodes: RouterSet = field(default_factory=RouterSet)
    exclude_exit_nodes: RouterSet = field(default_factory=RouterSet)
    fallback: bool = False

    @classmethod
    def from_username(cls, username: bytes | str | None) -> StreamRestriction | None:
        """None when the username asks for nothing (any username not starting with `exit=`);
        RestrictionError when it starts with `exit=` but does not parse (refused, not ignored)."""
        if username is None:
            return None
        if isinstance(username, bytes):
            try:
                username = username.decode("utf-8")
            except UnicodeDecodeError:
                return None
        if not username.lower().startswith(USERNAME_PREFIX):
            return None
        fields = username.split(";")
        exits = RouterSet.parse(fields[0][len(USERNAME_PREFIX) :])
        exclude, fallback = RouterSet(), False
        for extra in fields[1:]:
            key = extra.strip().lower()
            if key == "fallback":
                fallback = True
            elif key.startswith("exclude="):
                exclude = RouterSet.parse(extra.strip()[len("exclude=") :])
        if not exits:
            raise RestrictionError("exit= names no relay or country")
        return cls(exits, exclude, fallback)
