"""Onion-service descriptors (directory.hs_descriptor, hs_placement): both layers, restricted
discovery, what a storing node sees and checks, DHT placement, and the vectors in
tests/vectors/hs_descriptor.json (`python -m tests.directory.test_hs_descriptor --write` rewrites them;
only for a deliberate format change)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import hs_address, hs_blinding
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.directory import hs_descriptor as hd
from onionmesh.directory import hs_placement as hp
from onionmesh.errors import RemoteProtocolError
from onionmesh.rng import SeededRng
from tests.helpers.descriptors import hs_identity, hs_inner

VECTORS = Path(__file__).parent.parent / "vectors" / "hs_descriptor.json"
NOW = 1_767_000_000  # 2025-12-29, inside period 20450
PERIOD = hs_blinding.period_num(NOW)


def _record(
    identity: ExpandedKey,
    inner: hd.InnerDescriptor,
    clients: tuple[bytes, ...] = (),
    revision: int = 5,
    period: int = PERIOD,
    seed: int = 7,
) -> bytes:
    return hd.build_record(
        identity, inner, period=period, revision=revision, valid_after=NOW - 60, lifetime_min=180,
        rng=SeededRng(seed), client_keys=clients,
    )  # fmt: skip


def test_client_that_knows_the_address_reads_it() -> None:
    ident = hs_identity()
    inner = hs_inner(3, hd.PowParams(b"s" * 32, 50, NOW + 7200))
    raw = _record(ident, inner)
    pk = hs_address.parse_onion_host(hs_address.encode_address(ident.public))
    rec = hd.parse_record(raw)
    rec.check(NOW)
    assert hd.decrypt_record(rec, pk) == inner
    assert rec.blinded_pk == hs_blinding.blind_public(pk, PERIOD) and rec.revision == 5


def test_a_storing_node_learns_nothing_from_the_bytes() -> None:
    ident = hs_identity()
    inner = hs_inner(8)
    raw = _record(ident, inner)
    needles = [
        ident.public,
        hs_address.encode_address(ident.public).encode(),
        hs_blinding.credential(ident.public),
    ]
    for ip in inner.intro_points:
        needles += [ip.identity_pk, ip.onion_pk, ip.auth_key, ip.enc_key, bytes([192, 0, 2])]
    for needle in needles:
        assert needle not in raw
    # fixed sizes: 1 and 8 intro points, with and without restricted discovery (up to 8 clients) look alike
    client = crypto_scalarmult_base(b"c" * 32)
    sizes = {len(_record(ident, hs_inner(n), c)) for n in (1, 8) for c in ((), (client,))}
    assert sizes == {len(raw)}
    other_period = hd.parse_record(_record(ident, inner, period=PERIOD + 1))
    assert other_period.blinded_pk != hd.parse_record(raw).blinded_pk  # unlinkable across periods


def test_another_service_key_cannot_open_it() -> None:
    rec = hd.parse_record(_record(hs_identity(1), hs_inner()))
    with pytest.raises(RemoteProtocolError):
        hd.decrypt_record(rec, hs_identity(2).public)


def test_restricted_discovery() -> None:
    ident = hs_identity()
    alice, bob, eve = (SeededRng(s).random_bytes(32) for s in (11, 12, 13))
    inner = hs_inner(2)
    rec = hd.parse_record(_record(ident, inner, (crypto_scalarmult_base(alice), crypto_scalarmult_base(bob))))
    assert hd.decrypt_record(rec, ident.public, alice) == inner
    assert hd.decrypt_record(rec, ident.public, bob) == inner
    with pytest.raises(hd.DescriptorDecryptError) as missing:
        hd.decrypt_record(rec, ident.public)
    assert missing.value.auth == "missing"
    with pytest.raises(hd.DescriptorDecryptError) as wrong:
        hd.decrypt_record(rec, ident.public, eve)
    assert wrong.value.auth == "wrong"
    open_rec = hd.parse_record(_record(ident, inner))
    assert hd.decrypt_record(open_rec, ident.public, eve) == inner  # a key is harmless when not needed


def test_every_flipped_byte_fails_a_check() -> None:
    ident = hs_identity()
    raw = _record(ident, hs_inner(1))
    for i in range(0, len(raw), 5):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            rec = hd.parse_record(bytes(bad))
            rec.check(NOW)
            hd.decrypt_record(rec, ident.public)


def test_storing_node_checks() -> None:
    ident = hs_identity()
    raw = _record(ident, hs_inner())
    rec = hd.parse_record(raw)
    keys = hp.store_keys(rec.blinded_pk, PERIOD)
    clock = [float(NOW)]
    store = hp.HsDescriptorStore(lambda: clock[0], max_entries=3)
    assert store.offer(keys[0], raw) is hp.HsStoreResult.STORED
    assert store.offer(keys[0], raw) is hp.HsStoreResult.ALREADY_HELD
    assert store.get(keys[0]) == raw
    assert store.offer(bytes(20), raw) is hp.HsStoreResult.WRONG_KEY
    assert store.offer(hp.store_key(rec.blinded_pk, 0, PERIOD + 1), raw) is hp.HsStoreResult.WRONG_KEY
    assert store.offer(keys[1], raw + b"\0") is hp.HsStoreResult.INVALID
    assert store.offer(keys[1], b"x" * (hd.MAX_RECORD_LEN + 1)) is hp.HsStoreResult.OVERSIZED
    assert store.offer(keys[1], "text") is hp.HsStoreResult.OVERSIZED
    assert store.offer(b"short", raw) is hp.HsStoreResult.BAD_KEY
    assert store.offer(keys[0], _record(ident, hs_inner(), revision=4, seed=8)) is hp.HsStoreResult.OLDER
    assert store.offer(keys[0], _record(ident, hs_inner(), revision=5, seed=8)) is hp.HsStoreResult.OLDER
    newer = _record(ident, hs_inner(), revision=6, seed=8)
    assert store.offer(keys[0], newer) is hp.HsStoreResult.STORED and store.get(keys[0]) == newer
    far = _record(ident, hs_inner(), period=PERIOD + 2)
    assert (
        store.offer(hp.store_key(hd.parse_record(far).blinded_pk, 0, PERIOD + 2), far)
        is hp.HsStoreResult.INVALID
    )
    clock[0] = NOW - 3600  # from the future for this node
    assert hp.check_for_storage(keys[1], raw, clock[0]) is hp.HsStoreResult.INVALID
    clock[0] = NOW + 180 * 60  # expired: neither stored nor served
    assert store.get(keys[0]) is None and len(store) == 0
    assert hp.check_for_storage(keys[1], raw, clock[0]) is hp.HsStoreResult.INVALID


def test_placement_replicas_in_four_quarters_and_moving_each_period() -> None:
    blinded = hs_blinding.blind_public(hs_identity().public, PERIOD)
    keys = hp.store_keys(blinded, PERIOD)
    assert [k[0] >> 6 for k in keys] == [0, 1, 2, 3] and all(len(k) == 20 for k in keys)
    assert set(keys).isdisjoint(
        hp.store_keys(hs_blinding.blind_public(hs_identity().public, PERIOD + 1), PERIOD + 1)
    )


@given(st.binary(max_size=4000))
@settings(max_examples=300)
def test_parse_record_refuses_junk_cleanly(junk: bytes) -> None:
    try:
        rec = hd.parse_record(junk)
    except RemoteProtocolError:
        return
    assert rec.raw == junk


@given(st.binary(max_size=hd.INNER_PLAINTEXT_LEN), st.integers(0, 64))
@settings(max_examples=200)
def test_inner_decode_refuses_junk_cleanly(junk: bytes, n: int) -> None:
    data = (bytes([0, n]) + junk).ljust(hd.INNER_PLAINTEXT_LEN, b"\0")[: hd.INNER_PLAINTEXT_LEN]
    try:
        inner = hd.InnerDescriptor.decode(data)
    except RemoteProtocolError:
        return
    assert inner.encode() == data


@given(st.integers(1, 8), st.booleans(), st.integers(0, 24))
@settings(max_examples=30, deadline=None)
def test_round_trip_any_shape(n: int, with_pow: bool, n_clients: int) -> None:
    ident = hs_identity(n)
    secrets = [SeededRng(100 + i).random_bytes(32) for i in range(n_clients)]
    inner = hs_inner(n, hd.PowParams(b"p" * 32, 7, NOW) if with_pow else None)
    raw = _record(ident, inner, tuple(crypto_scalarmult_base(s) for s in secrets))
    assert len(raw) <= hd.MAX_RECORD_LEN
    rec = hd.parse_record(raw)
    rec.check(NOW)
    assert hd.decrypt_record(rec, ident.public, secrets[-1] if secrets else None) == inner


# --------------------------------------------------------------------------- vectors


def build_vectors() -> dict:
    ident_seed = SeededRng(1).random_bytes(32)
    ident = ExpandedKey.from_seed(ident_seed)
    client_secret = SeededRng(11).random_bytes(32)
    out: dict = {
        "about": "onionmesh onion-service descriptors (docs/protocol.md §16.4-16.5); every secret listed. "
        "build_record draws from SeededRng(record_rng_seed) in this order: "
        "descriptor cookie (32, restricted only), inner salt (16), ephemeral x25519 secret (32), "
        "per client a 24-byte nonce, "
        "fake entries (64 each), the Fisher-Yates shuffle (randbelow), outer salt (16).",
        "identity_seed": ident_seed.hex(),
        "identity_pk": ident.public.hex(),
        "address": hs_address.encode_address(ident.public),
        "now": NOW,
        "period": PERIOD,
        "blinded_pk": hs_blinding.blind_public(ident.public, PERIOD).hex(),
        "subcredential": hs_blinding.subcredential(
            ident.public, hs_blinding.blind_public(ident.public, PERIOD)
        ).hex(),
        "store_keys": [
            k.hex() for k in hp.store_keys(hs_blinding.blind_public(ident.public, PERIOD), PERIOD)
        ],
        "client_secret": client_secret.hex(),
        "client_pk": crypto_scalarmult_base(client_secret).hex(),
        "records": [],
    }
    for name, inner, clients in (
        ("open, 1 intro point", hs_inner(1), ()),
        ("open, 3 intro points, PoW", hs_inner(3, hd.PowParams(b"s" * 32, 50, NOW + 7200)), ()),
        ("restricted to client_pk, 2 intro points", hs_inner(2), (crypto_scalarmult_base(client_secret),)),
    ):
        raw = _record(ident, inner, clients)
        out["records"].append({
            "name": name, "revision": 5, "valid_after": NOW - 60, "lifetime_min": 180, "record_rng_seed": 7,
            "inner_plaintext": inner.encode().rstrip(b"\0").hex(),
            "inner_plaintext_len": hd.INNER_PLAINTEXT_LEN,
            "record": raw.hex(),
        })  # fmt: skip
    return out


def test_vectors_byte_for_byte() -> None:
    assert json.loads(VECTORS.read_text()) == build_vectors()


def test_vectors_open_with_the_listed_secrets() -> None:
    v = json.loads(VECTORS.read_text())
    pk = bytes.fromhex(v["identity_pk"])
    assert hs_address.parse_onion_host(v["address"]) == pk
    for r in v["records"]:
        rec = hd.parse_record(bytes.fromhex(r["record"]))
        rec.check(v["now"])
        key = bytes.fromhex(v["client_secret"]) if "restricted" in r["name"] else None
        inner = hd.decrypt_record(rec, pk, key)
        assert inner.encode() == bytes.fromhex(r["inner_plaintext"]).ljust(r["inner_plaintext_len"], b"\0")
        for k in v["store_keys"]:
            assert hp.check_for_storage(bytes.fromhex(k), rec.raw, v["now"]) == rec


if __name__ == "__main__" and "--write" in sys.argv:
    VECTORS.write_text(json.dumps(build_vectors(), indent=1) + "\n")
