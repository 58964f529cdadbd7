"""The DHT's UDP datagram framing (docs/protocol.md §9.6): a fixed header, then msgpack.

    datagram = kind u8 ‖ msg_id (20) ‖ token (16) ‖ body
    kind 0x02 REQUEST   body = msgpack [name, [args...]]; token = the address token the
                        recipient last gave this sender, or 16 zero bytes
    kind 0x03 RESPONSE  body = msgpack result; token = a fresh token for the requester's address
    kind 0x04 RETRY     body empty; token = a fresh token for the requester's address

The token makes a requester prove that it receives at its source address before a node does
any work for it or sends it more than it sent (as QUIC's Retry and BitTorrent's get_peers
token do): a REQUEST without a valid token is answered only with a RETRY, which is shorter
than any REQUEST.  This module only frames; minting and checking tokens is directory.dht_tokens.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MSG_ID_LEN = 20
TOKEN_LEN = 16
HEADER_LEN = 1 + MSG_ID_LEN + TOKEN_LEN
MAX_DATAGRAM = 4096
NO_TOKEN = bytes(TOKEN_LEN)


class Kind(enum.IntEnum):
    REQUEST = 0x02
    RESPONSE = 0x03
    RETRY = 0x04


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
        data = bytes([self.kind]) + self.msg_id + self.token + self.body
        if len(data) > MAX_DATAGRAM:
            raise ValueError("DHT datagram too long")
        return data


def decode_datagram(data: bytes) -> DhtDatagram:
    """Parse one datagram; ValueError for anything that is not exactly this framing."""
    if not HEADER_LEN <= len(data) <= MAX_DATAGRAM:
        raise ValueError("DHT datagram of bad length")
    kind = Kind(data[0])  # ValueError for an unknown kind (the pre-token 0x00/0x01 included)
    body = data[HEADER_LEN:]
    if (kind is Kind.RETRY) != (not body):
        raise ValueError("a RETRY and only a RETRY has no body")
    return DhtDatagram(kind, data[1 : 1 + MSG_ID_LEN], data[1 + MSG_ID_LEN : HEADER_LEN], body)
