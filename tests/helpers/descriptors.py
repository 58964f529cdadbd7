"""Relay and onion-service descriptors for the sans-I/O tests: unsigned ones cheap enough for path
selection's property tests (`relay`), signed ones a store or a view accepts (`make`), and the parts
of an onion-service record (`hs_identity`, `hs_inner`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory import hs_descriptor as hd
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.rng import SeededRng

T0 = 1_700_000_000
HOUR = 3600
DAY = 24 * HOUR


# --- unsigned (path selection, guards, node restrictions) --------------------------------------------
def ident(i: int) -> bytes:
    return hashlib.sha256(b"identity %d" % i).digest()


def relay(
    i: int,
    addrs: Sequence[tuple[str, int]] | str = (),
    *,
    policy: str = "accept *:*",
    bw: int = 1_000_000,
    family: Sequence[int] = (),
    published: int = T0,
) -> RelayDescriptor:
    if isinstance(addrs, str):
        addrs = [(addrs, 9001)]
    return RelayDescriptor(
        version=1,
        nickname=f"r{i}",
        identity_pk=ident(i),
        onion_cert=OnionKeyCert(bytes(32), 0, 2**40, bytes(64)),
        link_addresses=tuple(addrs) or ((f"10.{i}.0.1", 9001),),
        dht_contact=None,
        exit_policy=policy,
        bandwidth=bw,
        family=tuple(sorted(ident(j) for j in set(family))),
        protocols="",
        published=published,
        expires=published + 3600,
        signature=bytes(64),
    )


# --- signed (DHT records, the client's view, vanguards) -------------------------------------------------
def identity(seed: int) -> IdentityKey:
    return IdentityKey.generate(SeededRng(seed))


def make(
    seed: int = 1,
    *,
    published: int = T0,
    lifetime: int = 18 * HOUR,
    ip: str | None = None,
    cert_until: int | None = None,
) -> RelayDescriptor:
    ident = identity(seed)
    onion = OnionKey.generate(SeededRng(10_000 + seed))
    cert = OnionKeyCert.issue(ident, onion.public, published - HOUR, cert_until or published + 7 * DAY)
    ip = ip or f"10.{seed % 250}.{seed // 250}.1"
    return RelayDescriptor.create(
        identity=ident,
        onion_cert=cert,
        nickname=f"relay{seed}",
        link_addresses=[(ip, 9001)],
        dht_contact=(ip, 4000),
        exit_policy="",
        bandwidth=1000,
        published=published,
        lifetime=lifetime,
    )


# --- onion services ---------------------------------------------------------------------------------
def hs_identity(seed: int = 1) -> ExpandedKey:
    return ExpandedKey.from_seed(SeededRng(seed).random_bytes(32))


def hs_inner(n: int = 3, pow_params: hd.PowParams | None = None) -> hd.InnerDescriptor:
    rng = SeededRng(99)
    points = tuple(
        hd.IntroPoint(
            rng.random_bytes(32), rng.random_bytes(32),
            ((f"192.0.2.{i + 1}", 9001),) + (((f"2001:db8::{i + 1}", 9001),) if i % 2 else ()),
            rng.random_bytes(32), rng.random_bytes(32),
        )
        for i in range(n)
    )  # fmt: skip
    return hd.InnerDescriptor(points, pow_params)
