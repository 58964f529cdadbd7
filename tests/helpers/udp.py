"""UDP servers on loopback for the UDP ASSOCIATE tests and bench: a small DNS server (standard
library only: it answers every A question with one fixed address), an echo server, a sink, and a
DNS query builder/parser for clients."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

DNS_ANSWER_IP = "127.0.0.42"


def dns_query(name: str, query_id: int) -> bytes:
    """A standard query (RD set) for the A record of `name`."""
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)


def _question_end(packet: bytes) -> int:
    at = 12
    while packet[at] != 0:
        at += 1 + packet[at]
    return at + 1 + 4


def dns_answer_of(packet: bytes) -> tuple[int, str]:
    """(query id, the first A record's address) of a response; ValueError if it has none."""
    query_id, flags, _qd, an, _ns, _ar = struct.unpack(">HHHHHH", packet[:12])
    if not flags & 0x8000 or an < 1:
        raise ValueError("not an answer")
    at = _question_end(packet)
    _ptr, rtype, _cls, _ttl, rdlen = struct.unpack(">HHHIH", packet[at : at + 12])
    if rtype != 1 or rdlen != 4:
        raise ValueError("not an A record")
    return query_id, ".".join(str(b) for b in packet[at + 12 : at + 16])


def _dns_reply(data: bytes) -> bytes | None:
    """The answer to a standard query: its question and one A record (DNS_ANSWER_IP)."""
    try:
        end = _question_end(data)
    except IndexError:
        return None
    (query_id,) = struct.unpack(">H", data[:2])
    header = struct.pack(">HHHHHH", query_id, 0x8180, 1, 1, 0, 0)
    answer = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + bytes(int(p) for p in DNS_ANSWER_IP.split("."))
    return header + data[12:end] + answer


class _Answering(asyncio.DatagramProtocol):
    """Counts every datagram and its sender, then sends back what `reply` makes of it (None: nothing)."""

    def __init__(self, server: UdpServer, reply: Callable[[bytes], bytes | None]) -> None:
        self.server = server
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.received += 1
        self.server.peers.add(addr[0])
        answer = self.reply(data)
        if answer is not None:
            self.transport.sendto(answer, addr)  # type: ignore[attr-defined]


@dataclass
class UdpServer:
    port: int = 0
    received: int = 0
    echo: bool = True
    peers: set[str] = field(default_factory=set)
    transport: asyncio.DatagramTransport | None = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start_udp_server(kind: str = "echo", host: str = "127.0.0.1") -> UdpServer:
    """kind: "dns" (answers A queries), "echo" (sends every datagram back) or "sink" (counts only)."""
    server = UdpServer(echo=kind == "echo")
    loop = asyncio.get_running_loop()
    reply = _dns_reply if kind == "dns" else (lambda data: data if server.echo else None)
    server.transport, _ = await loop.create_datagram_endpoint(
        lambda: _Answering(server, reply), local_addr=(host, 0)
    )
    server.port = server.transport.get_extra_info("sockname")[1]
    return server
