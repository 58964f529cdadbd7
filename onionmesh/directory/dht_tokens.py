"""Address tokens for the DHT, sans-I/O: proof that a requester receives at its source address.

A token is a keyed BLAKE2b of (time bucket, IP, port) under a secret that never leaves the node,
so only the node can mint one and only a datagram delivered to that address can carry one back.
A token is valid in the bucket it was minted in and the next one (between `period` and
2 × `period` seconds), like BitTorrent's rotating get_peers token, and nothing is stored per
requester: checking costs one hash.  The caller feeds the time (any monotonic clock).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

TOKEN_LEN = 16
PERIOD = 300.0
_PERSON = b"om-dht-token"


def address_bytes(address: tuple[str, int]) -> bytes:
    """The canonical bytes of (ip, port); IPv4-mapped IPv6 counts as the IPv4 address."""
    ip = ipaddress.ip_address(address[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bytes([ip.version]) + ip.packed + int(address[1]).to_bytes(2, "big")


class AddressTokens:
    def __init__(self, secret: bytes, period: float = PERIOD) -> None:
        if len(secret) < 16:
            raise ValueError("token secret too short")
        self._secret = secret
        self.period = period

    def _mac(self, bucket: int, address: tuple[str, int]) -> bytes:
        h = hashlib.blake2b(key=self._secret, digest_size=TOKEN_LEN, person=_PERSON)
        h.update(bucket.to_bytes(8, "big", signed=True) + address_bytes(address))
        return h.digest()

    def mint(self, address: tuple[str, int], now: float) -> bytes:
        return self._mac(int(now // self.period), address)

    def check(self, address: tuple[str, int], token: bytes, now: float) -> bool:
        """True iff `token` was minted for `address` in this bucket or the one before."""
        if len(token) != TOKEN_LEN:
            return False
        bucket = int(now // self.period)
        return any(hmac.compare_digest(token, self._mac(b, address)) for b in (bucket, bucket - 1))
