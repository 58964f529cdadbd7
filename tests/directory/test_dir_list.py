"""Tests for onionmesh.directory.dir_list: the signed relay lists of directory sources.

Pure: no sockets, time passed in.  Run as a script from the repository root
(`PYTHONPATH=. python tests/directory/test_dir_list.py`) to rewrite tests/vectors/dir_list.json,
only for a deliberate format change.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory import dir_list as dl
from onionmesh.directory.descriptor import DEFAULT_PROTOCOLS, RelayDescriptor
from onionmesh.errors import CryptoError, DirectoryError, OnionmeshError, RemoteProtocolError
from onionmesh.rng import SeededRng
from onionmesh.wire.buffer import Buffer

T0 = 1_790_000_000
EPOCH = T0 // 3600
NOW = T0 + 7200 + 60
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "dir_list.json"


def _relay(rng: SeededRng, i: int) -> tuple[IdentityKey, list[RelayDescriptor]]:
    """A relay and three descriptors: v0, v0 re-signed an hour later, a changed one two hours later."""
    identity = IdentityKey.generate(rng)
    cert = OnionKeyCert.issue(identity, OnionKey.generate(rng).public, T0 - 3600, T0 + 7 * 86_400)

    def desc(published: int, bandwidth: int) -> RelayDescriptor:
        return RelayDescriptor.create(
            identity=identity,
            onion_cert=cert,
            nickname=f"r{i}",
            link_addresses=[(f"10.{i}.0.1", 9001)],
            dht_contact=(f"10.{i}.0.1", 9002),
            exit_policy="accept *:443; reject *:*" if i % 3 == 0 else "",
            bandwidth=bandwidth,
            published=published,
            lifetime=72 * 3600,
            # pinned: the vector was made when relays spoke relay=1 (the default grows with the protocol)
            protocols=DEFAULT_PROTOCOLS.replace("relay=1-3", "relay=1"),
        )

    return identity, [desc(T0, 1_000_000), desc(T0 + 3600, 1_000_000), desc(T0 + 7200, 2_000_000)]


RNG = SeededRng(19)
SOURCE = IdentityKey.generate(RNG)
POOL = [_relay(RNG, i) for i in range(12)]

version_choice = st.one_of(
    st.none(), st.tuples(st.integers(0, 2), st.sampled_from([0, dl.RUNNING]), st.integers(0, 2**32 - 1))
)
state_spec = st.lists(version_choice, min_size=len(POOL), max_size=len(POOL))


def build(spec: list, epoch: int = EPOCH) -> dl.DirState:
    entries = [
        dl.DirEntry.of(POOL[i][1][v], flags, weight)
        for i, s in enumerate(spec)
        if s is not None
        for v, flags, weight in [s]
    ]
    return dl.DirState(epoch, entries)


def roundtrip(doc: dl.DirDoc) -> dl.DirDoc:
    return dl.decode_doc(doc.encode())


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(state_spec)
def test_a_snapshot_round_trips_to_the_same_state(spec: list) -> None:
    state = build(spec)
    back = dl.state_from_snapshot(roundtrip(dl.make_snapshot(SOURCE, state)), NOW)
    assert back.digest() == state.digest()
    assert back.entries == state.entries


@SETTINGS
@given(state_spec, state_spec)
def test_a_diff_turns_any_state_into_any_later_one(old_spec: list, new_spec: list) -> None:
    """Later: a relay present in both never goes back to an older descriptor (diffs refuse that)."""
    new_spec = [
        n if o is None or n is None else (max(o[0], n[0]), *n[1:])
        for o, n in zip(old_spec, new_spec, strict=True)
    ]
    old, new = build(old_spec, EPOCH), build(new_spec, EPOCH + 1)
    diff = roundtrip(dl.make_diff(SOURCE, old, new))
    got = dl.apply_diff(old, diff, NOW)
    assert got.digest() == new.digest() and got.entries == new.entries


@SETTINGS
@given(state_spec, st.data())
def test_every_single_byte_change_of_a_document_is_refused(spec: list, data: st.DataObject) -> None:
    encoded = bytearray(dl.make_snapshot(SOURCE, build(spec)).encode())
    i = data.draw(st.integers(0, len(encoded) - 1))
    encoded[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(OnionmeshError):
        dl.state_from_snapshot(dl.decode_doc(bytes(encoded)), NOW)


@SETTINGS
@given(st.binary(max_size=600))
def test_garbage_raises_only_onionmesh_errors(data: bytes) -> None:
    for blob in (data, b"OMDL\x01" + data):
        with pytest.raises(OnionmeshError):
            dl.decode_doc(blob)


@SETTINGS
@given(state_spec, st.data())
def test_a_truncated_document_is_malformed(spec: list, data: st.DataObject) -> None:
    encoded = dl.make_diff(SOURCE, build([None] * len(POOL)), build(spec, EPOCH + 1)).encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(RemoteProtocolError):
        dl.decode_doc(encoded[:cut])


def test_a_re_signed_descriptor_travels_as_a_101_byte_renew() -> None:
    old = build([(0, dl.RUNNING, 5)] + [None] * (len(POOL) - 1))
    new = build([(1, dl.RUNNING, 5)] + [None] * (len(POOL) - 1), EPOCH + 1)
    diff = dl.make_diff(SOURCE, old, new)
    assert len(diff.body) == 4 + 101 and diff.body[4] == dl.Op.RENEW
    assert dl.apply_diff(old, roundtrip(diff), NOW).entries == new.entries
    changed = build([(2, dl.RUNNING, 5)] + [None] * (len(POOL) - 1), EPOCH + 1)
    assert dl.make_diff(SOURCE, old, changed).body[4] == dl.Op.ADD


def test_a_renew_whose_signature_is_not_the_relays_is_refused() -> None:
    """A source that signs its diff cannot re-sign a relay's descriptor for it."""
    old = build([(0, dl.RUNNING, 5)] + [None] * (len(POOL) - 1))
    new = build([(1, dl.RUNNING, 5)] + [None] * (len(POOL) - 1), EPOCH + 1)
    honest = dl.make_diff(SOURCE, old, new)
    body = honest.body[:-1] + bytes([honest.body[-1] ^ 1])
    forged = dl.sign_doc(
        SOURCE, dl.Kind.DIFF, EPOCH + 1, honest.state_digest, body, from_epoch=EPOCH, from_digest=old.digest()
    )
    with pytest.raises(CryptoError):
        dl.apply_diff(old, roundtrip(forged), NOW)


def test_a_diff_that_goes_back_to_an_older_descriptor_is_refused() -> None:
    newer = build([(2, dl.RUNNING, 1)] + [None] * (len(POOL) - 1))
    older = build([(0, dl.RUNNING, 1)] + [None] * (len(POOL) - 1), EPOCH + 1)
    with pytest.raises(DirectoryError, match="not newer"):
        dl.apply_diff(newer, roundtrip(dl.make_diff(SOURCE, newer, older)), NOW)


def test_a_diff_for_another_state_is_refused() -> None:
    a = build([(0, dl.RUNNING, 1)] * len(POOL))
    b = build([(0, 0, 1)] * len(POOL))
    diff = dl.make_diff(SOURCE, a, build([None] * len(POOL), EPOCH + 1))
    with pytest.raises(DirectoryError):
        dl.apply_diff(b, diff, NOW)


def test_a_source_cannot_sign_a_forged_descriptor_into_a_state() -> None:
    """The source signs the list, but every descriptor must still verify under its own relay's key."""
    good = dl.DirEntry.of(POOL[0][1][0])
    forged_raw = good.raw[:-1] + bytes([good.raw[-1] ^ 1])
    forged = replace(good, raw=forged_raw)
    body = Buffer().push_u32(1).push_bytes(forged.encode()).getvalue()
    leaves = [dl.bucket_hash_of(b, [forged] if b == forged.fp[0] else []) for b in range(dl.BUCKETS)]
    doc = dl.sign_doc(SOURCE, dl.Kind.SNAPSHOT, EPOCH, dl.state_digest(EPOCH, leaves), body)
    with pytest.raises(CryptoError):
        dl.state_from_snapshot(roundtrip(doc), NOW)


def test_a_snapshot_whose_body_does_not_match_its_signed_digest_is_refused() -> None:
    full = build([(0, dl.RUNNING, 1)] * len(POOL))
    omitted = build([(0, dl.RUNNING, 1)] * (len(POOL) - 1) + [None])
    lying = dl.sign_doc(
        SOURCE, dl.Kind.SNAPSHOT, EPOCH, full.digest(), dl.make_snapshot(SOURCE, omitted).body
    )
    with pytest.raises(DirectoryError):
        dl.state_from_snapshot(roundtrip(lying), NOW)


def test_a_bucket_that_omits_a_relay_contradicts_the_sources_summary() -> None:
    full = build([(0, dl.RUNNING, 1)] * len(POOL))
    hashes = dl.summary_hashes(roundtrip(dl.make_summary(SOURCE, full)))
    assert dl.state_digest(EPOCH, hashes) == roundtrip(dl.make_head(SOURCE, full)).state_digest
    victim = full.sorted_entries()[0]
    b = victim.fp[0]
    assert dl.bucket_entries(roundtrip(dl.make_bucket(SOURCE, full, b)), hashes[b], NOW)[1] == full.bucket(b)
    without = dl.DirState(EPOCH, [e for e in full.sorted_entries() if e is not victim])
    with pytest.raises(DirectoryError):
        dl.bucket_entries(roundtrip(dl.make_bucket(SOURCE, without, b)), hashes[b], NOW)


def test_expired_descriptors_are_refused_at_read_time() -> None:
    doc = roundtrip(dl.make_snapshot(SOURCE, build([(0, dl.RUNNING, 1)] + [None] * (len(POOL) - 1))))
    with pytest.raises(DirectoryError):
        dl.state_from_snapshot(doc, T0 + 72 * 3600)


def test_an_oversized_body_length_is_refused_before_reading() -> None:
    doc = dl.make_head(SOURCE, build([None] * len(POOL)))
    encoded = bytearray(doc.encode())
    encoded[dl.HEADER_LEN - 4 : dl.HEADER_LEN] = (dl.MAX_BODY + 1).to_bytes(4, "big")
    with pytest.raises(RemoteProtocolError, match="too large"):
        dl.decode_doc(bytes(encoded))


def _vector() -> dict[str, object]:
    old = build([(0, dl.RUNNING, 100), (0, dl.RUNNING, 200), (0, 0, 0), None] + [None] * (len(POOL) - 4))
    new = build(
        [(1, dl.RUNNING, 100), None, (0, dl.RUNNING, 50), (2, dl.RUNNING, 0)] + [None] * (len(POOL) - 4),
        EPOCH + 1,
    )
    return {
        "description": "docs/directory-design.md §3.1-3.2; relays and source from SeededRng(19) "
        "(source first, then per relay identity, onion key); times fixed in the test",
        "source_pk": SOURCE.public.hex(),
        "old_state_digest": old.digest().hex(),
        "new_state_digest": new.digest().hex(),
        "snapshot_old": dl.make_snapshot(SOURCE, old).encode().hex(),
        "diff_old_to_new": dl.make_diff(SOURCE, old, new).encode().hex(),
        "head_new": dl.make_head(SOURCE, new).encode().hex(),
    }


def test_the_vector_is_reproduced_byte_for_byte_and_decodes() -> None:
    stored = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert stored == _vector()
    old = dl.state_from_snapshot(dl.decode_doc(bytes.fromhex(stored["snapshot_old"])), NOW)
    new = dl.apply_diff(old, dl.decode_doc(bytes.fromhex(stored["diff_old_to_new"])), NOW)
    assert new.digest().hex() == stored["new_state_digest"]
    assert dl.decode_doc(bytes.fromhex(stored["head_new"])).state_digest == new.digest()


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(_vector(), indent=1) + "\n", encoding="utf-8")
