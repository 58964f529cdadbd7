"""DHT RPCs carried inside a circuit: the bodies of DHT_RPC and DHT_ANSWER (docs/protocol.md).

A client that must send no UDP to the DHT (bridge mode, `--dht-over-circuits`) still runs its
own lookups and crawls; only the transport changes.  Each RPC becomes one DHT_RPC message to the
circuit's last hop, which sends it from its own DHT node to the named contact and returns the
answer in DHT_ANSWER messages (the relay message's stream_id is the request id).

    DHT_RPC    = address (push_address: IPv4/IPv6 only) | port u16 | vec16 request
                 request = msgpack [name, [args...]] (<= MAX_REQUEST; the last hop accepts more than
                 1024 bytes only for a `store` of an onion-service record)
    DHT_ANSWER = status u8 | flags u8 (bit 0: more chunks follow) | vec16 chunk
                 the chunks of an OK answer concatenate to the msgpack answer (<= MAX_ANSWER)
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from onionmesh.wire.buffer import Buffer
from onionmesh.wire.chunked import Assembler, ChunkBody, decoder, split
from onionmesh.wire.relay_address import pull_address, push_address
from onionmesh.wire.relay_msg import _decoding

MAX_REQUEST = 3712  # a `store` of an onion-service record (<= 3584 bytes) with its framing
MAX_ANSWER = 4096  # a DHT datagram is at most this long


class DhtStatus(enum.IntEnum):
    OK = 0
    TIMEOUT = 1  # the contact did not answer
    REFUSED = 2  # not a DHT contact this relay knows, or not an RPC a client may send
    RATE_LIMITED = 3


@dataclass(frozen=True, slots=True)
class DhtRpc:
    host: str
    port: int
    request: bytes

    def encode(self) -> bytes:
        ipaddress.ip_address(self.host)  # IP literals only: a relay never resolves names for this
        if not 0 < self.port <= 0xFFFF or len(self.request) > MAX_REQUEST:
            raise ValueError("bad DHT_RPC")
        buf = Buffer()
        push_address(buf, self.host)
        return buf.push_u16(self.port).push_vec16(self.request).getvalue()

    @_decoding("DHT_RPC")
    def decode(cls, buf: Buffer) -> DhtRpc:
        host = pull_address(buf)
        if host is None:
            raise ValueError("DHT_RPC needs an address")
        ipaddress.ip_address(host)  # a hostname is refused (ValueError)
        port = buf.pull_u16()
        request = buf.pull_vec16()
        if port == 0 or len(request) > MAX_REQUEST:
            raise ValueError("bad DHT_RPC")
        return cls(host, port, request)


class DhtAnswer(ChunkBody[DhtStatus]):
    """One DHT_ANSWER body (the framing: wire.chunked)."""

    __slots__ = ()
    STATUS = DhtStatus
    decode = decoder("DHT_ANSWER")


def answer_bodies(status: DhtStatus, answer: bytes = b"") -> list[bytes]:
    """The DHT_ANSWER bodies for one answer."""
    if len(answer) > MAX_ANSWER:
        raise ValueError("answer too long")
    return split(DhtAnswer, status, answer)


class AnswerAssembler(Assembler[DhtStatus]):
    """Joins DHT_ANSWER chunks per request id, at most MAX_ANSWER bytes per answer."""

    def __init__(self, max_pending: int = 256) -> None:
        super().__init__(MAX_ANSWER, max_pending, "DHT answer")
