"""The Prometheus /metrics endpoint: exposition format, collectors on a live mesh, and the HTTP side."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace

import aiohttp
import pytest

from onionmesh.crypto.sodium import HARDWARE_AES
from onionmesh.runtime.metrics import (
    CONTENT_TYPE,
    Metric,
    MetricsServer,
    client_metrics,
    relay_metrics,
    render,
)
from tests.helpers.mesh import Mesh, http_get_via_socks

parser = pytest.importorskip("prometheus_client.parser")

TRICKY = 'back\\slash "quoted"\nnew line, and {braces}=1'


def parse(text: str) -> dict[str, object]:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(families: dict[str, object], family: str, sample: str | None = None, **labels: str) -> float:
    """One sample's value; `family` as the parser names it (a counter without `_total`)."""
    for s in families[family].samples:  # type: ignore[attr-defined]
        if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((family, labels))


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


# --- exposition ---------------------------------------------------------------------------------
def test_render_parses_back_with_types_labels_and_escaping() -> None:
    text = render(
        [
            Metric("om_things_total", "counter", "Things.\nWith a \\ in help.", [({"kind": "a"}, 3)]),
            Metric("om_level", "gauge", "A level.", [({}, 2.5)]),
            Metric("om_things_total", "counter", "Things.", [({"kind": TRICKY}, 4)]),  # same family, merged
            Metric(
                "om_odd", "gauge", "Odd values.", [({"v": "nan"}, float("nan")), ({"v": "inf"}, float("inf"))]
            ),
        ]
    )
    assert text.count("# TYPE om_things_total counter") == 1
    assert text.count("# HELP om_things_total") == 1
    families = parse(text)
    assert families["om_things"].type == "counter"  # type: ignore[attr-defined]
    assert families["om_level"].type == "gauge"  # type: ignore[attr-defined]
    assert families["om_things"].documentation == "Things.\nWith a \\ in help."  # type: ignore[attr-defined]
    assert value(families, "om_things", "om_things_total", kind="a") == 3
    assert value(families, "om_things", "om_things_total", kind=TRICKY) == 4
    assert value(families, "om_level") == 2.5
    assert value(families, "om_odd", v="inf") == float("inf")


@pytest.mark.parametrize(
    "bad",
    [
        Metric("om_no_suffix", "counter", "A counter must end in _total.", [({}, 1)]),
        Metric("om bad name", "gauge", "", [({}, 1)]),
        Metric("om_g", "gauge", "", [({"bad-label": "x"}, 1)]),
        Metric("om_g", "gauge", "", [({"__reserved": "x"}, 1)]),
    ],
)
def test_render_refuses_bad_metrics(bad: Metric) -> None:
    with pytest.raises(ValueError):
        render([bad])


def test_render_refuses_one_name_with_two_kinds() -> None:
    with pytest.raises(ValueError):
        render([Metric("om_x_total", "counter", "", []), Metric("om_x_total", "gauge", "", [])])


def test_collectors_read_missing_fields_as_zero() -> None:
    bare = SimpleNamespace(stats={"circuits": 7})
    for families in (parse(render(relay_metrics(bare))), parse(render(relay_metrics(object())))):
        assert value(families, "onionmesh_relay_links") == 0
        assert value(families, "onionmesh_relay_links_by_suite", suite="aegis256") == 0
        assert value(families, "onionmesh_relay_links_by_suite", suite="chacha20poly1305") == 0
        assert (
            value(families, "onionmesh_relay_handshakes", "onionmesh_relay_handshakes_total", result="ok")
            == 0
        )
        assert value(families, "onionmesh_dht_dropped", "onionmesh_dht_dropped_total", why="garbage") == 0
        assert value(families, "onionmesh_up") == 1
    families = parse(render(relay_metrics(bare)))
    assert value(families, "onionmesh_relay_circuits_created", "onionmesh_relay_circuits_created_total") == 7
    families = parse(render(client_metrics(object())))
    assert value(families, "onionmesh_client_circuits", state="open") == 0
    assert value(families, "onionmesh_client_relays_known") == 0
    assert value(families, "onionmesh_process_resident_memory_bytes") > 0


# --- on a live mesh -----------------------------------------------------------------------------
def relay_counters(families: dict[str, object]) -> tuple[float, float, float]:
    created = value(families, "onionmesh_relay_circuits_created", "onionmesh_relay_circuits_created_total")
    b_in = value(families, "onionmesh_relay_link_bytes", "onionmesh_relay_link_bytes_total", direction="in")
    b_out = value(families, "onionmesh_relay_link_bytes", "onionmesh_relay_link_bytes_total", direction="out")
    return created, b_in, b_out


def assert_no_addresses(text: str, mesh: Mesh) -> None:
    for relay in mesh.relays:
        assert relay.config.listen_host not in text
        assert f":{relay.config.listen_port}" not in text
        assert relay.fingerprint not in text
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            for label in sample.labels.values():
                with pytest.raises(ValueError):
                    ipaddress.ip_address(label.rsplit(":", 1)[0].strip("[]"))


async def test_relay_and_client_metrics_move_with_traffic(mesh: Mesh) -> None:
    servers = [MetricsServer("127.0.0.1", 0, lambda r=r: relay_metrics(r)) for r in mesh.relays]
    servers.append(MetricsServer("127.0.0.1", 0, lambda: client_metrics(mesh.client)))
    for server in servers:
        await server.start()
    try:
        before = []
        for server in servers[:-1]:
            status, ctype, text = await scrape(server.port)
            assert status == 200 and ctype == CONTENT_TYPE
            before.append(relay_counters(parse(text)))

        want = mesh.origin.blob(200_000)
        body = await asyncio.to_thread(
            http_get_via_socks, mesh.socks_port, "localhost", mesh.origin.port, "/blob/200000"
        )
        assert body == want
        used = next(h for h in mesh.client.circuits.circuits.values() if h.circ.bytes_in >= len(want))
        on_path = {d.fingerprint for d in used.path}
        assert len(on_path) == 3

        for relay, server, (created0, in0, out0) in zip(mesh.relays, servers, before, strict=False):
            status, _, text = await scrape(server.port)
            assert status == 200
            assert_no_addresses(text, mesh)
            families = parse(text)
            created, b_in, b_out = relay_counters(families)
            assert created >= created0 and b_in >= in0 and b_out >= out0  # counters never go back
            if relay.fingerprint in on_path:
                assert created > created0
                assert b_in > in0  # cells from the client (the exit reads the blob from the origin)
                assert b_out - out0 >= len(want)  # every hop sends the blob toward the client
                assert value(families, "onionmesh_relay_circuits") >= 1
                assert value(families, "onionmesh_relay_links") >= 1
                suite = "aegis256" if HARDWARE_AES else "chacha20poly1305"  # every node here prefers it
                assert value(families, "onionmesh_relay_links_by_suite", suite=suite) >= 1
                assert value(families, "onionmesh_dht_routing_contacts") >= 1
                assert value(families, "onionmesh_dht_rpcs", "onionmesh_dht_rpcs_total", rpc="find_node") >= 1

        status, _, text = await scrape(servers[-1].port)
        assert status == 200
        assert_no_addresses(text, mesh)
        families = parse(text)
        assert value(
            families, "onionmesh_client_bytes", "onionmesh_client_bytes_total", direction="in"
        ) >= len(want)
        assert value(families, "onionmesh_client_circuits", state="open") >= 1
        assert value(families, "onionmesh_client_relays_known") == len(mesh.relays)
    finally:
        for server in servers:
            await server.stop()


# --- the HTTP side ------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "metrics.example", ""])
def test_non_loopback_bind_refused(host: str) -> None:
    with pytest.raises(ValueError):
        MetricsServer(host, 0, list)
    MetricsServer(host, 0, list, allow_public=True)  # explicit opt-in


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.0.1", "::1", "localhost"])
def test_loopback_hosts_allowed(host: str) -> None:
    MetricsServer(host, 0, list)


async def test_only_get_metrics_is_served() -> None:
    server = MetricsServer("127.0.0.1", 0, lambda: [Metric("om_up", "gauge", "Up.", [({}, 1)])])
    await server.start()
    try:
        assert server.port != 0
        status, ctype, text = await scrape(server.port)
        assert (status, ctype) == (200, CONTENT_TYPE)
        assert text == "# HELP om_up Up.\n# TYPE om_up gauge\nom_up 1.0\n"
        for path in ("/", "/metrics/", "/metrics/x", "/debug", "/METRICS"):
            assert (await scrape(server.port, path))[0] == 404
        async with aiohttp.ClientSession() as session:
            for method in ("POST", "PUT", "DELETE"):
                async with session.request(method, f"http://127.0.0.1:{server.port}/metrics") as resp:
                    assert resp.status == 404
    finally:
        await server.stop()


async def test_scrapers_outside_allow_from_are_refused() -> None:
    server = MetricsServer("127.0.0.1", 0, list, allow_from=("10.0.0.0/8",))
    await server.start()
    try:
        assert (await scrape(server.port))[0] == 403
    finally:
        await server.stop()


async def test_a_failing_collector_costs_one_scrape() -> None:
    calls = []

    def collect() -> list[Metric]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return [Metric("om_up", "gauge", "Up.", [({}, 1)])]

    server = MetricsServer("127.0.0.1", 0, collect)
    await server.start()
    try:
        status, _, text = await scrape(server.port)
        assert status == 500 and "bug" not in text
        assert (await scrape(server.port))[0] == 200
    finally:
        await server.stop()


async def test_a_rebinding_host_header_gets_no_counters() -> None:
    """DNS rebinding: a page on evil.example pointed at 127.0.0.1 would poll byte counters in real time
    (a traffic-correlation side channel). Its requests say `Host: evil.example`: refused."""
    import socket

    server = MetricsServer("127.0.0.1", 0, lambda: [Metric("om_up", "gauge", "Up.", [({}, 1)])])
    await server.start()

    def get(host: str) -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data

    try:
        for host in (f"evil.example:{server.port}", "evil.example", f"localhost.evil.example:{server.port}"):
            answer = await asyncio.to_thread(get, host)
            assert answer.startswith(b"HTTP/1.1 421 "), (host, answer[:80])
            assert b"om_up" not in answer
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "127.0.0.1"):
            answer = await asyncio.to_thread(get, host)
            assert answer.startswith(b"HTTP/1.1 200 ") and b"om_up 1" in answer, host
    finally:
        await server.stop()


def test_scrape_collector_reads_at_each_scrape_in_a_registry() -> None:
    # the collector is prometheus_client's custom-collector protocol: any registry can hold it
    from prometheus_client import CollectorRegistry, generate_latest

    from onionmesh.runtime.metrics import ScrapeCollector

    count = [0]

    def read() -> list[Metric]:
        count[0] += 1
        return [Metric("om_reads_total", "counter", "Reads.", [({"who": TRICKY}, count[0])])]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(read))
    assert count == [0], "registering reads nothing"
    for scrape_no in (1, 2):  # each scrape reads once, so the value moves
        families = parse(generate_latest(registry).decode())
        assert value(families, "om_reads", "om_reads_total", who=TRICKY) == scrape_no == count[0]
