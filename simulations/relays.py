"""Synthetic relays with real keys and real signed descriptors.

Why real ones: the studies feed them to the project's own code (descriptor verification in the
DHT, `path_selection`, `guards`), which reads identity keys, addresses, exit policies and
bandwidth from descriptors.  Creating and signing one costs about 0.1 ms (measured: 1,000 in
0.10 s on the 2-core VM), so 10,000 are made afresh each run; no key cache is needed.

Bandwidth is heavy-tailed (log-normal, median 2 MB/s, sigma 1.3), an assumption shaped like
Tor's relay population, not fitted to it.  Addresses are random public IPv4 addresses, so
/16 and /24 collisions happen about as often as chance makes them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.rng import Rng

EXIT_POLICY = "accept *:80,443; reject *:*"
NON_EXIT_POLICY = ""  # an empty policy is how a descriptor says "not an exit"
EPOCH = 1_790_000_000  # virtual time 0 of every study (a date in 2026), seconds since 1970
_FIRST_OCTETS = [o for o in range(11, 224) if o not in (100, 127, 169, 172, 192, 198, 203)]


class PyRng:
    """The project's `Rng` protocol on `random.Random`: fast and seedable, for simulations only."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)

    def random_bytes(self, n: int) -> bytes:
        return self._r.randbytes(n)

    def randbelow(self, n: int) -> int:
        if n <= 0:
            raise ValueError("randbelow needs n > 0")
        return self._r.randrange(n)


@dataclass
class Relay:
    identity: IdentityKey
    descriptor: RelayDescriptor
    raw: bytes
    ip: str
    capacity: int  # what it can really carry, bytes/s
    adversary: bool = False

    @property
    def fingerprint(self) -> str:
        return self.descriptor.fingerprint

    @property
    def is_exit(self) -> bool:
        return self.descriptor.is_exit


def random_ip(rng: random.Random, used: set[str]) -> str:
    while True:
        ip = f"{rng.choice(_FIRST_OCTETS)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if ip not in used:
            used.add(ip)
            return ip


def tor_like_bandwidth(rng: random.Random) -> int:
    """A relay's capacity in bytes/s: log-normal, median 2 MB/s, at least 50 kB/s."""
    return max(50_000, int(2_000_000 * rng.lognormvariate(0.0, 1.3)))


def make_relay(
    rng: Rng,
    index: int,
    ip: str,
    *,
    capacity: int,
    advertised: int | None = None,
    exit_relay: bool = False,
    adversary: bool = False,
    dht_port: int | None = 9002,
    published: int = EPOCH,
) -> Relay:
    """One relay with fresh keys and a descriptor signed at `published` (valid 18 h)."""
    identity = IdentityKey.generate(rng)
    onion = OnionKey.generate(rng)
    cert = OnionKeyCert.issue(identity, onion.public, published - 3600, published + 7 * 86_400)
    desc = RelayDescriptor.create(
        identity=identity,
        onion_cert=cert,
        nickname=f"{'adv' if adversary else 'r'}{index}",
        link_addresses=[(ip, 9001)],
        dht_contact=None if dht_port is None else (ip, dht_port),
        exit_policy=EXIT_POLICY if exit_relay else NON_EXIT_POLICY,
        bandwidth=min(advertised if advertised is not None else capacity, 2**32 - 1),
        published=published,
    )
    return Relay(identity, desc, desc.encode(), ip, capacity, adversary)
