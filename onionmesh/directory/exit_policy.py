"""Exit policies in Tor's ``ExitPolicy`` syntax: parsing, canonical text, matching, port summaries.

Owns the rule grammar (``accept|reject|accept6|reject6 ADDR[/MASK][:PORTS]``), "private" rules
(Tor's ``ExitPolicyRejectPrivate``; the address set is special_addresses'), first-match evaluation
of a resolved address and port, and the microdescriptor-style port summary clients use to pick
an exit before a hostname is resolved.  IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are
matched as the IPv4 address they map to, since that is where a dual-stack socket connects.

Not in this module: DNS resolution (the exit resolves first, then asks allows()).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from onionmesh.directory.special_addresses import (
    SPECIAL_NETWORKS,
    IPAddress,
    IPNetwork,
    as_address,
    is_loopback_address,
    is_private_address,
)
from onionmesh.errors import PolicyError

__all__ = [
    "DEFAULT_EXIT_POLICY", "PRIVATE_NETWORKS", "ExitPolicy", "PolicyRule", "is_loopback_address",
    "is_private_address", "summary_allows",
]  # fmt: skip

MAX_POLICY_CHARS = 4096
MAX_POLICY_RULES = 256
# A port counts as rejected in summaries once reject rules cover a /7 worth of public addresses
# (Tor's policy_summarize cutoff); smaller rejects still leave the port "accepted somewhere".
_REJECT_CUTOFF_PREFIX = 7
_WS = " \t\r\n\f\v"

# Addresses refused whole by "private" rules; IPv6 forms carrying an IPv4 address are judged by
# it (special_addresses.py has each range with its RFC).
PRIVATE_NETWORKS: tuple[IPNetwork, ...] = SPECIAL_NETWORKS
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

DEFAULT_EXIT_POLICY: str = (
    "reject *:25,119,135-139,445,563,1214,4661-4666,6346-6429,6699,6881-6999; accept *:*"
)

_COMMA_SPLIT = re.compile(r",(?=\s*(?:accept|reject)6?\b)", re.IGNORECASE | re.ASCII)
_LINE_SPLIT = re.compile(r"[;\r\n]")
_RULE_RE = re.compile(r"(accept|reject)(6?)\s+(.*)", re.IGNORECASE | re.ASCII | re.DOTALL)
_PORT_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
_DOTTED_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def _match_form(addr: IPAddress | str) -> IPAddress:
    ip = as_address(addr)
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


@functools.lru_cache(maxsize=1024)
def _only_private(net: IPNetwork) -> bool:
    if net.num_addresses == 1:
        return is_private_address(net.network_address)
    return any(net.subnet_of(p) for p in SPECIAL_NETWORKS if p.version == net.version)


def _ports_text(lo: int, hi: int) -> str:
    if (lo, hi) == (1, 65535):
        return "*"
    return str(lo) if lo == hi else f"{lo}-{hi}"


@dataclass(frozen=True)
class PolicyRule:
    """One expanded rule: a single port range.  ``network=None`` with ``private=False`` is a
    wildcard; ``family`` (4, 6 or None = both) is the only family matched and is filled in from
    ``network`` when one is given."""

    accept: bool
    network: IPNetwork | None = None
    family: int | None = None
    private: bool = False
    port_lo: int = 1
    port_hi: int = 65535

    def __post_init__(self) -> None:
        if self.family not in (None, 4, 6):
            raise PolicyError(f"bad address family {self.family!r}")
        if self.network is not None:
            if self.private:
                raise PolicyError("a rule is either 'private' or a network, not both")
            if isinstance(self.network, ipaddress.IPv6Network) and self.network.subnet_of(_MAPPED):
                raise PolicyError("write IPv4-mapped networks in IPv4 form")
            if self.family is None:
                object.__setattr__(self, "family", self.network.version)
            elif self.family != self.network.version:
                raise PolicyError(f"family {self.family} does not match network {self.network}")
        if self.private and self.family == 4:
            raise PolicyError("'private' rules cover both families or IPv6 only")
        if not 1 <= self.port_lo <= self.port_hi <= 65535:
            raise PolicyError(f"bad port range '{self.port_lo}-{self.port_hi}'")

    def matches(self, addr: IPAddress | str, port: int) -> bool:
        """Does this rule apply to a connection to ``addr``:``port``?"""
        if not self.port_lo <= port <= self.port_hi:
            return False
        ip = _match_form(addr)
        if self.family is not None and ip.version != self.family:
            return False
        if self.private:
            return is_private_address(ip)
        return self.network is None or ip in self.network

    def __str__(self) -> str:
        verb = "accept" if self.accept else "reject"
        if self.private:
            addr = "private"
            verb += "6" if self.family == 6 else ""
        elif self.network is None:
            addr = {None: "*", 4: "*4", 6: "*6"}[self.family]
        else:
            net = self.network
            host = str(net.network_address) if net.version == 4 else f"[{net.network_address}]"
            addr = host if net.prefixlen == net.max_prefixlen else f"{host}/{net.prefixlen}"
        return f"{verb} {addr}:{_ports_text(self.port_lo, self.port_hi)}"


def _fail(rule: str, message: str) -> PolicyError:
    shown = rule if len(rule) <= 100 else rule[:97] + "..."
    return PolicyError(f"{message} in exit policy rule {shown!r}")


def _split_rules(text: str) -> Iterator[str]:
    for piece in _COMMA_SPLIT.split(text):
        for chunk in _LINE_SPLIT.split(piece):
            chunk = chunk.strip(_WS)
            if chunk:
                yield chunk


def _parse_ports(text: str, rule: str) -> list[tuple[int, int]]:
    text = text.strip(_WS)
    if text == "*":
        return [(1, 65535)]
    ranges = []
    for item in text.split(","):
        item = item.strip(_WS)
        match = _PORT_RE.fullmatch(item)
        if match is None:
            raise _fail(rule, f"bad port range {item!r}")
        lo = int(match[1])
        hi = int(match[2]) if match[2] else lo
        if not 1 <= lo <= hi <= 65535:
            raise _fail(rule, f"bad port range {item!r}")
        ranges.append((lo, hi))
    return ranges


def _parse_mask(mask: str, version: int, rule: str) -> int:
    max_bits = 32 if version == 4 else 128
    if mask.isascii() and mask.isdigit() and len(mask) <= 3 and int(mask) <= max_bits:
        return int(mask)
    if version == 4 and _DOTTED_RE.fullmatch(mask):
        try:
            inverted = int(ipaddress.IPv4Address(mask)) ^ 0xFFFFFFFF
        except ValueError:
            inverted = 1 << 40
        if inverted & (inverted + 1) == 0:  # host part all ones: a contiguous netmask
            return 32 - inverted.bit_length()
    raise _fail(rule, f"bad mask {mask!r}")


def _parse_addr(addr: str, only6: bool, rule: str) -> tuple[bool, IPNetwork | None, int | None]:
    """(private, network, family) for the address part of a rule."""
    host, slash, mask = addr.partition("/")
    keyword = host.lower()
    if keyword in ("*", "*4", "*6", "private"):
        if slash:
            raise _fail(rule, f"no mask allowed after {host!r}")
        if keyword == "private":
            return True, None, 6 if only6 else None
        if only6 and keyword == "*4":
            raise _fail(rule, "accept6/reject6 cannot use '*4'")
        return False, None, 6 if only6 else {"*": None, "*4": 4, "*6": 6}[keyword]
    ip: IPAddress
    if host.startswith("[") and host.endswith("]"):
        try:
            if "%" in host:
                raise ValueError("scoped address")
            ip = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _fail(rule, f"bad IPv6 address {host!r}") from None
    else:
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            raise _fail(rule, f"bad address {host!r}") from None
        if only6:
            raise _fail(rule, "accept6/reject6 needs an IPv6 address")
    prefix = _parse_mask(mask, ip.version, rule) if slash else ip.max_prefixlen
    net: IPNetwork
    if ip.version == 4:
        net = ipaddress.IPv4Network((int(ip), prefix), strict=False)
    else:
        net = ipaddress.IPv6Network((int(ip), prefix), strict=False)
        if net.subnet_of(_MAPPED):
            if only6:
                raise _fail(rule, "IPv4-mapped address in accept6/reject6")
            net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, prefix - 96))
    return False, net, net.version


def _parse_rule(text: str) -> list[PolicyRule]:
    match = _RULE_RE.fullmatch(text)
    if match is None:
        raise _fail(text, "expected 'accept', 'reject', 'accept6' or 'reject6' then an address")
    accept, only6, body = match[1].lower() == "accept", match[2] == "6", match[3].strip(_WS)
    if body.startswith("["):
        close = body.find("]")
        if close < 0:
            raise _fail(text, "unclosed '['")
        mask_part, sep, ports = body[close + 1 :].partition(":")
        mask_part = mask_part.strip(_WS)
        if mask_part and not mask_part.startswith("/"):
            raise _fail(text, f"unexpected {mask_part!r} after ']'")
        addr = body[: close + 1] + mask_part
    else:
        if body.count(":") > 1:
            raise _fail(text, "IPv6 addresses must be written in [brackets]")
        addr, sep, ports = body.partition(":")
    addr = addr.strip(_WS)
    if not addr or any(c in _WS for c in addr):
        raise _fail(text, f"bad address {addr!r}")
    private, network, family = _parse_addr(addr, only6, text)
    port_ranges = _parse_ports(ports, text) if sep else [(1, 65535)]
    return [PolicyRule(accept, network, family, private, lo, hi) for lo, hi in port_ranges]


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


@dataclass(frozen=True)
class ExitPolicy:
    """An ordered rule list; the first rule matching a connection decides it."""

    rules: tuple[PolicyRule, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if len(self.rules) > MAX_POLICY_RULES:
            raise PolicyError(f"exit policy has more than {MAX_POLICY_RULES} rules")
        if not all(isinstance(rule, PolicyRule) for rule in self.rules):
            raise PolicyError("exit policy rules must be PolicyRule objects")

    @classmethod
    def parse(cls, text: str, *, reject_private: bool = False) -> ExitPolicy:
        """Parse Tor-syntax policy text; rules are separated by ';', newlines, or a comma followed
        by a keyword.  Port lists expand to one rule per range.  ``reject_private`` prepends
        ``reject private:*`` (Tor's ExitPolicyRejectPrivate).  Raises PolicyError."""
        if not isinstance(text, str):
            raise PolicyError("exit policy must be text")
        if len(text) > MAX_POLICY_CHARS:
            raise PolicyError(f"exit policy longer than {MAX_POLICY_CHARS} characters")
        rules = [PolicyRule(accept=False, private=True)] if reject_private else []
        for chunk in _split_rules(text):
            rules.extend(_parse_rule(chunk))
            if len(rules) > MAX_POLICY_RULES:
                raise PolicyError(f"exit policy has more than {MAX_POLICY_RULES} rules")
        return cls(tuple(rules))

    @classmethod
    def reject_all(cls) -> ExitPolicy:
        return cls((PolicyRule(accept=False),))

    def allows(self, addr: IPAddress | str, port: int) -> bool:
        """May this exit connect to the resolved ``addr``:``port``?  First matching rule wins.

        No matching rule means *reject*.  Tor instead appends its default policy and a final
        ``accept *:*``; onionmesh fails closed, so ``accept *:80`` is an allowlist and a forgotten
        final rule never turns a relay into an open exit.  Operators wanting Tor's behaviour use
        DEFAULT_EXIT_POLICY explicitly.  Raises ValueError if ``addr`` is unparsable text."""
        ip = as_address(addr)
        for rule in self.rules:
            if rule.matches(ip, port):
                return rule.accept
        return False

    def allows_port_somewhere(self, port: int, family: int | None = None) -> bool:
        """Might this exit accept *most* public addresses on ``port`` (in ``family``, or either
        family if None)?  Conservative like Tor's summaries: rules covering only private addresses
        are ignored, accepts count only when they cover every address, and rejects count once
        they add up to a /7 of the family's address space."""
        families = (4, 6) if family is None else (family,)
        return any(self._port_verdict(port, fam) for fam in families)

    def _port_verdict(self, port: int, family: int) -> bool:
        bits = 32 if family == 4 else 128
        rejected = 0
        for rule in self.rules:
            if not rule.port_lo <= port <= rule.port_hi or rule.private:
                continue
            if rule.family not in (None, family):
                continue
            net = rule.network
            if net is not None and _only_private(net):
                continue
            if rule.accept:
                if net is None or net.prefixlen == 0:
                    return True
            else:
                rejected += (1 << bits) if net is None else net.num_addresses
                if rejected >= 1 << (bits - _REJECT_CUTOFF_PREFIX):
                    return False
        return False

    def summary(self, family: int | None = None) -> str:
        """Microdescriptor-style summary of allows_port_somewhere: the shorter of
        ``accept PORTS`` and ``reject PORTS``; ``reject 1-65535`` / ``accept 1-65535`` at the ends."""
        bounds = sorted({1, 65536} | {r.port_lo for r in self.rules} | {r.port_hi + 1 for r in self.rules})
        accepted: list[tuple[int, int]] = []
        for lo, nxt in itertools.pairwise(bounds):
            if self.allows_port_somewhere(lo, family):
                if accepted and accepted[-1][1] == lo - 1:
                    accepted[-1] = (accepted[-1][0], nxt - 1)
                else:
                    accepted.append((lo, nxt - 1))
        if not accepted:
            return "reject 1-65535"
        rejected, start = [], 1
        for lo, hi in accepted:
            if lo > start:
                rejected.append((start, lo - 1))
            start = hi + 1
        if start <= 65535:
            rejected.append((start, 65535))
        if not rejected:
            return "accept 1-65535"
        accept_text, reject_text = "accept " + _ranges_text(accepted), "reject " + _ranges_text(rejected)
        return reject_text if len(reject_text) < len(accept_text) else accept_text

    def __str__(self) -> str:
        return "; ".join(str(rule) for rule in self.rules)


def summary_allows(summary: str, port: int) -> bool:
    """Evaluate a summary as produced by ExitPolicy.summary() (e.g. from a microdescriptor)."""
    verb, _, ports = summary.strip(_WS).partition(" ")
    if verb not in ("accept", "reject"):
        raise PolicyError(f"bad policy summary {summary[:100]!r}")
    inside = any(lo <= port <= hi for lo, hi in _parse_ports(ports, summary))
    return inside if verb == "accept" else (not inside and 1 <= port <= 65535)
