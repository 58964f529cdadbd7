"""Misbehaving relays and peers, over real sockets: what each hop learns, tampering, garbage input."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from onionmesh.crypto import ntor
from onionmesh.crypto.keys import IdentityKey
from onionmesh.rng import SystemRng
from onionmesh.runtime.relay.node import RelayNode
from onionmesh.runtime.transport.link_setup import open_link
from onionmesh.wire.cell import Cell, CellCommand, DestroyReason, create_payload, destroy_payload
from tests.helpers.mesh import Mesh, eventually, http_get_via_socks, socks5_connect, start_mesh, stop_mesh


class RecordingRelay(RelayNode):
    """A relay that writes down everything it could learn: link peers and every message meant for it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.link_peers: list[str] = []
        self.recognized: list[tuple[str, int, bytes]] = []
        self.destinations: list[str] = []
        begin = self.exit_service.begin

        async def recording_begin(entry, event) -> None:
            self.destinations.append(event.begin.host)
            await begin(entry, event)

        self.exit_service.begin = recording_begin  # type: ignore[method-assign]
        on_create = self.switch.on_create

        def recording_create(link, cell) -> None:
            on_create(link, cell)
            slot = link.circuits.get(cell.circ_id)
            if slot is not None:
                self._record(slot.circuit.circ)

        self.switch.on_create = recording_create  # type: ignore[method-assign]

    def _on_accept(self, reader, writer) -> None:
        self.link_peers.append(writer.get_extra_info("peername")[0])
        super()._on_accept(reader, writer)

    def _record(self, circ) -> None:
        original = circ._dispatch

        def dispatch(msg, digest, command):
            self.recognized.append((msg.command.name, msg.stream_id, msg.body))
            return original(msg, digest, command)

        circ._dispatch = dispatch  # type: ignore[method-assign]


async def test_no_hop_sees_both_ends(tmp_path: Path) -> None:
    # The crawl (UDP) keeps the client's directory traffic off the relays' links: with directory
    # guards a 3-relay mesh's every relay is an entry guard or a directory source of the client,
    # and this test is about what the hops of one circuit see.
    m, extras = await start_mesh(
        tmp_path, relays=3, exits=1, relay_factory={i: RecordingRelay for i in range(3)}, directory="crawl"
    )
    try:
        exit_relay, guard, middle = m.relays[0], m.relays[1], m.relays[2]
        await m.client.circuits.build(
            via=[guard.fingerprint, middle.fingerprint], exit_fp=exit_relay.fingerprint
        )
        destination = "localhost"
        body = await asyncio.to_thread(
            http_get_via_socks, m.socks_port, destination, m.origin.port, "/blob/5000"
        )
        assert body == m.origin.blob(5000)
        # The guard saw the client's address, never the destination.
        assert guard.link_peers == ["127.0.0.1"]
        assert [name for name, _, _ in guard.recognized] == ["EXTEND"]
        assert not any(destination.encode() in b for _, _, b in guard.recognized)
        assert guard.destinations == []
        # The middle saw neither: only the guard's address, and only its own EXTEND.
        assert middle.link_peers == [guard.config.listen_host]
        assert [name for name, _, _ in middle.recognized] == ["EXTEND"]
        assert middle.destinations == []
        # The exit saw the destination but never the client's address.
        assert exit_relay.destinations == [destination]
        assert "127.0.0.1" not in exit_relay.link_peers
        assert exit_relay.link_peers == [middle.config.listen_host]
    finally:
        await stop_mesh(m, extras)


class TamperingRelay(RelayNode):
    """As hop 1, changes the Nth forwarded relay cell: flips a bit, replays, drops, reorders or injects."""

    mode = "flip"
    after = 6

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.forwarded = 0
        self._held: tuple[CellCommand, bytes] | None = None
        on_create = self.switch.on_create

        def tampering_create(link, cell) -> None:
            on_create(link, cell)
            slot = link.circuits.get(cell.circ_id)
            if slot is not None:  # the cells this hop forwards pass through tamper() when pulled
                circ = slot.circuit.circ
                take = circ.take_forward
                circ.take_forward = lambda: self.tamper(take())  # type: ignore[method-assign]

        self.switch.on_create = tampering_create  # type: ignore[method-assign]

    def tamper(self, cells: list[tuple[CellCommand, bytes]]) -> list[tuple[CellCommand, bytes]]:
        out = []
        for command, payload in cells:
            self.forwarded += 1
            if self.forwarded != self.after:
                out.append((command, payload))
                if self._held is not None and self.mode == "reorder":
                    out.append(self._held)
                    self._held = None
                continue
            if self.mode == "flip":
                out.append((command, payload[:100] + bytes([payload[100] ^ 0x01]) + payload[101:]))
            elif self.mode == "replay":
                out += [(command, payload), (command, payload)]
            elif self.mode == "drop":
                pass
            elif self.mode == "reorder":
                self._held = (command, payload)
            elif self.mode == "inject":
                out += [(command, os.urandom(len(payload))), (command, payload)]
        return out


@pytest.mark.parametrize("mode", ["flip", "replay", "drop", "reorder", "inject"])
async def test_tampering_at_hop_one_destroys_the_circuit(tmp_path: Path, mode: str) -> None:
    tamper = type(f"Tamper{mode}", (TamperingRelay,), {"mode": mode})
    m, extras = await start_mesh(tmp_path, relays=3, exits=1, relay_factory={1: tamper})
    try:
        exit_relay, guard, middle = m.relays
        handle = await m.client.circuits.build(
            via=[guard.fingerprint, middle.fingerprint], exit_fp=exit_relay.fingerprint
        )
        data = bytes(range(256)) * 400  # ~50 cells of DATA, well past the tampered cell

        def upload() -> None:
            s = socks5_connect(m.socks_port, "localhost", m.origin.port, timeout=10)
            try:
                s.sendall(b"POST /upload HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
                while s.recv(65536):
                    pass
            except OSError:
                pass
            finally:
                s.close()

        await asyncio.to_thread(upload)
        await eventually(
            lambda: handle.closed_reason is not None and bool(m.origin.uploads), 2.0, interval=0.02
        )
        assert exit_relay.stats["destroyed_protocol"] >= 1
        assert handle.closed_reason is not None
        # Whatever reached the destination is an unaltered prefix of what was sent, and not all of it.
        received = m.origin.uploads[-1] if m.origin.uploads else b""
        assert len(received) < len(data)
        assert data.startswith(received)
    finally:
        await stop_mesh(m, extras)


async def test_wrong_identity_is_refused(mesh: Mesh) -> None:
    relay = mesh.relays[0]

    class Owner:
        def cell_received(self, link, cell) -> None:
            pass

        def link_closed(self, link) -> None:
            pass

    impostor = IdentityKey.generate(SystemRng()).public
    with pytest.raises(OSError):
        await open_link(
            relay.config.listen_host, relay.config.listen_port, impostor, Owner(), SystemRng(), timeout=5
        )
    link = await open_link(
        relay.config.listen_host, relay.config.listen_port, relay.keys.identity.public, Owner(), SystemRng()
    )
    assert link.peer_identity == relay.keys.identity.public
    link.close()


async def _garbage(host: str, port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 20)
    except (ConnectionError, TimeoutError):
        return b""
    finally:
        writer.close()


async def test_garbage_on_relay_port_is_closed_and_relay_keeps_serving(mesh: Mesh) -> None:
    relay = mesh.relays[0]
    host, port = relay.config.listen_host, relay.config.listen_port
    payloads = [
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
        os.urandom(64),
        os.urandom(5000),
        b"OMLK" + bytes(60),
        b"OMLK\x00\x01",
    ]
    results = await asyncio.gather(*(_garbage(host, port, p) for p in payloads[1:]))
    assert all(r == b"" for r in results[:2])  # not the magic: closed without a word
    # A peer that completes the handshake and then sends junk records is cut off too.

    class Owner:
        closed = asyncio.Event()

        def cell_received(self, link, cell) -> None:
            pass

        def link_closed(self, link) -> None:
            Owner.closed.set()

    link = await open_link(host, port, relay.keys.identity.public, Owner(), SystemRng())
    link.writer.write(os.urandom(4096))
    await asyncio.wait_for(Owner.closed.wait(), 10)
    # A valid link sending a truncated CREATE and cells for unknown circuits: circuits still get built.
    link2 = await open_link(host, port, relay.keys.identity.public, Owner(), SystemRng())
    link2.send_cell(Cell(0x8000_0007, CellCommand.CREATE, b"\x00\x01\x00\x60" + b"x" * 10))
    link2.send_cell(Cell(0x8000_0009, CellCommand.RELAY, os.urandom(100)))
    link2.send_cell(Cell(0x0000_0005, CellCommand.CREATE, b""))  # the wrong half of the id space
    await asyncio.sleep(0.2)
    body = await asyncio.to_thread(
        http_get_via_socks, mesh.socks_port, "localhost", mesh.origin.port, "/blob/1000"
    )
    assert body == mesh.origin.blob(1000)
    link2.close()


@pytest.mark.parametrize("htype", [0x0001, 0x0002, 0x0005])
async def test_a_retired_or_unknown_handshake_type_gets_destroy_protocol(mesh: Mesh, htype: int) -> None:
    """A well-formed onionskin under a handshake type the relay does not run is refused with
    DESTROY PROTOCOL on that circuit, and the link stays up for the next CREATE."""
    relay = mesh.relays[0]
    got: asyncio.Queue[Cell] = asyncio.Queue()

    class Owner:
        def cell_received(self, link, cell) -> None:
            got.put_nowait(cell)

        def link_closed(self, link) -> None:
            pass

    link = await open_link(
        relay.config.listen_host, relay.config.listen_port, relay.keys.identity.public, Owner(), SystemRng()
    )
    _, skin = ntor.client_start(relay.keys.identity.public, relay.keys.current.key.public, SystemRng())
    link.send_cell(Cell(0x8000_0011, CellCommand.CREATE, create_payload(htype, skin)))
    answer = await asyncio.wait_for(got.get(), 10)
    assert (answer.circ_id, answer.command) == (0x8000_0011, CellCommand.DESTROY)
    assert answer.payload[:1] == destroy_payload(DestroyReason.PROTOCOL)[:1]
    _, skin = ntor.client_start(relay.keys.identity.public, relay.keys.current.key.public, SystemRng())
    link.send_cell(Cell(0x8000_0013, CellCommand.CREATE, create_payload(ntor.LOCAL_TYPES[0], skin)))
    answer = await asyncio.wait_for(got.get(), 10)
    assert (answer.circ_id, answer.command) == (0x8000_0013, CellCommand.CREATED)
    link.close()


MALFORMED_SOCKS = [
    b"\x05",  # truncated greeting, then EOF
    b"\x05\x00",  # no methods
    b"\x05\x01\x03",  # only an unsupported method
    b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50",  # BIND
    b"\x05\x01\x00\x05\x01\x00\x09\x00\x00",  # unknown address type
    b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50",  # empty hostname
    b"\x05\x01\x00\x05\x01\x00\x03\x05a\x00b\x00c\x00\x50",  # NUL in hostname
    b"\x04\x01\x00\x50\x00\x00\x00\x01" + b"u" * 600,  # SOCKS4a with an endless userid
    b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"\x00" * 2000,
    os.urandom(3000),
]


async def test_malformed_socks_requests_get_clean_errors(mesh: Mesh) -> None:
    async def one(payload: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", mesh.socks_port)
        writer.write(payload)
        if payload == b"\x05":
            writer.write_eof()
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 35)
        except (ConnectionError, TimeoutError) as exc:
            return repr(exc).encode()
        finally:
            writer.close()

    replies = await asyncio.gather(*(one(p) for p in MALFORMED_SOCKS))
    assert all(b"TimeoutError" not in r for r in replies)  # every one was answered or closed
    assert replies[3].endswith(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")  # command not supported
    assert b"\x05\x08" in replies[4]  # address type not supported
    assert replies[8].startswith(b"HTTP/1.0 501")
    body = await asyncio.to_thread(
        http_get_via_socks, mesh.socks_port, "localhost", mesh.origin.port, "/blob/1000"
    )
    assert body == mesh.origin.blob(1000)


async def test_a_dead_relay_only_kills_its_circuits(mesh: Mesh) -> None:
    size = 100_000
    handle = await mesh.client.circuits.build(port=mesh.origin.port)
    victim = mesh.relay(handle.path[1].fingerprint)
    await victim.stop()
    assert await eventually(lambda: handle.closed_reason is not None, 4.0, interval=0.02)
    # New streams are built around it (the directory still lists it: a retry picks another path).
    body = await asyncio.to_thread(
        http_get_via_socks, mesh.socks_port, "localhost", mesh.origin.port, f"/blob/{size}"
    )
    assert body == mesh.origin.blob(size)
    assert socket  # keep the import used in all branches
