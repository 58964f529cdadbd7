"""A link over TCP: drives `proto.link.LinkProtocol` from an asyncio stream pair.

One reader task per link feeds bytes to the sans-I/O protocol and hands each cell to the
owner (`LinkOwner.cell_received`).  Outgoing cells are collected and written once per event
loop turn, so a burst of cells becomes one record.  Keep-alive PADDING cells go out when the
link is quiet; a link that hears nothing for `idle_timeout` is closed.

Not in this module: what cells mean (relay_node, client_node).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol

from onionmesh.crypto.keys import IdentityKey
from onionmesh.errors import OnionmeshError, RemoteProtocolError
from onionmesh.proto.link import LinkEstablished, LinkProtocol, LinkRole
from onionmesh.rng import Rng
from onionmesh.runtime.safelog import get_logger
from onionmesh.wire.cell import INITIATOR_CIRC_BIT, Cell, CellCommand

log = get_logger("onionmesh.link")

HANDSHAKE_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 30.0
IDLE_TIMEOUT = 120.0
READ_CHUNK = 256 * 1024
PADDING_CELL = Cell(0, CellCommand.PADDING).encode()


class LinkOwner(Protocol):
    def cell_received(self, link: Link, cell: Cell) -> None: ...
    def link_closed(self, link: Link) -> None: ...


class Link:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        proto: LinkProtocol,
        owner: LinkOwner,
        rng: Rng,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.proto = proto
        self.owner = owner
        self.rng = rng
        self.circuits: dict[int, object] = {}
        self.closed = False
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._loop.time()
        self._last_sent = self._loop.time()
        self._tasks: list[asyncio.Task[None]] = []
        self.established = asyncio.Event()
        self.peer_identity: bytes | None = None

    @property
    def is_initiator(self) -> bool:
        return self.proto.role is LinkRole.INITIATOR

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._read_loop(), name="link-read"))

    def _start_keepalive(self) -> None:
        """Only links that finished their handshake get a keep-alive task (junk costs one task)."""
        self._tasks.append(asyncio.create_task(self._keepalive_loop(), name="link-keepalive"))

    # --- sending -----------------------------------------------------------------------------
    def send_cell(self, cell: Cell) -> None:
        self.send_raw(cell.encode())

    def send_raw(self, encoded: bytes) -> None:
        if self.closed:
            return
        self._pending.append(encoded)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self._pending:
            return
        cells, self._pending = self._pending, []
        self.proto.send_cells(cells)
        self._write(self.proto.data_to_send())

    def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            self._last_sent = self._loop.time()
        except (ConnectionError, RuntimeError):
            self.close()

    @property
    def write_buffer_size(self) -> int:
        transport = self.writer.transport
        return 0 if transport is None or transport.is_closing() else transport.get_write_buffer_size()

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.writer.drain()

    def allocate_circ_id(self) -> int:
        """A fresh circuit id on this link; the initiator's have the high bit set, so ends never collide."""
        high = INITIATOR_CIRC_BIT if self.is_initiator else 0
        while True:
            cid = high | (int.from_bytes(self.rng.random_bytes(4), "big") & 0x7FFF_FFFF)
            if cid & 0x7FFF_FFFF and cid not in self.circuits:
                return cid

    def peer_may_use(self, circ_id: int) -> bool:
        """Is `circ_id` in the range the peer allocates from?"""
        peer_high = 0 if self.is_initiator else INITIATOR_CIRC_BIT
        return circ_id != 0 and (circ_id & INITIATOR_CIRC_BIT) == peer_high

    # --- receiving -----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            while not self.closed:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                self._last_heard = self._loop.time()
                for event in self.proto.receive_data(data):
                    if isinstance(event, Cell):
                        if event.command is not CellCommand.PADDING:
                            self.owner.cell_received(self, event)
                    elif isinstance(event, LinkEstablished):
                        self.peer_identity = event.peer_identity
                        self._write(self.proto.data_to_send())
                        self.established.set()
                        self._start_keepalive()
                    if self.closed:
                        break
        except (OnionmeshError, RemoteProtocolError) as exc:
            log.info("link closed: protocol violation", error=type(exc).__name__, detail=str(exc))
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # a bug must cost one link, never the process
            log.error("link closed: internal error", error=type(exc).__name__)
        finally:
            self.close()

    async def _keepalive_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(KEEPALIVE_INTERVAL / 3)
            now = self._loop.time()
            if now - self._last_heard > IDLE_TIMEOUT:
                log.info("link closed: peer silent")
                self.close()
                return
            if self.established.is_set() and now - self._last_sent > KEEPALIVE_INTERVAL:
                self.send_raw(PADDING_CELL)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proto.close()
        with contextlib.suppress(Exception):
            self.writer.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.established.set()
        self.owner.link_closed(self)


async def open_link(
    host: str,
    port: int,
    identity_pk: bytes,
    owner: LinkOwner,
    rng: Rng,
    timeout: float = HANDSHAKE_TIMEOUT,
    local_host: str | None = None,
) -> Link:
    """Connect to a relay and finish the handshake, pinning its identity; raises OSError on failure.

    A relay passes its own address as `local_host`, so its peers see the relay's address.
    """
    local = (local_host, 0) if local_host else None
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=local), timeout)
    with contextlib.suppress(OSError):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    proto = LinkProtocol(LinkRole.INITIATOR, rng, expected_identity=identity_pk)
    link = Link(reader, writer, proto, owner, rng)
    proto.initiate()
    writer.write(proto.data_to_send())
    link.start()
    try:
        await asyncio.wait_for(link.established.wait(), timeout)
    except TimeoutError:
        link.close()
        raise OSError("link handshake timed out") from None
    if link.closed:
        raise OSError("link handshake failed")
    return link


def accept_link(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    identity: IdentityKey,
    owner: LinkOwner,
    rng: Rng,
) -> Link:
    proto = LinkProtocol(LinkRole.RESPONDER, rng, identity=identity)
    link = Link(reader, writer, proto, owner, rng)
    link.start()

    def handshake_deadline() -> None:
        if not link.established.is_set():
            link.close()

    asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, handshake_deadline)
    return link
