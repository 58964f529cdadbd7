"""The DHT's UDP datagram framing (docs/protocol.md §9.6): a fixed header, then msgpack.

    datagram = kind u8 ‖ msg_id (20) ‖ token (16) ‖ body
    kind 0x02 REQUEST   body = msgpack [name, [args...]]; token = the address token the
                        recipient last gave this sender, or 16 zero bytes
    kind 0x03 RESPONSE  body = msgpack result; token = a fresh token for the requester's address
    kind 0x04 RETRY     body empty; token = a fresh token for the requester's address
    kind 0x05 REQUEST_PART, 0x06 RESPONSE_PART
                        body = u8 index ‖ u8 count ‖ chunk: one of `count` (2..MAX_PARTS)
                        pieces of a REQUEST or RESPONSE body too long for one datagram

No datagram is longer than MAX_DATAGRAM (1,200 bytes), so none fragments at the IP layer on any
path (IPv6's minimum MTU is 1,280); a longer message (a descriptor, an onion-service record, at
most MAX_MESSAGE bytes of body) travels in parts that `Reassembly` puts back together, within
bounds on how many messages it holds and for how long.

The token makes a requester prove that it receives at its source address before a node does
any work for it or sends it more than it sent (as QUIC's Retry and BitTorrent's get_peers
token do): a REQUEST without a valid token is answered only with a RETRY, which is shorter
than any REQUEST.  This module only frames; minting and checking tokens is directory.dht_tokens.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

MSG_ID_LEN = 20
TOKEN_LEN = 16
HEADER_LEN = 1 + MSG_ID_LEN + TOKEN_LEN
MAX_DATAGRAM = 1200  # every datagram sent or accepted; 1,200 + 48 (IPv6 + UDP) < 1,280
MAX_MESSAGE = 4096  # a whole REQUEST or RESPONSE body, in one datagram or reassembled from parts
PART_HEADER = 2  # u8 index, u8 count
MAX_CHUNK = MAX_DATAGRAM - HEADER_LEN - PART_HEADER  # 1,161
MAX_PARTS = -(-MAX_MESSAGE // MAX_CHUNK)  # 4
NO_TOKEN = bytes(TOKEN_LEN)


class Kind(enum.IntEnum):
    REQUEST = 0x02
    RESPONSE = 0x03
    RETRY = 0x04
    REQUEST_PART = 0x05
    RESPONSE_PART = 0x06


WHOLE_KIND = {Kind.REQUEST_PART: Kind.REQUEST, Kind.RESPONSE_PART: Kind.RESPONSE}
PART_KIND = {whole: part for part, whole in WHOLE_KIND.items()}


@dataclass(frozen=True, slots=True)
class DhtDatagram:
    kind: Kind
    msg_id: bytes
    token: bytes
    body: bytes = b""

    def encode(self) -> bytes:
        if len(self.msg_id) != MSG_ID_LEN or len(self.token) != TOKEN_LEN:
            raise ValueError("bad DHT datagram header")
        if (self.kind is Kind.RETRY) != (not self.body):
            raise ValueError("a RETRY and only a RETRY has no body")
        if self.kind in WHOLE_KIND:
            self.part()  # ValueError unless a well-formed part
        data = bytes([self.kind]) + self.msg_id + self.token + self.body
        if len(data) > MAX_DATAGRAM:
            raise ValueError("DHT datagram too long")
        return data

    def part(self) -> tuple[int, int, bytes]:
        """(index, count, chunk) of a *_PART datagram; ValueError if malformed."""
        if self.kind not in WHOLE_KIND or len(self.body) <= PART_HEADER:
            raise ValueError("not a DHT message part")
        index, count = self.body[0], self.body[1]
        if not (2 <= count <= MAX_PARTS and index < count):
            raise ValueError("bad DHT part index or count")
        return index, count, self.body[PART_HEADER:]


def encode_message(kind: Kind, msg_id: bytes, token: bytes, body: bytes) -> list[bytes]:
    """The datagrams that carry one REQUEST or RESPONSE (or RETRY): one if it fits, else parts
    of equal size (± 1 byte); ValueError if the body is longer than MAX_MESSAGE."""
    if HEADER_LEN + len(body) <= MAX_DATAGRAM or kind is Kind.RETRY:
        return [DhtDatagram(kind, msg_id, token, body).encode()]
    if kind not in PART_KIND or len(body) > MAX_MESSAGE:
        raise ValueError("DHT message too long")
    count = -(-len(body) // MAX_CHUNK)
    size, extra = divmod(len(body), count)
    out, at = [], 0
    for index in range(count):
        n = size + (index < extra)
        chunk = bytes([index, count]) + body[at : at + n]
        out.append(DhtDatagram(PART_KIND[kind], msg_id, token, chunk).encode())
        at += n
    return out


class Reassembly:
    """Puts parts back into whole messages, bounded: at most `max_pending` messages in progress
    (the oldest is dropped for a new one), `max_per_source` per source, each for `ttl` seconds;
    parts must agree on count and token, a duplicate replaces nothing.  Sans-I/O: `now` is given."""

    def __init__(self, max_pending: int = 256, max_per_source: int = 4, ttl: float = 10.0) -> None:
        self.max_pending, self.max_per_source, self.ttl = max_pending, max_per_source, ttl
        self._pending: OrderedDict[tuple[Hashable, bytes, Kind], _Partial] = OrderedDict()
        self._per_source: dict[Hashable, int] = {}
        self.dropped = 0  # parts refused (inconsistent, over a bound) or messages expired/evicted

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, source: Hashable, datagram: DhtDatagram, now: float) -> DhtDatagram | None:
        """The whole message once its last part arrived, else None.  ValueError if malformed."""
        index, count, chunk = datagram.part()
        self._expire(now)
        key = (source, datagram.msg_id, datagram.kind)
        partial = self._pending.get(key)
        if partial is None:
            if self._per_source.get(source, 0) >= self.max_per_source:
                self.dropped += 1
                return None
            while len(self._pending) >= self.max_pending:
                self._forget(next(iter(self._pending)))
                self.dropped += 1
            partial = _Partial(count, datagram.token, now)
            self._pending[key] = partial
            self._per_source[source] = self._per_source.get(source, 0) + 1
        if count != partial.count or datagram.token != partial.token:
            self.dropped += 1
            return None
        if index not in partial.chunks:
            partial.chunks[index] = chunk
            partial.size += len(chunk)
        if partial.size > MAX_MESSAGE:
            self._forget(key)
            self.dropped += 1
            return None
        if len(partial.chunks) < count:
            return None
        self._forget(key)
        body = b"".join(partial.chunks[i] for i in range(count))
        return DhtDatagram(WHOLE_KIND[datagram.kind], datagram.msg_id, datagram.token, body)

    def _forget(self, key: tuple[Hashable, bytes, Kind]) -> None:
        if self._pending.pop(key, None) is not None:
            left = self._per_source[key[0]] - 1
            if left:
                self._per_source[key[0]] = left
            else:
                del self._per_source[key[0]]

    def _expire(self, now: float) -> None:
        while self._pending:
            key, partial = next(iter(self._pending.items()))
            if now - partial.started < self.ttl:
                break
            self._forget(key)
            self.dropped += 1


@dataclass
class _Partial:
    count: int
    token: bytes
    started: float
    size: int = 0

    def __post_init__(self) -> None:
        self.chunks: dict[int, bytes] = {}


def decode_datagram(data: bytes) -> DhtDatagram:
    """Parse one datagram; ValueError for anything that is not exactly this framing."""
    if not HEADER_LEN <= len(data) <= MAX_DATAGRAM:
        raise ValueError("DHT datagram of bad length")
    kind = Kind(data[0])  # ValueError for an unknown kind (the pre-token 0x00/0x01 included)
    body = data[HEADER_LEN:]
    if (kind is Kind.RETRY) != (not body):
        raise ValueError("a RETRY and only a RETRY has no body")
    datagram = DhtDatagram(kind, data[1 : 1 + MSG_ID_LEN], data[1 + MSG_ID_LEN : HEADER_LEN], body)
    if kind in WHOLE_KIND:
        datagram.part()  # ValueError unless well-formed
    return datagram
