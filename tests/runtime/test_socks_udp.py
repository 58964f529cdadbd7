"""SOCKS5 UDP ASSOCIATE through a real in-process mesh (issue 22): PySocks's UDP support against
a DNS server and an echo server on loopback, exits that have or lack a UDP exit policy."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import socks

from onionmesh.errors import StreamFailed
from onionmesh.proto.udp_flow import QUEUE_BYTES, SHARED_QUEUE_BYTES
from onionmesh.runtime.client.socks_udp import UdpStats
from onionmesh.runtime.metrics import client_metrics, relay_metrics, render
from onionmesh.wire.relay_msg import EndReason
from tests.helpers.mesh import LOOPBACK_EXIT_POLICY, http_get_on, socks5_connect, start_mesh, stop_mesh
from tests.helpers.udp import DNS_ANSWER_IP, dns_answer_of, dns_query, start_udp_server


def udp_socket(socks_port: int, username: str = "udp", timeout: float = 10.0) -> socks.socksocket:
    """A PySocks UDP socket: its bind() opens the association (UDP ASSOCIATE over TCP)."""
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "127.0.0.1", socks_port, rdns=True, username=username, password="x")
    s.settimeout(timeout)
    s.bind(("127.0.0.1", 0))
    return s


def udp_sockets_opened(mesh) -> int:
    return sum(r.stats.get("udp_sockets_opened", 0) for r in mesh.relays)


async def test_dns_queries_over_udp_associate_get_answers(tmp_path: Path) -> None:
    """A real SOCKS UDP client asks a DNS server on loopback, by IP and by a name the exit resolves."""
    mesh, extras = await start_mesh(
        tmp_path, exit_policy_udp=LOOPBACK_EXIT_POLICY, resolve_overrides={"dns.test": ["127.0.0.1"]}
    )
    dns = await start_udp_server("dns")
    try:

        def ask() -> list[tuple[int, str, tuple[str, int]]]:
            s = udp_socket(mesh.socks_port)
            out = []
            try:
                for i, host in enumerate(["127.0.0.1"] * 5 + ["dns.test"] * 5):
                    s.sendto(dns_query(f"host{i}.example", 1000 + i), (host, dns.port))
                    data, source = s.recvfrom(4096)
                    out.append((*dns_answer_of(data), source))
            finally:
                s.close()
            return out

        answers = await asyncio.to_thread(ask)
        assert [a[0] for a in answers] == list(range(1000, 1010))
        assert {a[1] for a in answers} == {DNS_ANSWER_IP}
        # replies name the destination as the client did (PySocks gives names as bytes)
        assert [a[2] for a in answers] == [("127.0.0.1", dns.port)] * 5 + [(b"dns.test", dns.port)] * 5
        assert dns.received == 10
        assert udp_sockets_opened(mesh) == 2  # one connected flow per destination (IP, name)
        stats: UdpStats = mesh.client.socks.udp_stats
        assert stats.flows_opened == 2 and stats.datagrams_received == 10
        scraped = render(client_metrics(mesh.client))
        assert 'onionmesh_client_udp_datagrams_total{direction="in"} 10.0' in scraped
    finally:
        dns.close()
        await stop_mesh(mesh, extras)


async def test_association_ends_with_its_tcp_connection(tmp_path: Path) -> None:
    """Closing the control connection ends the flows (the exit closes its sockets) and the relay port."""
    mesh, extras = await start_mesh(tmp_path, exit_policy_udp=LOOPBACK_EXIT_POLICY)
    echo = await start_udp_server("echo")
    try:

        def one() -> tuple[bytes, int]:
            s = udp_socket(mesh.socks_port)
            s.sendto(b"ping", ("127.0.0.1", echo.port))
            data, _ = s.recvfrom(100)
            relay_port = super(socks.socksocket, s).getpeername()[1]  # PySocks overrides it
            s.close()  # closes the TCP control connection too
            return data, relay_port

        data, relay_port = await asyncio.to_thread(one)
        assert data == b"ping"

        def flows_open() -> int:
            return sum(r.udp_exit.sockets_open for r in mesh.relays)

        for _ in range(200):
            if flows_open() == 0:
                break
            await asyncio.sleep(0.05)
        assert flows_open() == 0
        # the relay socket is closed: binding its port works again
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", relay_port))
        probe.close()
    finally:
        echo.close()
        await stop_mesh(mesh, extras)


async def test_echo_of_many_1200_byte_datagrams_counts_loss(tmp_path: Path) -> None:
    """2,000 datagrams of 1,200 bytes, at most 64 in flight: every echo that comes back is
    byte-exact, and the loss is counted (UDP semantics: it may be non-zero, never silent)."""
    mesh, extras = await start_mesh(tmp_path, exit_policy_udp=LOOPBACK_EXIT_POLICY)
    echo = await start_udp_server("echo")
    try:

        def run() -> tuple[int, int, int]:
            s = udp_socket(mesh.socks_port, timeout=2.0)
            sent = received = bad = 0
            outstanding = 0
            try:
                while sent < 2000 or outstanding:
                    while sent < 2000 and outstanding < 64:
                        s.sendto(sent.to_bytes(4, "big") * 300, ("127.0.0.1", echo.port))
                        sent += 1
                        outstanding += 1
                    try:
                        data, _ = s.recvfrom(2048)
                    except TimeoutError:
                        outstanding = 0  # the rest are lost
                        continue
                    received += 1
                    outstanding -= 1
                    if len(data) != 1200 or data != data[:4] * 300:
                        bad += 1
            finally:
                s.close()
            return sent, received, bad

        sent, received, bad = await asyncio.to_thread(run)
        assert sent == 2000 and bad == 0
        loss = sent - received
        assert loss <= sent // 20, f"lost {loss} of {sent}"
    finally:
        echo.close()
        await stop_mesh(mesh, extras)


async def test_exit_without_udp_policy_never_opens_a_udp_socket(tmp_path: Path) -> None:
    """Default exits (no UDP policy): the client finds no UDP exit, and a CONNECT_UDP sent to such an
    exit anyway is answered END EXITPOLICY; no relay ever opened a UDP socket (counters)."""
    mesh, extras = await start_mesh(tmp_path)  # exits accept TCP to loopback, no UDP
    echo = await start_udp_server("echo")
    try:

        def try_send() -> bool:
            s = udp_socket(mesh.socks_port, timeout=1.0)
            try:
                s.sendto(b"hello", ("127.0.0.1", echo.port))
                s.recvfrom(100)
                return True
            except TimeoutError:
                return False
            finally:
                s.close()

        assert await asyncio.to_thread(try_send) is False
        assert mesh.client.socks.udp_stats.dropped_no_exit == 1
        exit_fp = next(r.fingerprint for r in mesh.relays if r.exit_rules is not None)
        handle = await mesh.client.circuits.build(exit_fp=exit_fp)
        sid = handle.circ.connect_udp("127.0.0.1", echo.port)
        waiter = asyncio.get_running_loop().create_future()
        handle.pending[sid] = waiter
        with pytest.raises(StreamFailed) as failed:
            await asyncio.wait_for(waiter, 10)
        assert failed.value.reason is EndReason.EXITPOLICY
        assert mesh.relay(exit_fp).stats.get("udp_refused_policy") == 1
        assert udp_sockets_opened(mesh) == 0 and echo.received == 0
        for relay in mesh.relays:  # as an operator sees it
            assert "onionmesh_relay_udp_sockets_opened_total 0.0" in render(relay_metrics(relay))
        exit_scrape = render(relay_metrics(mesh.relay(exit_fp)))
        assert 'onionmesh_relay_udp_refused_total{reason="policy"} 1.0' in exit_scrape
    finally:
        echo.close()
        await stop_mesh(mesh, extras)


async def test_private_destinations_refused_for_udp(tmp_path: Path) -> None:
    """An exit that accepts UDP everywhere (`accept *:*`) but not private destinations (the default)
    refuses loopback, RFC 1918 and link-local, as for TCP, without opening a socket."""
    mesh, extras = await start_mesh(tmp_path, exit_policy_udp="accept *:*", allow_private=False)
    try:
        exit_fp = next(r.fingerprint for r in mesh.relays if r.exit_rules is not None)
        handle = await mesh.client.circuits.build(exit_fp=exit_fp)
        for host in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.1.1", "::1", "localhost"):
            sid = handle.circ.connect_udp(host, 53)
            waiter = asyncio.get_running_loop().create_future()
            handle.pending[sid] = waiter
            with pytest.raises(StreamFailed) as failed:
                await asyncio.wait_for(waiter, 10)
            assert failed.value.reason is EndReason.EXITPOLICY, host
        assert mesh.relay(exit_fp).stats.get("udp_refused_policy") == 6
        assert udp_sockets_opened(mesh) == 0
    finally:
        await stop_mesh(mesh, extras)


async def test_udp_flood_keeps_memory_bounded_and_tcp_stream_on_same_circuit_intact(tmp_path: Path) -> None:
    """20,000 datagrams of 1,200 bytes as fast as a thread can send them to a sink, while a 4 MiB
    download runs over the same circuit (same SOCKS username): the download is byte-exact, every
    datagram is either carried or counted as dropped, and queues never pass their caps."""
    mesh, extras = await start_mesh(tmp_path, exit_policy_udp=LOOPBACK_EXIT_POLICY)
    sink = await start_udp_server("sink")
    blob = mesh.origin.blob(4 << 20)
    try:
        s = await asyncio.to_thread(udp_socket, mesh.socks_port, "flood")
        s.sendto(b"first", ("127.0.0.1", sink.port))  # opens the flow and its circuit
        stats: UdpStats = mesh.client.socks.udp_stats
        for _ in range(400):
            if stats.flows_opened:
                break
            await asyncio.sleep(0.05)
        circuits = [h for h in mesh.client.circuits.circuits.values() if h.isolation == (b"flood", b"x")]
        assert len(circuits) == 1 and circuits[0].udp is not None
        peak = {"client": 0, "exit": 0}

        def flood() -> None:
            for i in range(20_000):
                s.sendto(i.to_bytes(4, "big") * 300, ("127.0.0.1", sink.port))

        def download() -> bytes:
            t = socks5_connect(mesh.socks_port, "127.0.0.1", mesh.origin.port, timeout=60, username="flood")
            return http_get_on(t, "x", f"/blob/{4 << 20}")[1]

        async def watch() -> None:
            while True:
                table = next(iter(circuits[0].udp.tables.values()), None)  # type: ignore[union-attr]
                if table is not None:
                    peak["client"] = max([peak["client"], *(f.queue.bytes for f in table.flows())])
                for r in mesh.relays:
                    for state in r.udp_exit.circuits.values():
                        peak["exit"] = max([peak["exit"], *(f.queue.bytes for f in state.flows.values())])
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        got, _ = await asyncio.gather(asyncio.to_thread(download), asyncio.to_thread(flood))
        watcher.cancel()
        assert got == blob
        mine = [h for h in mesh.client.circuits.circuits.values() if h.isolation == (b"flood", b"x")]
        assert mine == circuits  # the TCP stream went over the UDP flow's circuit
        await asyncio.sleep(1.0)  # let what is in flight arrive (liveness only; counts below)
        carried = stats.datagrams_sent
        assert carried + stats.dropped_full + stats.dropped_foreign + stats.dropped_malformed <= 20_001
        assert carried >= 1 and sink.received <= carried
        assert peak["client"] <= min(QUEUE_BYTES, SHARED_QUEUE_BYTES)
        assert peak["exit"] <= min(QUEUE_BYTES, SHARED_QUEUE_BYTES)
        s.close()
    finally:
        sink.close()
        await stop_mesh(mesh, extras)


def test_pysocks_supports_udp_associate() -> None:
    """The client the acceptance tests use really speaks UDP ASSOCIATE (PySocks >= 1.6)."""
    assert hasattr(socks.socksocket, "sendto")


async def test_only_the_opening_client_and_no_fragments(tmp_path: Path) -> None:
    """Raw RFC 1928 client: DST.PORT names the UDP port it sends from; a datagram from another port
    (a local process guessing the relay port) and one with FRAG != 0 are dropped, counted."""
    mesh, extras = await start_mesh(tmp_path, exit_policy_udp=LOOPBACK_EXIT_POLICY)
    echo = await start_udp_server("echo")
    try:

        def run() -> tuple[bytes, bytes | None]:
            mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            mine.bind(("127.0.0.1", 0))
            mine.settimeout(10)
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            other.bind(("127.0.0.1", 0))
            other.settimeout(1)
            control = socket.create_connection(("127.0.0.1", mesh.socks_port), timeout=10)
            control.sendall(b"\x05\x01\x00")
            assert control.recv(2) == b"\x05\x00"
            port = mine.getsockname()[1]
            control.sendall(b"\x05\x03\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
            reply = control.recv(10)
            assert reply[:4] == b"\x05\x00\x00\x01" and reply[4:8] == b"\x7f\x00\x00\x01"
            relay = ("127.0.0.1", int.from_bytes(reply[8:10], "big"))
            head = b"\x00\x00\x00\x01\x7f\x00\x00\x01" + echo.port.to_bytes(2, "big")
            other.sendto(head + b"intruder", relay)
            mine.sendto(b"\x00\x00\x01" + head[3:] + b"fragment", relay)
            mine.sendto(head + b"mine", relay)
            answer = mine.recv(2048)
            try:
                leaked: bytes | None = other.recv(2048)
            except TimeoutError:
                leaked = None
            for s in (mine, other, control):
                s.close()
            return answer, leaked

        answer, leaked = await asyncio.to_thread(run)
        assert answer == b"\x00\x00\x00\x01\x7f\x00\x00\x01" + echo.port.to_bytes(2, "big") + b"mine"
        assert leaked is None
        stats: UdpStats = mesh.client.socks.udp_stats
        assert (stats.dropped_foreign, stats.dropped_fragment, echo.received) == (1, 1, 1)
    finally:
        echo.close()
        await stop_mesh(mesh, extras)


async def test_udp_associations_are_isolated_by_socks_username(tmp_path: Path) -> None:
    """Two associations with different usernames use two circuits; two flows of one association
    (two destinations) share its circuit."""
    mesh, extras = await start_mesh(tmp_path, exit_policy_udp=LOOPBACK_EXIT_POLICY)
    echo, other = await start_udp_server("echo"), await start_udp_server("echo")
    try:

        def talk(username: str, ports: list[int]) -> list[bytes]:
            s = udp_socket(mesh.socks_port, username)
            got = []
            try:
                for port in ports:
                    s.sendto(username.encode(), ("127.0.0.1", port))
                    got.append(s.recvfrom(100)[0])
            finally:
                s.close()
            return got

        assert await asyncio.to_thread(talk, "alice", [echo.port, other.port]) == [b"alice", b"alice"]
        assert await asyncio.to_thread(talk, "bob", [echo.port]) == [b"bob"]
        by_user = {
            user: [h for h in mesh.client.circuits.circuits.values() if h.isolation == (user, b"x")]
            for user in (b"alice", b"bob")
        }
        assert len(by_user[b"alice"]) == 1 and len(by_user[b"bob"]) == 1
        assert by_user[b"alice"][0] is not by_user[b"bob"][0]
        assert udp_sockets_opened(mesh) == 3
    finally:
        echo.close()
        other.close()
        await stop_mesh(mesh, extras)


async def _flow(handle, host: str, port: int) -> int:
    """Open a UDP flow by hand on `handle`; its stream id (StreamFailed if the exit refuses)."""
    sid = handle.circ.connect_udp(host, port)
    waiter = asyncio.get_running_loop().create_future()
    handle.pending[sid] = waiter
    await asyncio.wait_for(waiter, 10)
    handle.unattached.pop(sid, None)
    return sid


async def test_exit_flow_cap_rate_limit_and_idle_timeout(tmp_path: Path) -> None:
    """At the exit: the per-circuit flow cap answers END RESOURCELIMIT; datagrams past the
    per-circuit rate are dropped and counted (none reach the destination); an idle flow is ended
    and its socket closed."""
    from onionmesh.runtime.relay.exit_udp import UdpCaps

    mesh, extras = await start_mesh(tmp_path, exit_policy_udp=LOOPBACK_EXIT_POLICY)
    sink = await start_udp_server("sink")
    try:
        exit_node = next(r for r in mesh.relays if r.exit_rules is not None)
        udp = exit_node.udp_exit
        udp.caps = UdpCaps(flows_per_circuit=2, datagrams_per_second=1.0, burst=5, idle_timeout=5.0)
        handle = await mesh.client.circuits.build(exit_fp=exit_node.fingerprint)
        first = await _flow(handle, "127.0.0.1", sink.port)
        await _flow(handle, "127.0.0.2", sink.port)
        with pytest.raises(StreamFailed) as failed:
            await _flow(handle, "127.0.0.3", sink.port)
        assert failed.value.reason is EndReason.RESOURCELIMIT
        assert exit_node.stats.get("udp_refused_flows") == 1
        for _ in range(60):  # within the initial circuit window (64)
            assert handle.circ.send_datagram(first, b"x" * 100)

        def counts() -> tuple[int, int]:
            return exit_node.stats.get("udp_datagrams_out", 0), exit_node.stats.get("udp_dropped_rate", 0)

        for _ in range(200):
            if sum(counts()) == 60:
                break
            await asyncio.sleep(0.05)
        out, dropped = counts()
        assert out + dropped == 60 and dropped >= 40  # burst 5, then 1/s: the rest dropped
        for _ in range(200):
            if sink.received == out:
                break
            await asyncio.sleep(0.05)
        assert sink.received == out
        for _ in range(300):  # both flows go idle: the exit ends them (bounded wait, liveness)
            if udp.sockets_open == 0:
                break
            await asyncio.sleep(0.1)
        assert udp.sockets_open == 0 and exit_node.stats.get("udp_flows_idle_closed") == 2
        assert first not in handle.circ.streams  # the client saw the END
    finally:
        sink.close()
        await stop_mesh(mesh, extras)
