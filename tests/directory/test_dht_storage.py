"""directory.dht_storage and hs_placement's store: both kinds of value side by side, told apart by
the value; onion-service records expire at their period's end plus slack; the global cap drops
expired records first.  Pure: every clock injected."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from onionmesh.crypto import hs_blinding
from onionmesh.directory import hs_descriptor as hd
from onionmesh.directory import hs_placement as hp
from onionmesh.directory.dht_storage import DhtStorage, is_hs_record
from onionmesh.rng import SeededRng
from tests.helpers.descriptors import hs_identity, hs_inner, make

PERIOD = 20450
START = hs_blinding.period_start(PERIOD)
END = hs_blinding.period_start(PERIOD + 1)


def record(
    seed: int, *, valid_after: int, revision: int = 1, period: int = PERIOD, lifetime: int = 180
) -> bytes:
    return hd.build_record(
        hs_identity(seed), hs_inner(), period=period, revision=revision, valid_after=valid_after,
        lifetime_min=lifetime, rng=SeededRng(seed),
    )  # fmt: skip


def key_of(raw: bytes, replica: int = 0) -> bytes:
    rec = hd.parse_record(raw)
    return hp.store_key(rec.blinded_pk, replica, rec.period)


def test_both_kinds_in_one_store_told_apart_by_the_value() -> None:
    clock = [float(START + 3600)]
    store = DhtStorage(lambda: clock[0])
    relay = make(1, published=START + 3000)
    hs = record(1, valid_after=START + 3000)
    assert is_hs_record(hs) and not is_hs_record(relay.encode())
    assert store.accepted(store.offer(relay.dht_key, relay.encode()))
    assert store.accepted(store.offer(key_of(hs), hs))
    assert store.get(relay.dht_key) == relay.encode() and store.get(key_of(hs)) == hs
    assert len(store.relays) == 1 and len(store.onion) == 1 and len(store) == 2
    assert dict(store) == {relay.dht_key: relay.encode(), key_of(hs): hs}
    # a relay descriptor under an onion key, or a record under a relay key: each store refuses
    assert not store.accepted(store.offer(key_of(hs), relay.encode()))
    assert not store.accepted(store.offer(relay.dht_key, hs))
    assert store.refused == {"wrong-key": 2}


def test_newer_revision_replaces_older_is_refused() -> None:
    clock = [float(START + 3600)]
    store = DhtStorage(lambda: clock[0])
    r2 = record(2, valid_after=START + 3000, revision=2)
    key = key_of(r2)
    assert store.offer(key, r2) is hp.HsStoreResult.STORED
    assert store.offer(key, record(2, valid_after=START + 3100, revision=1)) is hp.HsStoreResult.OLDER
    r3 = record(2, valid_after=START + 3100, revision=3)
    assert store.offer(key, r3) is hp.HsStoreResult.STORED and store.get(key) == r3


def test_a_record_ends_with_its_period_plus_slack_not_its_signed_lifetime() -> None:
    late = record(3, valid_after=END - 600, lifetime=180)  # signed until END + 2h50
    assert hp.record_expiry(hd.parse_record(late)) == END + hp.PERIOD_SLACK
    clock = [float(END - 300)]
    store = DhtStorage(lambda: clock[0])
    assert store.accepted(store.offer(key_of(late), late))
    clock[0] = END + hp.PERIOD_SLACK - 1
    assert store.get(key_of(late)) == late  # a client whose clock is behind still finds it
    clock[0] = END + hp.PERIOD_SLACK
    assert store.get(key_of(late)) is None and len(store.onion) == 0
    assert store.offer(key_of(late), late) is hp.HsStoreResult.INVALID  # nor stored again


def test_the_cap_drops_expired_first_then_the_one_that_ends_first() -> None:
    clock = [float(START + 3600)]
    store = DhtStorage(lambda: clock[0], max_hs_entries=3)
    short = record(4, valid_after=START + 3000, lifetime=20)  # ends at START + 4200
    mid = record(5, valid_after=START + 3000, lifetime=60)
    long_ = record(6, valid_after=START + 3000, lifetime=120)
    for raw in (short, mid, long_):
        assert store.offer(key_of(raw), raw) is hp.HsStoreResult.STORED
    newcomer = record(7, valid_after=START + 3500, lifetime=100)
    assert store.offer(key_of(newcomer), newcomer) is hp.HsStoreResult.STORED  # evicts `short`
    assert store.get(key_of(short)) is None and len(store.onion) == 3
    clock[0] = START + 3000 + 61 * 60  # `mid` has expired: it goes first, whatever expires when
    shorter = record(8, valid_after=START + 6600, lifetime=5)
    assert store.offer(key_of(shorter), shorter) is hp.HsStoreResult.STORED
    assert store.get(key_of(mid)) is None and store.get(key_of(long_)) == long_
    # full of unexpired records that all outlive the newcomer: refused
    tiny = record(9, valid_after=START + 6600, lifetime=2)
    assert store.offer(key_of(tiny), tiny) is hp.HsStoreResult.FULL and len(store.onion) == 3


def test_republication_hands_out_only_what_is_valid() -> None:
    clock = [float(START + 3600)]
    store = DhtStorage(lambda: clock[0])
    hs = record(10, valid_after=START + 3000, lifetime=30)
    store.offer(key_of(hs), hs)
    assert store.iter_older_than(0) == [(key_of(hs), hs)]
    assert store.iter_older_than(60) == []
    clock[0] = START + 3000 + 30 * 60
    assert store.iter_older_than(0) == []


@given(st.binary(max_size=4000), st.binary(min_size=20, max_size=20))
def test_any_value_is_refused_or_stored_never_raises(value: bytes, key: bytes) -> None:
    store = DhtStorage(lambda: float(START + 3600))
    assert not store.accepted(store.offer(key, value))
    assert not store.accepted(store.offer(key, hd.MAGIC + value))
    assert store.get(key) is None
