"""Tests for onionmesh.directory.dht_records (node IDs, hello proofs, subnets, the validating
descriptor store) and onionmesh.directory.view (the client's bounded, per-subnet-capped NetView).

Pure: no sockets, every clock injected.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onionmesh.directory.descriptor import MAX_DESCRIPTOR_LEN, decode_and_verify
from onionmesh.directory.dht_records import (
    HELLO_CONTEXT,
    NODE_ID_LEN,
    NONCE_LEN,
    DescriptorStore,
    StoreResult,
    node_id_for,
    sign_hello,
    subnet_of,
    verify_hello,
)
from onionmesh.directory.view import MISSED_CRAWLS_TO_DROP, NetView
from onionmesh.errors import CryptoError
from tests.helpers.descriptors import DAY, HOUR, T0, identity, make


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def flip(raw: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(raw)
    out[index] ^= 1 << bit
    return bytes(out)


def assert_only_valid(store: DescriptorStore) -> None:
    """Every value the store hands out is a current, valid descriptor held under its own key."""
    now = store.clock()
    for key, raw in list(store):
        assert isinstance(key, bytes) and len(key) == NODE_ID_LEN
        assert isinstance(raw, bytes) and len(raw) <= MAX_DESCRIPTOR_LEN
        desc = decode_and_verify(raw, now)
        assert desc.dht_key == key
        assert store.get(key) == raw
        assert store.descriptor(key) == desc


# --- DescriptorStore: what it accepts ------------------------------------------------------------
def test_stores_a_valid_descriptor_under_its_key() -> None:
    store = DescriptorStore(Clock())
    d = make()
    raw = d.encode()
    assert store.offer(d.dht_key, raw) is StoreResult.STORED
    assert store.get(d.dht_key) == raw == store[d.dht_key]
    assert store.descriptor(d.dht_key) == d
    assert list(store) == [(d.dht_key, raw)]
    assert len(store) == 1
    assert store.refused == {}
    assert store.get(bytes(20)) is None and store.get(bytes(20), b"x") == b"x"
    with pytest.raises(KeyError):
        store[bytes(20)]
    # kademlia's IStorage interface: item assignment goes through the same validation
    other = make(2)
    store[other.dht_key] = other.encode()
    assert store.get(other.dht_key) == other.encode()
    store[other.dht_key] = "not bytes"  # type: ignore[assignment]
    assert store.refused == {StoreResult.NOT_BYTES: 1}


@pytest.mark.parametrize("value", ["a descriptor", 12345, {"value": b"x"}, [b"x"], None, 1.5, True])
def test_refuses_non_bytes_values(value: Any) -> None:
    store = DescriptorStore(Clock())
    assert store.offer(make().dht_key, value) is StoreResult.NOT_BYTES
    assert store.refused == {StoreResult.NOT_BYTES: 1}
    assert len(store) == 0


def test_refuses_a_bytearray_copy_of_a_valid_descriptor() -> None:
    d = make()
    store = DescriptorStore(Clock())
    assert store.offer(d.dht_key, bytearray(d.encode())) is StoreResult.NOT_BYTES
    assert len(store) == 0


@pytest.mark.parametrize("key", [b"", b"\x00" * 19, b"\x00" * 21, "k" * 20, 7, None, [0] * 20, bytearray(20)])
def test_refuses_bad_keys(key: Any) -> None:
    store = DescriptorStore(Clock())
    assert store.offer(key, make().encode()) is StoreResult.BAD_KEY
    assert store.refused == {StoreResult.BAD_KEY: 1}
    assert len(store) == 0


def test_refuses_oversized_values() -> None:
    store = DescriptorStore(Clock())
    d = make()
    raw = d.encode()
    just_over = raw + bytes(MAX_DESCRIPTOR_LEN + 1 - len(raw))
    assert len(just_over) == MAX_DESCRIPTOR_LEN + 1
    assert store.offer(d.dht_key, just_over) is StoreResult.OVERSIZED
    assert store.offer(d.dht_key, raw + bytes(1 << 20)) is StoreResult.OVERSIZED
    assert store.offer(d.dht_key, os.urandom(1 << 20)) is StoreResult.OVERSIZED
    assert store.refused == {StoreResult.OVERSIZED: 3}
    assert len(store) == 0
    # a value of exactly the maximum length is judged on its content (here: trailing junk)
    at_max = raw + bytes(MAX_DESCRIPTOR_LEN - len(raw))
    assert store.offer(d.dht_key, at_max) is StoreResult.INVALID


def test_refuses_a_flipped_signature_bit_and_a_flipped_body_bit() -> None:
    store = DescriptorStore(Clock())
    d = make()
    raw = d.encode()
    for bad in (flip(raw, len(raw) - 1), flip(raw, len(raw) - 40, 7), flip(raw, len(raw) - 70)):
        assert store.offer(d.dht_key, bad) is StoreResult.INVALID
    assert store.offer(d.dht_key, raw[:-1]) is StoreResult.INVALID
    assert store.offer(d.dht_key, raw + b"\x00") is StoreResult.INVALID
    assert store.offer(d.dht_key, b"") is StoreResult.INVALID
    assert store.refused == {StoreResult.INVALID: 6}
    assert len(store) == 0


def test_refuses_a_descriptor_stored_under_another_relays_key() -> None:
    store = DescriptorStore(Clock())
    a, b = make(1), make(2)
    assert store.offer(b.dht_key, a.encode()) is StoreResult.WRONG_KEY
    assert store.offer(node_id_for(a.identity_pk), a.encode()) is StoreResult.WRONG_KEY  # node ID ≠ key
    assert store.refused == {StoreResult.WRONG_KEY: 2}
    assert len(store) == 0
    # b's own descriptor is still welcome at b's key, and a's at a's
    assert store.offer(b.dht_key, b.encode()) is StoreResult.STORED
    assert store.offer(a.dht_key, a.encode()) is StoreResult.STORED


def test_newer_replaces_older_and_older_is_a_refused_replay() -> None:
    clock = Clock(T0 + 100)
    store = DescriptorStore(clock)
    old, new = make(published=T0), make(published=T0 + 50)
    key = old.dht_key
    assert store.offer(key, old.encode()) is StoreResult.STORED
    assert store.offer(key, new.encode()) is StoreResult.STORED
    assert store.get(key) == new.encode()
    assert store.offer(key, old.encode()) is StoreResult.OLDER
    # same publication time but different bytes (another onion key): first one wins
    same_time = make(published=T0 + 50, cert_until=T0 + 6 * DAY)
    assert same_time.encode() != new.encode()
    assert store.offer(key, same_time.encode()) is StoreResult.OLDER
    assert store.get(key) == new.encode()
    assert store.refused == {StoreResult.OLDER: 2}
    assert len(store) == 1


def test_identical_restore_is_already_held_and_not_refused() -> None:
    store = DescriptorStore(Clock())
    d = make()
    assert store.offer(d.dht_key, d.encode()) is StoreResult.STORED
    assert store.offer(d.dht_key, d.encode()) is StoreResult.ALREADY_HELD
    assert store.refused == {}
    assert len(store) == 1


def test_refuses_expired_and_from_the_future() -> None:
    clock = Clock()
    store = DescriptorStore(clock)
    expired = make(published=T0 - 2 * HOUR, lifetime=HOUR)
    assert store.offer(expired.dht_key, expired.encode()) is StoreResult.INVALID
    just_expired = make(2, published=T0 - HOUR, lifetime=HOUR)  # expires == now: already expired
    assert store.offer(just_expired.dht_key, just_expired.encode()) is StoreResult.INVALID
    future = make(3, published=T0 + 601)
    assert store.offer(future.dht_key, future.encode()) is StoreResult.INVALID
    assert store.refused == {StoreResult.INVALID: 3}
    assert len(store) == 0
    within_skew = make(4, published=T0 + 600)
    assert store.offer(within_skew.dht_key, within_skew.encode()) is StoreResult.STORED


def test_expiry_comes_from_the_signed_expires_not_from_when_it_was_stored() -> None:
    clock = Clock()
    store = DescriptorStore(clock)
    d = make(published=T0, lifetime=HOUR)
    raw = d.encode()
    assert store.offer(d.dht_key, raw) is StoreResult.STORED
    clock.now = T0 + HOUR - 1
    assert store.offer(d.dht_key, raw) is StoreResult.ALREADY_HELD  # re-stored a second before expiry
    assert store.get(d.dht_key) == raw
    assert store.iter_older_than(0) == [(d.dht_key, raw)]
    clock.now = T0 + HOUR
    assert store.get(d.dht_key) is None
    assert store.descriptor(d.dht_key) is None
    with pytest.raises(KeyError):
        store[d.dht_key]
    assert list(store) == []
    assert len(store) == 0  # iteration dropped it
    assert store.iter_older_than(0) == []
    # and it cannot be stored again now that it is expired
    assert store.offer(d.dht_key, raw) is StoreResult.INVALID


def test_expiry_also_comes_from_the_onion_key_certificate() -> None:
    clock = Clock()
    store = DescriptorStore(clock)
    d = make(published=T0, lifetime=18 * HOUR, cert_until=T0 + 2 * HOUR)
    assert d.usable_until == T0 + 2 * HOUR
    assert store.offer(d.dht_key, d.encode()) is StoreResult.STORED
    clock.now = T0 + 2 * HOUR
    assert store.get(d.dht_key) is None
    assert list(store) == []


def test_a_newer_descriptor_replaces_an_expired_one_regardless_of_order() -> None:
    clock = Clock()
    store = DescriptorStore(clock)
    d1 = make(published=T0, lifetime=HOUR)
    assert store.offer(d1.dht_key, d1.encode()) is StoreResult.STORED
    clock.now = T0 + 2 * HOUR
    d2 = make(published=T0 + 2 * HOUR - 10)
    assert store.offer(d2.dht_key, d2.encode()) is StoreResult.STORED
    assert store.get(d2.dht_key) == d2.encode()


def test_bound_evicts_the_value_expiring_first_or_refuses_when_it_would_expire_first() -> None:
    clock = Clock()
    store = DescriptorStore(clock, max_entries=3)
    a, b, c = make(1, lifetime=4 * HOUR), make(2, lifetime=2 * HOUR), make(3, lifetime=6 * HOUR)
    for d in (a, b, c):
        assert store.offer(d.dht_key, d.encode()) is StoreResult.STORED
    fourth = make(4, lifetime=5 * HOUR)
    assert store.offer(fourth.dht_key, fourth.encode()) is StoreResult.STORED
    assert len(store) == 3
    assert store.get(b.dht_key) is None  # b expired first
    assert {k for k, _ in store} == {a.dht_key, c.dht_key, fourth.dht_key}
    # a fifth value that expires before every held one is refused, nothing is evicted
    short = make(5, lifetime=HOUR)
    assert store.offer(short.dht_key, short.encode()) is StoreResult.FULL
    # one that expires at the same moment as the earliest held one is refused too
    tie = make(6, lifetime=4 * HOUR)
    assert store.offer(tie.dht_key, tie.encode()) is StoreResult.FULL
    assert store.refused == {StoreResult.FULL: 2}
    assert {k for k, _ in store} == {a.dht_key, c.dht_key, fourth.dht_key}
    # replacing a held key with a newer descriptor never needs room
    newer_a = make(1, published=T0 + 10, lifetime=HOUR)
    assert store.offer(newer_a.dht_key, newer_a.encode()) is StoreResult.STORED
    assert len(store) == 3
    # once something expires, there is room without evicting anything live
    clock.now = T0 + 10 + HOUR
    assert store.offer(short.dht_key, short.encode()) is StoreResult.INVALID  # short itself expired
    late = make(7, published=T0 + HOUR, lifetime=HOUR)
    assert store.offer(late.dht_key, late.encode()) is StoreResult.STORED
    assert {k for k, _ in store} == {c.dht_key, fourth.dht_key, late.dht_key}
    assert_only_valid(store)


def test_iter_older_than() -> None:
    clock = Clock()
    store = DescriptorStore(clock)
    a, b = make(1), make(2)
    store.offer(a.dht_key, a.encode())
    clock.now = T0 + 100
    store.offer(b.dht_key, b.encode())
    clock.now = T0 + 150
    assert store.iter_older_than(100) == [(a.dht_key, a.encode())]
    assert sorted(store.iter_older_than(0)) == sorted([(a.dht_key, a.encode()), (b.dht_key, b.encode())])
    assert store.iter_older_than(151) == []
    # a re-store of the same value refreshes "received" (the package republishes what it held long)
    store.offer(a.dht_key, a.encode())
    assert store.iter_older_than(100) == []
    clock.now = T0 + 250
    assert sorted(store.iter_older_than(100)) == sorted([(a.dht_key, a.encode()), (b.dht_key, b.encode())])


# --- hypothesis: whatever peers offer, nothing raises and nothing invalid is stored ------------
DESCS = [
    make(1),
    make(2),
    make(1, published=T0 - HOUR),
    make(3, published=T0 - 2 * DAY, lifetime=HOUR),  # expired
    make(4, lifetime=2 * HOUR),
    make(5, lifetime=30 * HOUR),
    make(6, published=T0 + 2 * HOUR),  # from the future at T0, fine an hour later
]
RAWS = [d.encode() for d in DESCS]
KEYS = [d.dht_key for d in DESCS]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.binary(max_size=64),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.binary(max_size=5) | st.integers(), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_raw(draw: st.DrawFn) -> bytes:
    raw = draw(st.sampled_from(RAWS))
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "splice", "same"]))
    if kind == "flip":
        return flip(raw, draw(st.integers(0, len(raw) - 1)), draw(st.integers(0, 7)))
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "extend":
        return raw + draw(st.binary(min_size=1, max_size=64))
    if kind == "splice":
        i = draw(st.integers(0, len(raw)))
        return raw[:i] + draw(st.binary(max_size=16)) + raw[i:]
    return raw


keys_strategy = st.sampled_from(KEYS) | st.binary(min_size=20, max_size=20) | msgpack_values
values_strategy = mutated_raw() | st.sampled_from(RAWS) | msgpack_values | st.binary(max_size=3000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    offers=st.lists(
        st.tuples(keys_strategy, values_strategy) | st.sampled_from(list(zip(KEYS, RAWS, strict=True))),
        min_size=1,
        max_size=8,
    ),
    clock_offset=st.sampled_from([0, HOUR, 20 * HOUR]),
)
def test_arbitrary_offers_never_raise_and_never_store_anything_invalid(
    offers: list[tuple[Any, Any]], clock_offset: int
) -> None:
    clock = Clock(T0 + clock_offset)
    store = DescriptorStore(clock, max_entries=2)
    refused = 0
    for key, value in offers:
        result = store.offer(key, value)
        assert isinstance(result, StoreResult)
        if result in (StoreResult.STORED, StoreResult.ALREADY_HELD):
            assert store.get(key) == value
        else:
            refused += 1
        assert len(store) <= 2
        assert_only_valid(store)
    assert sum(store.refused.values()) == refused
    assert StoreResult.STORED not in store.refused and StoreResult.ALREADY_HELD not in store.refused


# --- hello proofs ------------------------------------------------------------------------------
def test_node_id_is_bound_to_the_identity_key() -> None:
    a, b = identity(1), identity(2)
    assert len(node_id_for(a.public)) == NODE_ID_LEN
    assert node_id_for(a.public) == node_id_for(a.public) != node_id_for(b.public)
    # not the fingerprint and not the descriptor key: three distinct names
    d = make(1)
    assert node_id_for(a.public) != bytes.fromhex(d.fingerprint) and node_id_for(a.public) != d.dht_key


def test_verify_hello_good() -> None:
    ident, d = identity(1), make(1)
    nonce = os.urandom(NONCE_LEN)
    verify_hello(d, node_id_for(ident.public), nonce, sign_hello(ident, nonce))


def test_verify_hello_wrong_nonce() -> None:
    ident, d = identity(1), make(1)
    nonce = os.urandom(NONCE_LEN)
    sig = sign_hello(ident, nonce)
    with pytest.raises(CryptoError):
        verify_hello(d, node_id_for(ident.public), flip(nonce, 0), sig)


def test_verify_hello_node_id_not_bound_to_the_identity() -> None:
    ident, d = identity(1), make(1)
    nonce = os.urandom(NONCE_LEN)
    other_id = node_id_for(identity(2).public)
    with pytest.raises(CryptoError):
        verify_hello(d, other_id, nonce, sign_hello(ident, nonce))
    # even if the signature covers the claimed ID
    with pytest.raises(CryptoError):
        verify_hello(d, other_id, nonce, ident.sign(HELLO_CONTEXT, nonce + other_id))


def test_verify_hello_signature_by_another_key() -> None:
    d = make(1)
    node_id = node_id_for(d.identity_pk)
    nonce = os.urandom(NONCE_LEN)
    other = identity(2)
    for sig in (
        sign_hello(other, nonce),
        other.sign(HELLO_CONTEXT, nonce + node_id),  # the right message, the wrong signer
        identity(1).sign(b"some other context\x00", nonce + node_id),  # right signer, other context
        bytes(64),
        b"short",
    ):
        with pytest.raises(CryptoError):
            verify_hello(d, node_id, nonce, sig)


# --- subnets -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ip", "subnet"),
    [
        ("10.1.2.3", "10.1.2.0/24"),
        ("127.0.9.200", "127.0.9.0/24"),
        ("192.0.2.255", "192.0.2.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("2001:db8:abcd:ffff:1:2:3:4", "2001:db8:abcd::/48"),
        ("::1", "::/48"),
        ("::ffff:10.1.2.3", "10.1.2.0/24"),
        ("::ffff:127.0.9.1", "127.0.9.0/24"),
    ],
)
def test_subnet_of(ip: str, subnet: str) -> None:
    assert subnet_of(ip) == subnet


def test_subnet_of_groups_mapped_and_plain_ipv4_together() -> None:
    assert subnet_of("::ffff:10.1.2.3") == subnet_of("10.1.2.77") != subnet_of("10.1.3.3")
    assert subnet_of("2001:db8:1::1") != subnet_of("2001:db8:2::1")
    with pytest.raises(ValueError):
        subnet_of("not an ip")


# --- NetView ------------------------------------------------------------------------------------
def fps(view: NetView, now: float) -> set[str]:
    return {d.fingerprint for d in view.relays(now)}


def test_view_merges() -> None:
    view = NetView()
    a, b = make(1), make(2)
    view.merge([a, b], T0)
    assert fps(view, T0) == {a.fingerprint, b.fingerprint}
    assert len(view) == 2 and view.crawls == 1
    view.merge([a, b], T0 + 1)
    assert len(view) == 2


def test_view_newest_wins() -> None:
    view = NetView()
    old, new = make(1, published=T0), make(1, published=T0 + 100)
    view.merge([old], T0 + 200)
    view.merge([new], T0 + 200)
    assert view.relays(T0 + 200) == [new]
    view.merge([old], T0 + 300)  # a replayed older descriptor does not win
    assert view.relays(T0 + 300) == [new]
    view2 = NetView()
    view2.merge([new, old], T0 + 200)  # order within one crawl does not matter
    assert view2.relays(T0 + 200) == [new]


def test_view_per_subnet_cap_keeps_the_first_seen() -> None:
    view = NetView(max_per_subnet=2)
    first = [make(i, ip=f"192.0.2.{i}") for i in (1, 2)]
    later = [make(i, ip=f"192.0.2.{i}") for i in (3, 4, 5)]
    elsewhere = make(9, ip="198.51.100.9")
    view.merge([*first, elsewhere], T0)
    view.merge([*later, *first, elsewhere], T0 + 10)  # the newcomers come first in the list, still lose
    assert fps(view, T0 + 10) == {d.fingerprint for d in [*first, elsewhere]}
    assert view.dropped_subnet >= 3
    # the same holds however often they are seen
    for t in range(3):
        view.merge([*later, *first, elsewhere], T0 + 20 + t)
    assert fps(view, T0 + 30) == {d.fingerprint for d in [*first, elsewhere]}
    # a /24 is the unit: IPv4-mapped text would not escape it either (descriptors canonicalise it)
    assert subnet_of(first[0].link_addresses[0][0]) == subnet_of(later[0].link_addresses[0][0])


def test_view_per_subnet_cap_for_ipv6_is_the_48() -> None:
    view = NetView(max_per_subnet=1)
    a = make(1, ip="2001:db8:1:1::1")
    b = make(2, ip="2001:db8:1:2::1")  # same /48
    c = make(3, ip="2001:db8:2:1::1")
    view.merge([a], T0)
    view.merge([a, b, c], T0 + 1)
    assert fps(view, T0 + 1) == {a.fingerprint, c.fingerprint}


def test_view_max_relays_keeps_the_first_seen() -> None:
    view = NetView(max_relays=3)
    descs = [make(i) for i in range(1, 7)]
    for i in range(len(descs)):
        view.merge(descs[: i + 1], T0 + i)
    assert len(view) == 3
    assert fps(view, T0 + 10) == {d.fingerprint for d in descs[:3]}


def test_view_drops_relays_missing_from_two_consecutive_crawls() -> None:
    assert MISSED_CRAWLS_TO_DROP == 2
    view = NetView()
    a, b = make(1), make(2)
    view.merge([a, b], T0)
    view.merge([a], T0 + 1)  # b missed one crawl: kept
    assert fps(view, T0 + 1) == {a.fingerprint, b.fingerprint}
    view.merge([a, b], T0 + 2)  # back again: the count restarts
    view.merge([a], T0 + 3)
    assert fps(view, T0 + 3) == {a.fingerprint, b.fingerprint}
    view.merge([a], T0 + 4)  # second consecutive miss: dropped
    assert fps(view, T0 + 4) == {a.fingerprint}
    view.merge([], T0 + 5)
    view.merge([], T0 + 6)
    assert len(view) == 0


def test_view_drops_expired_relays() -> None:
    view = NetView()
    short, long = make(1, lifetime=HOUR), make(2, lifetime=10 * HOUR)
    view.merge([short, long], T0)
    assert fps(view, T0 + HOUR) == {long.fingerprint}  # relays() hides it at once
    view.merge([short, long], T0 + HOUR)  # and the next merge forgets it even if still served
    assert len(view) == 1
    onion_expiring = make(3, lifetime=10 * HOUR, cert_until=T0 + 2 * HOUR)
    view.merge([long, onion_expiring], T0 + HOUR)
    assert len(view) == 2
    view.merge([long, onion_expiring], T0 + 2 * HOUR)
    assert fps(view, T0 + 2 * HOUR) == {long.fingerprint} and len(view) == 1


def test_view_non_crawl_merges_do_not_count_as_crawls() -> None:
    view = NetView()
    a, b, c = make(1), make(2), make(3)
    view.merge([a, b], T0)
    for t in range(5):
        view.merge([c], T0 + t, crawl=False)
    assert view.crawls == 1
    assert fps(view, T0 + 5) == {a.fingerprint, b.fingerprint, c.fingerprint}
    view.merge([a], T0 + 6)
    view.merge([a], T0 + 7)
    assert fps(view, T0 + 7) == {a.fingerprint}
