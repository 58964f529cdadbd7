"""Measured bandwidth weights, sans-I/O: signed per-peer byte reports and their aggregation.

Why (docs/directory-design.md §3.4, §6): a self-reported bandwidth is free to inflate.  Each relay
signs, per UTC day, how many kilobytes it carried with each peer relay on authenticated links
(relay cells only); every source aggregates those reports into a weight per relay that no relay
and no coalition holding less than half of the reporters' weight can move:

    e_X(R) = κ · kbytes_X(R) · W / w(X) / 86.4          X's estimate of R's throughput (kB/s)
    m(R)   = the weight-w(X) lower median of {e_X(R)}     undefined if reporters hold < 2 % of W
    c(R)   = m(R)/ρ                                       what R carried, in weight
    w_d(R) = max(1, min(advertised/1000, 2·w_{d-1}(R)))   if c(R) ≥ θ·w_{d-1}(R)  (θ = 3/4)
             max(1, min(advertised/1000, c(R)))           otherwise
             new relays, or m undefined: min(advertised/1000, 50)

ρ is the network's load: the weight-weighted lower median of m(X)/w_{d-1}(X) over all measured
relays, an exit's m first divided by 1 + W/W_exit (its position draws that much more traffic
per unit of weight, `exit_scale`).  A relay that carries its weight's share is not
saturated and may grow toward its self-report; one that does not sinks to what it carried.
What byte counts cannot tell apart: a relay saturated at capacity C from one with spare
capacity carrying C at the network's load ρ; so a liar settles between C/ρ and 2C/ρ.

    report = "OMMR" ‖ version u8 (1) ‖ reporter_pk (32) ‖ day u32 ‖ u16 n (≤ 512)
             ‖ n × (peer fp (20) ‖ kbytes u32) ‖ signature (64)       fps strictly ascending
    signature = Ed25519(reporter, "onionmesh measurement v1\\x00" ‖ all preceding bytes)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from onionmesh.crypto.keys import IdentityKey, fingerprint, verify_signature
from onionmesh.errors import RemoteProtocolError, Truncated
from onionmesh.wire.buffer import Buffer

MAGIC = b"OMMR"
VERSION = 1
CONTEXT = b"onionmesh measurement v1\x00"
MAX_PEERS = 512
FP_LEN = 20
SIG_LEN = 64
U32_MAX = 2**32 - 1
MAX_REPORT_LEN = 4 + 1 + 32 + 4 + 2 + MAX_PEERS * (FP_LEN + 4) + SIG_LEN  # 12,403 bytes
KAPPA = 0.75  # a relayed byte: 4 ordered position pairs share a link, 3 positions per path (§6)
# m(R) needs reporters holding this share of all weight.  Reports list a keyed random sample of
# MAX_PEERS peers, so at 10,000 relays a relay is in about 5 % of its peers' reports: 2 % still
# means hundreds of reporters, drawn at random (not chosen by R or by them).
MIN_REPORTER_SHARE = 0.02
MIN_PEER_BYTES = 1000  # peers below 1 kB that day are not listed
NEW_RELAY_WEIGHT = 50  # kB/s
GROWTH = 2
THETA = 0.75  # carried at least this share of its weight's worth: not saturated, may grow


def kbytes(nbytes: int) -> int:
    """Bytes to the report's unit: /1000, rounded down, saturating at u32."""
    return min(U32_MAX, max(0, nbytes) // 1000)


@dataclass(frozen=True)
class Report:
    reporter_pk: bytes
    day: int
    peers: tuple[tuple[bytes, int], ...]  # (peer fingerprint, kbytes), fps strictly ascending
    signature: bytes = b""

    @property
    def reporter_fp(self) -> bytes:
        return bytes.fromhex(fingerprint(self.reporter_pk))

    def _signed(self) -> bytes:
        buf = Buffer().push_bytes(MAGIC).push_u8(VERSION).push_bytes(self.reporter_pk)
        buf.push_u32(self.day).push_u16(len(self.peers))
        for fp, kb in self.peers:
            buf.push_bytes(fp).push_u32(kb)
        return buf.getvalue()

    def encode(self) -> bytes:
        return self._signed() + self.signature


def _check_peers(peers: tuple[tuple[bytes, int], ...]) -> None:
    if len(peers) > MAX_PEERS:
        raise RemoteProtocolError("too many peers in a measurement report")
    prev = b""
    for fp, kb in peers:
        if len(fp) != FP_LEN or not 0 <= kb <= U32_MAX:
            raise RemoteProtocolError("bad measurement entry")
        if fp <= prev:
            raise RemoteProtocolError("measurement peers not strictly ascending")
        prev = fp


def pick_key(reporter_fp: bytes, day: int, peer_fp: bytes) -> bytes:
    """Which peers a report lists when it has more than MAX_PEERS: the smallest keys.  A keyed
    uniform sample, not the largest peers: every reporter's largest peers are the same big
    relays, and a list of them would leave every small relay unmeasured."""
    data = reporter_fp + day.to_bytes(4, "big") + peer_fp
    return hashlib.blake2b(data, digest_size=8, person=b"om-measure-pick").digest()


def sign_report(identity: IdentityKey, day: int, counts: Mapping[bytes, int]) -> Report:
    """The day's report from per-peer byte counts: peers with ≥ MIN_PEER_BYTES, own fp excluded,
    a keyed sample of MAX_PEERS of them if more (`pick_key`)."""
    own = bytes.fromhex(identity.fingerprint)
    listed = [fp for fp, n in counts.items() if fp != own and n >= MIN_PEER_BYTES]
    if len(listed) > MAX_PEERS:
        listed = sorted(listed, key=lambda fp: pick_key(own, day, fp))[:MAX_PEERS]
    peers = tuple(sorted((fp, kbytes(counts[fp])) for fp in listed))
    _check_peers(peers)
    unsigned = Report(identity.public, day, peers)
    return Report(identity.public, day, peers, identity.sign(CONTEXT, unsigned._signed()))


def decode_report(data: bytes) -> Report:
    """Parse and verify one report; RemoteProtocolError (or CryptoError) on anything else.
    Bounded: the count is read before anything it sizes, and a report is ≤ MAX_REPORT_LEN."""
    if len(data) > MAX_REPORT_LEN:
        raise RemoteProtocolError("measurement report too long")
    try:
        buf = Buffer(data)
        if buf.pull_bytes(4) != MAGIC:
            raise RemoteProtocolError("not a measurement report")
        if buf.pull_u8() != VERSION:
            raise RemoteProtocolError("unknown measurement report version")
        reporter_pk, day, n = buf.pull_bytes(32), buf.pull_u32(), buf.pull_u16()
        if n > MAX_PEERS:
            raise RemoteProtocolError("too many peers in a measurement report")
        peers = tuple((buf.pull_bytes(FP_LEN), buf.pull_u32()) for _ in range(n))
        signature = buf.pull_bytes(SIG_LEN)
        buf.expect_end()
    except Truncated as exc:
        raise RemoteProtocolError("truncated measurement report") from exc
    _check_peers(peers)
    report = Report(reporter_pk, day, peers, signature)
    verify_signature(reporter_pk, CONTEXT, report._signed(), signature)
    return report


def weighted_median(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The lower weighted median of (value, weight) pairs: the smallest value whose cumulative
    weight reaches half the total.  Values held by less than half of the weight cannot move it
    outside the range of the others' values."""
    items = sorted((v, w) for v, w in pairs if w > 0)
    total = sum(w for _, w in items)
    if total <= 0:
        return None
    acc = 0.0
    for value, weight in items:
        acc += weight
        if 2 * acc >= total:
            return value
    return items[-1][0]


def measured(
    reports: Iterable[Report],
    prev: Mapping[bytes, int],
    kappa: float = KAPPA,
    eligible: Callable[[bytes, bytes], bool] | None = None,
    min_share: float = MIN_REPORTER_SHARE,
) -> dict[bytes, float]:
    """m(R) for every relay some eligible reporters measured, in kB/s (rules 1-3 of §6).
    `prev` = yesterday's weights by fingerprint (reporters need one > 0); `eligible(X, R)` excludes
    pairs (family, same /16, younger than 2 days in the view), default all pairs;
    `min_share`: below it, m(R) is undefined."""
    total_w = sum(w for w in prev.values() if w > 0)
    if total_w <= 0:
        return {}
    per_relay: dict[bytes, list[tuple[float, float]]] = {}
    seen: set[bytes] = set()
    for report in reports:
        x = report.reporter_fp
        wx = prev.get(x, 0)
        if wx <= 0 or x in seen:  # one report per reporter: the caller keeps the newest
            continue
        seen.add(x)
        for r, kb in report.peers:
            if r == x or (eligible is not None and not eligible(x, r)):
                continue
            estimate = kappa * kb * total_w / wx / 86.4
            per_relay.setdefault(r, []).append((estimate, wx))
    out: dict[bytes, float] = {}
    for r, pairs in per_relay.items():
        if sum(w for _, w in pairs) < min_share * total_w:
            continue
        m = weighted_median(pairs)
        if m is not None:
            out[r] = m
    return out


def load_factor(
    m: Mapping[bytes, float], prev: Mapping[bytes, int], members: Iterable[bytes] | None = None
) -> float:
    """ρ: the weight-weighted lower median of m(R)/w_{d-1}(R) over the measured `members` (default
    all); 1 if nothing was measured."""
    pool = m if members is None else [r for r in members if r in m]
    rho = weighted_median((m[r] / prev[r], prev[r]) for r in pool if prev.get(r, 0) > 0)
    return rho if rho is not None and rho > 0 else 1.0


def exit_scale(prev: Mapping[bytes, int], exits: Iterable[bytes]) -> float:
    """How many more bytes per unit of weight peers attribute to an exit than to a non-exit.

    Paths draw hop 1 and the middle among all relays and the exit among exits (path_selection);
    peers attribute bytes on the links they opened (hop 1 its middle, the middle its exit), so a
    non-exit R is seen as a middle (∝ w(R)/W) and an exit as a middle and an exit
    (∝ w(R)/W + w(R)/W_exit): the factor 1 + W/W_exit, computed from yesterday's weights."""
    total = sum(w for w in prev.values() if w > 0)
    total_exit = sum(prev.get(r, 0) for r in set(exits))
    return 1.0 + total / total_exit if total_exit > 0 else 1.0


def next_weights(
    advertised: Mapping[bytes, int],
    prev: Mapping[bytes, int],
    m: Mapping[bytes, float],
    exits: Iterable[bytes] = (),
) -> dict[bytes, int]:
    """Rule 4 of §6: today's weight (kB/s) for every relay with a self-report (bytes/s).

    An exit's m is first divided by `exit_scale` (its position draws more traffic per unit of
    weight).  `carried` = m(R)/ρ is the weight R's measured throughput is worth at the network's
    load ρ (one median over all relays, so a coalition holding less than half of the weight
    cannot set it).  A relay that carried at least THETA of its weight's share may grow toward
    its self-report, at most GROWTH x a day; one that did not gets what it carried."""
    exit_set = set(exits)
    scale = exit_scale(prev, exit_set)
    norm = {r: (v / scale if r in exit_set else v) for r, v in m.items()}
    rho = load_factor(norm, prev, advertised)
    out: dict[bytes, int] = {}
    for r, adv_bytes in advertised.items():
        cap = max(1, adv_bytes // 1000)
        before = prev.get(r, 0)
        if before <= 0 or r not in norm:  # new, or unmeasured: 50 kB/s, never above 2x yesterday
            out[r] = max(1, min(cap, NEW_RELAY_WEIGHT, GROWTH * before if before > 0 else NEW_RELAY_WEIGHT))
            continue
        carried = norm[r] / rho
        grown = GROWTH * before if carried >= THETA * before else carried
        out[r] = max(1, min(cap, int(grown)))
    return out
