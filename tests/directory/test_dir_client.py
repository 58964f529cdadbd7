"""Tests for the client's directory logic, its guards, the source budget and DIR_GET/DIR_DATA.

Pure: signed documents built with directory.dir_list from fixed relays; time passed in.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory import dir_list as dl
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dir_budget import DirBudget
from onionmesh.directory.dir_client import DirClient
from onionmesh.directory.dir_guards import DirGuardSet
from onionmesh.directory.dir_state import RUNNING, DirEntry, DirState
from onionmesh.errors import DirectoryError, OnionmeshError, RemoteProtocolError
from onionmesh.rng import SeededRng
from onionmesh.wire.dir_msg import DIR_GET_LEN, DirData, DirGet, DirStatus, DocAssembler, data_bodies

T0 = 1_790_000_000
E = T0 // 3600
NOW = E * 3600 + 1200
RNG = SeededRng(41)
SOURCES = [IdentityKey.generate(RNG) for _ in range(3)]


def _relay(i: int) -> list[RelayDescriptor]:
    identity = IdentityKey.generate(RNG)
    cert = OnionKeyCert.issue(identity, OnionKey.generate(RNG).public, T0 - 86_400, T0 + 7 * 86_400)
    return [
        RelayDescriptor.create(
            identity=identity,
            onion_cert=cert,
            nickname=f"r{i}",
            link_addresses=[(f"10.{i}.0.1", 9001)],
            dht_contact=(f"10.{i}.0.1", 9002),
            exit_policy="",
            bandwidth=1_000_000 * (i + 1),
            published=T0 - 14_400 + 7200 * v,
            lifetime=72 * 3600,
        )
        for v in range(2)
    ]


RELAYS = [_relay(i) for i in range(10)]


def _state(epoch: int, skip: int | None = None, stale: int | None = None) -> DirState:
    return DirState(
        epoch,
        [
            DirEntry.of(descs[0] if i == stale else descs[1], RUNNING)
            for i, descs in enumerate(RELAYS)
            if i != skip
        ],
    )


def _round(client: DirClient, states: list[DirState]) -> list:
    """The primary's SNAPSHOT, then HEAD/SUMMARY/BUCKETs from the two others, as dir_fetch does."""
    pk = [s.public for s in SOURCES]
    client.on_primary(pk[0], dl.make_snapshot(SOURCES[0], states[0]).encode(), NOW)
    for i in (1, 2):
        if client.add_head(pk[i], dl.make_head(SOURCES[i], states[i]).encode()):
            continue
        for b in client.add_summary(pk[i], dl.make_summary(SOURCES[i], states[i]).encode()):
            client.add_bucket(pk[i], dl.make_bucket(SOURCES[i], states[i], b).encode(), NOW)
    return client.finish()


def test_agreeing_sources_no_evidence() -> None:
    client = DirClient()
    assert _round(client, [_state(E)] * 3) == []
    assert len(client.view(NOW)) == len(RELAYS) and client.bad_sources() == set()


def test_a_source_that_omits_is_caught_and_bad_after_two_epochs() -> None:
    client = DirClient()
    assert _round(client, [_state(E - 1), _state(E - 1, skip=3), _state(E - 1)]) == []  # new to us: no blame
    ev = _round(client, [_state(E), _state(E, skip=3), _state(E)])
    assert [(e.source, e.what, e.relay) for e in ev] == [
        (SOURCES[1].public, "omission", RELAYS[3][1].fingerprint)
    ]
    assert client.bad_sources() == set()  # once is not enough: it may have been late
    _round(client, [_state(E + 1), _state(E + 1, skip=3), _state(E + 1)])
    assert client.bad_sources() == {SOURCES[1].public}


def test_an_omitting_primary_cannot_hide_a_relay() -> None:
    client = DirClient()
    _round(client, [_state(E - 1)] * 3)
    ev = _round(client, [_state(E, skip=5), _state(E), _state(E)])
    assert {(e.source, e.what) for e in ev} == {(SOURCES[0].public, "omission")}
    assert RELAYS[5][1] in client.view(NOW)  # the union


def test_a_stale_source_is_caught_and_the_newest_wins() -> None:
    client = DirClient()
    ev = _round(client, [_state(E, stale=2), _state(E), _state(E)])
    assert {(e.source, e.what, e.relay) for e in ev} == {
        (SOURCES[0].public, "stale", RELAYS[2][1].fingerprint)
    }
    view = client.view(NOW)
    assert RELAYS[2][1] in view and RELAYS[2][0] not in view


def test_diff_follows_the_primary_and_foreign_documents_are_refused() -> None:
    client = DirClient()
    pk = SOURCES[0].public
    old, new = _state(E, skip=1), _state(E + 1)
    assert client.primary_request(pk).kind == dl.Kind.SNAPSHOT
    client.on_primary(pk, dl.make_snapshot(SOURCES[0], old).encode(), NOW)
    get = client.primary_request(pk)
    assert get.kind == dl.Kind.DIFF and get.from_digest == old.digest()
    assert client.on_primary(pk, dl.make_diff(SOURCES[0], old, new).encode(), NOW).digest() == new.digest()
    with pytest.raises(DirectoryError):  # signed by another source than the one asked
        client.on_primary(pk, dl.make_snapshot(SOURCES[1], new).encode(), NOW)
    with pytest.raises(DirectoryError):  # a HEAD of another epoch
        client.add_head(SOURCES[1].public, dl.make_head(SOURCES[1], old).encode())
    assert client.state is not None and client.state.digest() == new.digest()
    with pytest.raises(DirectoryError):  # a HEAD with no round open (no primary state yet)
        DirClient().add_head(SOURCES[1].public, dl.make_head(SOURCES[1], new).encode())


def test_a_bucket_that_contradicts_the_summary_is_refused() -> None:
    client = DirClient()
    pk = [s.public for s in SOURCES]
    client.on_primary(pk[0], dl.make_snapshot(SOURCES[0], _state(E)).encode(), NOW)
    lying = _state(E, skip=4)
    assert not client.add_head(pk[1], dl.make_head(SOURCES[1], lying).encode())
    buckets = client.add_summary(pk[1], dl.make_summary(SOURCES[1], lying).encode())
    assert buckets
    with pytest.raises(DirectoryError):  # it signed one bucket hash and serves another bucket
        client.add_bucket(pk[1], dl.make_bucket(SOURCES[1], _state(E), buckets[0]).encode(), NOW)


def test_dir_guards_disjoint_distinct_and_never_bad_again() -> None:
    relays = [d[1] for d in RELAYS]
    entry = {relays[0].fingerprint, relays[1].fingerprint}
    guards = DirGuardSet()
    chosen = guards.update(relays, entry, SeededRng(3))
    assert len(chosen) == 3 and not entry & set(chosen)
    first = chosen[0]
    guards.mark_bad(first)
    again = guards.update(relays, entry, SeededRng(4))
    assert len(again) == 3 and first not in again and again[:2] == chosen[1:]
    # A guard that became an entry guard yields its place.
    assert again[0] not in guards.update(relays, entry | {again[0]}, SeededRng(5))
    restored = DirGuardSet.from_json(guards.to_json())
    assert restored.sampled == guards.sampled and first in restored.bad
    assert DirGuardSet.from_json("{junk").sampled == []


def test_budget_busy_per_circuit_and_in_bytes() -> None:
    budget = DirBudget(1000.0, window=60.0, gets_per_window=4, burst_seconds=2.0, now=0.0)
    assert [budget.request("c", dl.Kind.HEAD, 1.0) for _ in range(6)] == [True] * 4 + [False] * 2
    assert budget.request("c", dl.Kind.HEAD, 61.0)  # a new window
    assert budget.request("d", dl.Kind.SNAPSHOT, 1.0)
    budget.served("d", dl.Kind.SNAPSHOT, 1.0)
    assert not budget.request("d", dl.Kind.SNAPSHOT, 2.0)
    assert budget.spend(2000, 1.0) and not budget.spend(10, 1.0)  # the burst is spent
    assert budget.spend(500, 1.5)  # refilled at 1000 B/s
    assert budget.busy == 4


def test_budget_a_snapshot_not_served_leaves_the_allowance() -> None:
    """A SNAPSHOT asked for before the source had one (NOT_FOUND) or refused for bytes (BUSY) does
    not use the circuit's one SNAPSHOT per 6 windows: a fresh client that asked a source still
    forming gets its SNAPSHOT once there is one, not 6 epochs later."""
    budget = DirBudget(1000.0, window=60.0, snapshot_windows=6, now=0.0)
    assert budget.request("c", dl.Kind.SNAPSHOT, 1.0)  # answered NOT_FOUND: nothing served
    assert budget.request("c", dl.Kind.SNAPSHOT, 2.0)
    budget.served("c", dl.Kind.SNAPSHOT, 2.0)
    assert not budget.request("c", dl.Kind.SNAPSHOT, 3.0)
    assert not budget.request("c", dl.Kind.SNAPSHOT, 5 * 60.0)
    assert budget.request("c", dl.Kind.SNAPSHOT, 6 * 60.0)  # 6 windows later
    budget.served("c", dl.Kind.HEAD, 6 * 60.0)  # other kinds never touch it
    assert budget.request("c", dl.Kind.SNAPSHOT, 6 * 60.0)


def test_dir_get_and_data_round_trip() -> None:
    get = DirGet(dl.Kind.DIFF, 7, bytes(range(32)), 0)
    assert len(get.encode()) == DIR_GET_LEN and DirGet.decode(get.encode()) == get
    doc = bytes(range(256)) * 40
    assembler = DocAssembler()
    results = [assembler.feed(9, DirData.decode(b)) for b in data_bodies(DirStatus.OK, doc)]
    assert results[:-1] == [None] * (len(results) - 1) and results[-1] == (DirStatus.OK, doc)
    assert DirData.decode(data_bodies(DirStatus.BUSY)[0]).status is DirStatus.BUSY
    small = DocAssembler(limit=100)
    with pytest.raises(RemoteProtocolError):
        for body in data_bodies(DirStatus.OK, doc):
            small.feed(1, DirData.decode(body))


@given(st.binary(max_size=64))
def test_dir_msg_decoders_only_raise_protocol_errors(data: bytes) -> None:
    for decode in (DirGet.decode, DirData.decode):
        with contextlib.suppress(OnionmeshError):
            decode(data)


def test_a_dir_guard_that_is_down_for_a_while_is_kept() -> None:
    relays = [d[1] for d in RELAYS]
    guards = DirGuardSet()
    chosen = guards.update(relays, set(), SeededRng(6))
    listed = [r.fingerprint for r in relays]
    down = [r for r in relays if r.fingerprint != chosen[0]]
    usable = guards.update(down, set(), SeededRng(7), listed)
    assert guards.sampled == chosen and usable == chosen[1:]  # kept, only not asked this epoch
    none_up = [r for r in relays if r.fingerprint not in chosen]
    usable = guards.update(none_up, set(), SeededRng(8), listed)
    assert guards.sampled[:3] == chosen and len(usable) == 1  # one more while none is up, at most 2n
    gone = guards.update(none_up, set(), SeededRng(9), [r.fingerprint for r in none_up])
    assert not set(chosen) & set(guards.sampled) and len(gone) == 3  # left the directory: replaced


def test_the_union_hashes_each_leaf_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by simulations/dir_view.py: the union recomputed the primary's whole state digest for
    every differing bucket and source (256 x 3 x N leaf hashes: minutes at 10,000 relays)."""
    from onionmesh.directory import dir_state

    big = [DirEntry.of(_relay(100 + i)[1], RUNNING) for i in range(60)]
    states = [DirState(E, big), DirState(E, big[::2]), DirState(E, big[1::2])]  # every bucket differs
    calls = 0
    real = dir_state.dir_hash

    def counting(person: bytes, data: bytes) -> bytes:
        nonlocal calls
        calls += person == b"om-dir-leaf"
        return real(person, data)

    client = DirClient()
    pk = [s.public for s in SOURCES]
    client.on_primary(pk[0], dl.make_snapshot(SOURCES[0], states[0]).encode(), NOW)
    for i in (1, 2):
        assert not client.add_head(pk[i], dl.make_head(SOURCES[i], states[i]).encode())
        for b in client.add_summary(pk[i], dl.make_summary(SOURCES[i], states[i]).encode()):
            client.add_bucket(pk[i], dl.make_bucket(SOURCES[i], states[i], b).encode(), NOW)
    monkeypatch.setattr(dir_state, "dir_hash", counting)
    client.finish()
    assert len(client.view(NOW)) == len(big)
    assert calls <= 2 * len(big), calls


def test_a_cross_check_source_whole_list_by_snapshot_then_diffs() -> None:
    """A primary that omits relays in many buckets: the union needs more BUCKETs than a source's
    per-circuit budget serves (16 an epoch, every epoch the same first ones), so the client takes
    the cross-check source's whole list once (SNAPSHOT) and its DIFFs after (found by
    tests/runtime/test_sybil_testnet.py: a Sybil primary kept 21 of 32 honest relays out)."""
    client = DirClient()
    pk = [s.public for s in SOURCES]
    honest = [_state(E), _state(E + 1, skip=3)]
    omitting = [DirState(E, list(_state(E).entries.values())[:2]), DirState(E + 1, [])]
    for i, epoch in enumerate((E, E + 1)):
        now = epoch * 3600 + 1200
        client.on_primary(pk[0], dl.make_snapshot(SOURCES[0], omitting[i]).encode(), now)
        assert not client.add_head(pk[1], dl.make_head(SOURCES[1], honest[i]).encode())
        client.add_summary(pk[1], dl.make_summary(SOURCES[1], honest[i]).encode())
        get = client.other_request(pk[1])
        if i == 0:
            assert get is None
            client.add_snapshot(pk[1], dl.make_snapshot(SOURCES[1], honest[0]).encode(), now)
        else:
            assert get is not None and get.kind == dl.Kind.DIFF and get.from_digest == honest[0].digest()
            client.add_other_diff(pk[1], dl.make_diff(SOURCES[1], honest[0], honest[1]).encode(), now)
        client.finish()
        assert {d.fingerprint for d in client.view(now)} == {
            e.descriptor.fingerprint for e in honest[i].entries.values()
        }
    client.on_primary(pk[0], dl.make_snapshot(SOURCES[0], omitting[1]).encode(), NOW + 3600)
    assert not client.add_head(pk[1], dl.make_head(SOURCES[1], _state(E + 1)).encode())
    with pytest.raises(DirectoryError):  # a list that is not the one its HEAD signed
        client.add_snapshot(pk[1], dl.make_snapshot(SOURCES[1], honest[1]).encode(), NOW + 3600)
