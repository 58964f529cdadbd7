"""Prometheus metrics, pull model: a /metrics endpoint like Tor's MetricsPort (anchors §1.10).

Nothing is counted on the hot path for this module: the collectors read the node's existing
counters and sizes when a scrape arrives.  Like Tor's MetricsPort, the output holds counters
and gauges only: no destinations, no peer addresses, no fingerprints; every label value comes
from a fixed vocabulary.

* `Metric`, `ScrapeCollector` and `render()`: the families read for one scrape, written in the
  Prometheus text exposition format 0.0.4 by prometheus_client (its escaping and numbers).
* `relay_metrics(node)`, `client_metrics(node)`: collectors; a missing field reads as 0.
* `MetricsServer`: HTTP GET /metrics on loopback (aiohttp).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import resource
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric as PromMetric

from onionmesh.directory.dht_records import StoreResult
from onionmesh.proto.link import SUITE_NAMES
from onionmesh.runtime.dht.protocol import RPCS
from onionmesh.runtime.http_guard import host_is_safe
from onionmesh.runtime.safelog import get_logger

log = get_logger("onionmesh.metrics")

# generate_latest writes the 0.0.4 text format; prometheus_client's CONTENT_TYPE_LATEST names its
# newer 1.0.0 (UTF-8 names), which these names, all in the legacy charset, do not need.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
DHT_DROPPED = (
    "garbage",
    "malformed",
    "rate_limited",
    "spoofed_response",
    "unexpected_response",
    "refused_amplification",
    "bad_hello",
)
STORE_REFUSED = tuple(r.value for r in StoreResult if r not in (StoreResult.STORED, StoreResult.ALREADY_HELD))

Labels = dict[str, str]


@dataclass
class Metric:
    """One metric family; a counter's name ends in `_total`."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)


# --- exposition -------------------------------------------------------------------------------
def _check(m: Metric) -> None:
    if not _NAME.match(m.name) or m.kind not in ("counter", "gauge"):
        raise ValueError(f"bad metric {m.name!r} of kind {m.kind!r}")
    if m.kind == "counter" and not m.name.endswith("_total"):
        raise ValueError(f"counter {m.name!r} must end in _total")
    for labels, _ in m.samples:
        for key in labels:
            if not _LABEL.match(key) or key.startswith("__"):
                raise ValueError(f"bad label name {key!r} in {m.name}")


def families(metrics: Iterable[Metric]) -> list[PromMetric]:
    """prometheus_client families, merged by name (HELP and TYPE once per family).

    Raises ValueError on a bad name or label name, a counter not named `*_total`, or one name
    given two kinds.
    """
    merged: dict[str, PromMetric] = {}
    for m in metrics:
        _check(m)
        family = merged.get(m.name)
        if family is None:  # prometheus_client names a counter's family without its _total
            name = m.name.removesuffix("_total") if m.kind == "counter" else m.name
            family = PromMetric(name, m.help, m.kind)
            merged[m.name] = family
        elif family.type != m.kind:
            raise ValueError(f"{m.name!r} declared as both {family.type} and {m.kind}")
        for labels, value in m.samples:
            family.add_sample(m.name, {k: str(v) for k, v in labels.items()}, float(value))
    return list(merged.values())


class ScrapeCollector:
    """A prometheus_client custom collector: `read` is called at each scrape, so the hot path
    counts nothing for metrics.  Register it in a `CollectorRegistry`, or let `render` use it."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.read = read

    def collect(self) -> Iterator[PromMetric]:
        return iter(families(self.read()))


def render(metrics: Iterable[Metric]) -> str:
    """The text exposition format 0.0.4, written by prometheus_client (its escaping and numbers)."""
    return generate_latest(ScrapeCollector(lambda: metrics)).decode()


# --- collectors -------------------------------------------------------------------------------
def _num(mapping: Any, key: Any) -> float:
    try:
        return float(mapping.get(key, 0) or 0)
    except (AttributeError, TypeError, ValueError):
        return 0.0


def _kind(name: str) -> Literal["counter", "gauge"]:
    return "counter" if name.endswith("_total") else "gauge"


def _one(name: str, help: str, value: float) -> Metric:
    """A family of one unlabelled sample; `*_total` is a counter, anything else a gauge."""
    return Metric(name, _kind(name), help, [({}, float(value))])


def _by(name: str, label: str, help: str, values: Mapping[str, float]) -> Metric:
    return Metric(name, _kind(name), help, [({label: k}, float(v)) for k, v in values.items()])


def _safe_len(obj: Any) -> int:
    try:
        return len(obj)
    except TypeError:
        return 0


def process_metrics() -> list[Metric]:
    """Resident memory and CPU time of this process, and `onionmesh_up 1`."""
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, KiB on Linux
    cpu = os.times()
    return [
        _one("onionmesh_process_resident_memory_bytes", "Resident memory size in bytes.", rss),
        _one("onionmesh_process_cpu_seconds_total", "User and system CPU time in seconds.", cpu[0] + cpu[1]),
        _one("onionmesh_up", "1 while the node answers scrapes.", 1),
    ]


def dht_metrics(dht: Any) -> list[Metric]:
    """A DhtNode's RPC, drop and storage counters and its routing table size."""
    protocol = getattr(dht, "protocol", None)
    stats = getattr(protocol, "stats", None) or {}
    storage = getattr(dht, "storage", None)
    refused = {getattr(k, "value", k): v for k, v in (getattr(storage, "refused", None) or {}).items()}
    buckets = getattr(getattr(protocol, "router", None), "buckets", None) or []
    rpcs = {r: _num(stats, f"rpc_{r}") for r in sorted(RPCS)}
    return [
        _by("onionmesh_dht_rpcs_total", "rpc", "DHT requests answered, by RPC.", rpcs),
        _by("onionmesh_dht_dropped_total", "why", "DHT datagrams dropped, by reason.",
            {w: _num(stats, w) for w in DHT_DROPPED}),
        _one("onionmesh_dht_stored_descriptors", "Descriptors held for the DHT.", _safe_len(storage)),
        _by("onionmesh_dht_store_refused_total", "why", "STORE requests refused, by reason.",
            {w: _num(refused, w) for w in STORE_REFUSED}),
        _one("onionmesh_dht_routing_contacts", "Contacts in the routing table.",
             sum(_safe_len(getattr(b, "nodes", ())) for b in buckets)),
        _one("onionmesh_dht_timeouts_total", "DHT requests that timed out.", _num(stats, "timeouts")),
        _one("onionmesh_dht_internal_errors_total", "DHT datagrams that hit a bug.",
             _num(stats, "internal_error")),
    ]  # fmt: skip


def relay_metrics(node: Any) -> list[Metric]:
    """Read a RelayNode's state.  Link bytes are the live links' plus `stats["closed_link_bytes_in"]`
    and `stats["closed_link_bytes_out"]` (what closed links carried, if the node keeps them)."""
    stats = getattr(node, "stats", None) or {}
    links = list(getattr(node, "links", None) or ())
    entries: set[int] = set()  # a circuit is in the circuits of up to two links: count it once
    bytes_in, bytes_out = _num(stats, "closed_link_bytes_in"), _num(stats, "closed_link_bytes_out")
    queued = 0
    suites = dict.fromkeys(SUITE_NAMES.values(), 0.0)
    for link in links:
        suite = SUITE_NAMES.get(getattr(link, "suite", None))
        if suite is not None:
            suites[suite] += 1
        for slot in list((getattr(link, "circuits", None) or {}).values()):
            entries.add(id(getattr(slot, "circuit", slot)))  # a CircuitSlot holds the relay's entry
        proto = getattr(link, "proto", None)
        bytes_in += getattr(proto, "bytes_received", 0) or 0
        bytes_out += getattr(proto, "bytes_sent", 0) or 0
        with contextlib.suppress(AttributeError, RuntimeError, TypeError, ValueError):
            queued += int(getattr(link, "queued_bytes", 0) or 0)
    destroyed = {"protocol": 0.0} | {
        k.removeprefix("destroyed_"): _num(stats, k)
        for k in stats
        if isinstance(k, str) and k.startswith("destroyed_") and _LABEL.match(k)
    }

    limits = getattr(node, "limits", None)
    buckets = {"in": getattr(limits, "read", None), "out": getattr(limits, "write", None)}

    def count(key: str) -> float:
        return _num(stats, key)

    return [
        _one("onionmesh_relay_circuits", "Circuits open through this relay.", len(entries)),
        _one("onionmesh_relay_circuits_created_total", "Circuits created (CREATE answered).",
             count("circuits")),
        _by("onionmesh_relay_circuits_destroyed_total", "reason", "Circuits destroyed, by reason.",
            destroyed),
        _one("onionmesh_relay_links", "Open links to clients and relays.", len(links)),
        _by("onionmesh_relay_links_by_suite", "suite", "Established links by record AEAD.", suites),
        _by("onionmesh_relay_link_bytes_total", "direction", "Bytes read from and written to links.",
            {"in": bytes_in, "out": bytes_out}),
        _by("onionmesh_relay_links_refused_total", "reason",
            "Inbound connections closed before their link handshake, by which bound closed them.",
            {"per_address": count("links_refused"), "global_rate": count("links_refused_global"),
             "displaced": count("handshakes_displaced")}),
        _by("onionmesh_relay_handshakes_total", "result", "Circuit handshakes, by result.",
            {"ok": count("handshakes_ok"), "failed": count("handshakes_failed")}),
        _one("onionmesh_relay_cells_dropped_total", "Cells dropped.", count("cells_dropped")),
        _one("onionmesh_relay_streams_total", "Exit streams opened.", count("streams_opened")),
        _by("onionmesh_relay_streams_refused_total", "cap",
            "Exit streams refused with END RESOURCELIMIT, by the cap they would have passed.",
            {c: count(f"streams_refused_{c}") for c in ("circuit", "link", "process")}),
        _by("onionmesh_relay_exit_bytes_total", "direction", "Bytes to and from exit destinations.",
            {"in": count("bytes_exit_in"), "out": count("bytes_exit_out")}),
        _one("onionmesh_relay_queued_bytes", "Bytes in circuit queues and link write buffers.", queued),
        # --bandwidth-rate: what the link buckets let through and how often a link waited for tokens
        _by("onionmesh_relay_bandwidth_bytes_total", "direction",
            "Link bytes charged to the bandwidth-rate buckets (0 without a rate).",
            {d: getattr(bucket, "carried", 0) for d, bucket in buckets.items()}),
        _by("onionmesh_relay_bandwidth_waits_total", "direction",
            "Times a link waited for bandwidth-rate tokens.",
            {d: getattr(bucket, "waits", 0) for d, bucket in buckets.items()}),
        # UDP flows (runtime.relay.exit_udp): sockets only ever opened under a UDP exit policy
        _one("onionmesh_relay_udp_sockets_opened_total", "Exit UDP sockets opened (one per flow).",
             count("udp_sockets_opened")),
        _by("onionmesh_relay_udp_refused_total", "reason", "UDP flows refused, by reason.",
            {"policy": count("udp_refused_policy"), "flows": count("udp_refused_flows")}),
        _by("onionmesh_relay_udp_datagrams_total", "direction", "Datagrams to and from UDP destinations.",
            {"out": count("udp_datagrams_out"), "in": count("udp_datagrams_in")}),
        _by("onionmesh_relay_udp_dropped_total", "reason", "Datagrams dropped at the exit, by reason.",
            {"rate": count("udp_dropped_rate"), "full": count("udp_dropped_full"),
             "size": count("udp_dropped_size")}),
        *dht_metrics(getattr(node, "dht", None)),
        *process_metrics(),
    ]  # fmt: skip


def client_metrics(node: Any) -> list[Metric]:
    """Read a ClientNode's state.  Bytes are the live circuits' plus `node.circuits.stats["closed_bytes_in"]`
    and `["closed_bytes_out"]` (what closed circuits carried, if the CircuitMgr keeps them)."""
    mgr = getattr(node, "circuits", None)
    stats = getattr(mgr, "stats", None) or {}
    handles = list((getattr(mgr, "circuits", None) or {}).values())
    states: dict[str, float] = {"new": 0, "building": 0, "open": 0, "closed": 0}
    streams = 0
    bytes_in, bytes_out = _num(stats, "closed_bytes_in"), _num(stats, "closed_bytes_out")
    for handle in handles:
        circ = getattr(handle, "circ", None)
        state = str(getattr(getattr(circ, "state", None), "value", "unknown"))
        state = state if state in states else "unknown"
        states[state] = states.get(state, 0) + 1
        streams += _safe_len(getattr(circ, "streams", ()))
        bytes_in += getattr(circ, "bytes_in", 0) or 0
        bytes_out += getattr(circ, "bytes_out", 0) or 0
    directory = getattr(node, "directory", None)
    return [
        _by("onionmesh_client_circuits", "state", "Client circuits, by state.", states),
        _one("onionmesh_client_streams", "Streams open on client circuits.", streams),
        _by("onionmesh_client_bytes_total", "direction", "Stream payload bytes on client circuits.",
            {"in": bytes_in, "out": bytes_out}),
        *relays_by_country(node),
        *udp_metrics(getattr(getattr(node, "socks", None), "udp_stats", None)),
        *dht_metrics(getattr(directory, "dht", None)),
        *process_metrics(),
    ]  # fmt: skip


def udp_metrics(udp: Any) -> list[Metric]:
    """The proxy's SOCKS5 UDP ASSOCIATE counters (runtime.client.socks_udp.UdpStats), if any."""
    if udp is None:
        return []

    def n(name: str) -> float:
        return float(getattr(udp, name, 0) or 0)

    return [
        _one("onionmesh_client_udp_associations_total", "SOCKS5 UDP associations opened.", n("associations")),
        _by("onionmesh_client_udp_datagrams_total", "direction", "Datagrams carried for SOCKS UDP clients.",
            {"out": n("datagrams_sent"), "in": n("datagrams_received")}),
        _by("onionmesh_client_udp_dropped_total", "reason", "Datagrams from SOCKS UDP clients dropped.",
            {r: n(f"dropped_{r}") for r in ("foreign", "fragment", "malformed", "full", "no_exit")}),
        _by("onionmesh_client_udp_flows_total", "result", "UDP flows, by how they went.",
            {r: n(f"flows_{r}") for r in ("opened", "refused", "idle_closed")}),
    ]  # fmt: skip


def relays_by_country(node: Any) -> list[Metric]:
    """Relays and exits in the client's view per country, judged by the CLIENT's GeoIP database
    (node.policy.country), labelled with Tor's lower-case codes ("??" unknown): what a user who
    pins `ExitNodes {cc}` chooses among.  At most one sample per country code (~260)."""
    relays: dict[str, float] = {}
    exits: dict[str, float] = {}
    country = getattr(getattr(node, "policy", None), "country", None)
    try:
        known = list(getattr(node, "relays", None) or [])
    except (AttributeError, TypeError):
        known = []
    for desc in known:
        cc = str(country(desc)).lower() if callable(country) else "??"
        relays[cc] = relays.get(cc, 0) + 1
        exits.setdefault(cc, 0)
        if getattr(desc, "is_exit", False):
            exits[cc] += 1
    return [
        _by("onionmesh_client_relays_known", "country", "Relays in the client's view, by country.", relays),
        _by(
            "onionmesh_client_exits_known", "country", "Exit relays in the client's view, by country.", exits
        ),
    ]


# --- the endpoint -----------------------------------------------------------------------------
def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsServer:
    """HTTP GET /metrics in Prometheus format; every other request gets 404.

    WARNING, as Tor's manual says of MetricsPort: exposing metrics publicly is dangerous to the
    network's users.  Counters over time help an observer correlate traffic, and the endpoint is
    plain HTTP with no authentication.  Hence the server binds only to a loopback address unless
    `allow_public=True`; even then, keep it behind a firewall or a TLS tunnel (stunnel), and
    `allow_from` (networks) limits who may scrape (loopback only by default, like Tor's
    reject-all MetricsPortPolicy); others get 403.
    """

    def __init__(
        self,
        host: str,
        port: int,
        collect: Callable[[], list[Metric]],
        *,
        allow_public: bool = False,
        allow_from: Iterable[str] = ("127.0.0.0/8", "::1/128"),
    ) -> None:
        if not allow_public and not is_loopback_host(host):
            raise ValueError(f"metrics: refusing to listen on non-loopback {host!r} without allow_public")
        self.host, self.port, self.collect = host, port, collect
        self.allow_from = [ipaddress.ip_network(n, strict=False) for n in allow_from]
        self._runner: web.AppRunner | None = None

    def _allowed(self, remote: str | None) -> bool:
        try:
            addr = ipaddress.ip_address((remote or "").split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.allow_from)

    async def _handle(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD") or request.path != "/metrics":
            return web.Response(status=404, text="not found\n")
        if not self._allowed(request.remote):
            return web.Response(status=403, text="forbidden\n")
        if not host_is_safe(request.headers.get("Host"), (self.host,)):
            # DNS rebinding: a web page on a name pointed at 127.0.0.1 would read live byte counters.
            return web.Response(status=421, text="the Host header must be an IP address or localhost\n")
        try:
            body = render(self.collect()).encode()
        except Exception as exc:  # a collector bug must cost one scrape, never the node
            log.error("metrics collection failed", error=type(exc).__name__)
            return web.Response(status=500, text="collection failed\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)  # no peer addresses in logs
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("metrics listening", port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
