"""Tests for heartbeats, the source state and gossip peers (docs/directory-design.md §3.3, §4.1).

Pure: no sockets, time passed in.  The central property: two sources fed the same items, in any
order and with repeats, sign the same state digest.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory import gossip_peers as gp
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.directory.dht_records import node_id_for
from onionmesh.directory.dir_state import RUNNING, fp_bytes
from onionmesh.directory.heartbeat import HEARTBEAT_LEN, decode_heartbeat, sign_heartbeat
from onionmesh.directory.source_state import KEEP_EPOCHS, SourceState
from onionmesh.errors import CryptoError, OnionmeshError, RemoteProtocolError
from onionmesh.rng import SeededRng

T0 = 1_790_000_000
E = T0 // 3600
AT = E * 3600 + 600


def _relay(rng: SeededRng, i: int) -> tuple[IdentityKey, list[RelayDescriptor]]:
    identity = IdentityKey.generate(rng)
    cert = OnionKeyCert.issue(identity, OnionKey.generate(rng).public, T0 - 3600, T0 + 7 * 86_400)

    def desc(published: int) -> RelayDescriptor:
        return RelayDescriptor.create(
            identity=identity, onion_cert=cert, nickname=f"r{i}",
            link_addresses=[(f"10.{i}.0.1", 9001)], dht_contact=(f"10.{i}.0.1", 9002),
            exit_policy="", bandwidth=1_000_000 * (i + 1), published=published, lifetime=72 * 3600,
        )  # fmt: skip

    return identity, [desc(T0 - 7200), desc(T0 - 3600)]


RNG = SeededRng(23)
POOL = [_relay(RNG, i) for i in range(8)]
# Items: (relay, descriptor version) and (relay, version, epoch offset) heartbeats.
ITEMS = [("d", r, v) for r in range(len(POOL)) for v in range(2)] + [
    ("h", r, v, off) for r in range(len(POOL)) for v in range(2) for off in (0, -1, -2, -5, -30)
]


def _feed(state: SourceState, items: list[tuple]) -> None:
    for item in items:
        identity, descs = POOL[item[1]]
        desc = descs[item[2]]
        if item[0] == "d":
            state.add_descriptor(desc.encode(), T0)
        else:
            state.add_heartbeat(sign_heartbeat(identity, desc, E + item[3]), E)


def test_heartbeat_round_trip_and_binding() -> None:
    identity, (old, new) = POOL[0]
    hb = sign_heartbeat(identity, new, E)
    raw = hb.encode()
    assert len(raw) == HEARTBEAT_LEN == 88
    assert decode_heartbeat(raw) == hb
    hb.verify(new)
    with pytest.raises(CryptoError):
        hb.verify(old)  # bound to one exact descriptor: no replay for an older one
    with pytest.raises(RemoteProtocolError):
        hb.verify(POOL[1][1][1])
    with pytest.raises(RemoteProtocolError):
        decode_heartbeat(raw[:-1])
    with pytest.raises(ValueError):
        sign_heartbeat(POOL[1][0], new, E)


@given(st.binary(max_size=120))
def test_decode_heartbeat_never_raises_other_errors(data: bytes) -> None:
    try:
        decode_heartbeat(data)
    except OnionmeshError:
        assert len(data) != HEARTBEAT_LEN


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ITEMS), max_size=60), st.randoms(use_true_random=False))
def test_same_items_same_digest(items: list[tuple], random) -> None:  # type: ignore[no-untyped-def]
    """Two sources fed the same items (any order, repeats) have the same state digest."""
    a, b = SourceState(), SourceState()
    _feed(a, items)
    shuffled = list(items) + list(items[: len(items) // 2])
    random.shuffle(shuffled)
    _feed(b, shuffled)
    assert a.state(E, AT).digest() == b.state(E, AT).digest()


def test_running_rules() -> None:
    state = SourceState()
    (i0, d0), (i1, d1), (i2, d2), (i3, d3) = POOL[:4]
    for _identity, descs in POOL[:4]:
        for d in descs:
            state.add_descriptor(d.encode(), T0)
    assert state.add_heartbeat(sign_heartbeat(i0, d0[1], E), E)  # newest, this epoch: RUNNING
    assert state.add_heartbeat(sign_heartbeat(i1, d1[0], E), E)  # older descriptor: not RUNNING
    assert state.add_heartbeat(sign_heartbeat(i2, d2[1], E - 3), E)  # silent 3 epochs: listed, not RUNNING
    assert not state.add_heartbeat(sign_heartbeat(i3, d3[1], E - KEEP_EPOCHS - 1), E)  # too old
    assert not state.add_heartbeat(sign_heartbeat(i3, d3[1], E + 2), E)  # from the future
    cut = state.state(E, AT)
    by_fp = {e.fp: e for e in cut.sorted_entries()}
    assert by_fp[fp_bytes(d0[1])].flags == RUNNING and by_fp[fp_bytes(d0[1])].raw == d0[1].encode()
    assert by_fp[fp_bytes(d1[1])].flags == 0  # it re-signed without a heartbeat for the new one
    assert by_fp[fp_bytes(d2[1])].flags == 0
    assert fp_bytes(d3[1]) not in by_fp
    assert len(cut) == 3


def test_forged_and_foreign_items_refused() -> None:
    state = SourceState(max_relays=2)
    _identity, (_d_old, d_new) = POOL[0]
    assert state.add_descriptor(d_new.encode(), T0)
    assert not state.add_descriptor(d_new.encode(), T0)  # a repeat is not new
    forged = bytearray(d_new.encode())
    forged[-1] ^= 1
    assert not state.add_descriptor(bytes(forged), T0)
    assert not state.add_descriptor(b"junk", T0)
    other_identity, other = POOL[1]
    assert not state.add_heartbeat(sign_heartbeat(other_identity, other[1], E), E)  # held: no descriptor
    assert state.add_descriptor(other[1].encode(), T0)
    assert not state.add_descriptor(POOL[2][1][1].encode(), T0)  # over max_relays
    assert state.refused == 3
    assert len(state) == 2


def test_prune_drops_expired_and_old() -> None:
    state = SourceState()
    identity, (_old, new) = POOL[0]
    state.add_descriptor(new.encode(), T0)
    state.add_heartbeat(sign_heartbeat(identity, new, E), E)
    state.prune(E + KEEP_EPOCHS + 1, T0)
    assert len(state.heartbeats(fp_bytes(new)[0], (E,))) == 0
    state.prune(E, new.usable_until + 1)
    assert len(state) == 0


def test_gossip_peers_placed_deterministic_and_distinct() -> None:
    relays = [descs[1] for _i, descs in POOL]
    own = node_id_for(POOL[0][0].public)
    placed = gp.placed_peers(own, 7, relays)
    assert placed == gp.placed_peers(own, 7, list(reversed(relays)))  # order of the view does not matter
    assert len(placed) == gp.PLACED and len(set(placed)) == gp.PLACED
    assert relays[0] not in placed
    peers = gp.gossip_peers(own, 7, relays, SeededRng(1))
    assert peers[: gp.PLACED] == placed and len(set(peers)) == len(peers) == min(8, len(relays) - 1)
    assert relays[0] not in peers
    share = gp.liveness_share(own, relays, 3)
    assert len(share) == 3 and relays[0] not in share
    days = {tuple(r.fingerprint for r in gp.placed_peers(own, d, relays)) for d in range(10)}
    assert len(days) > 1  # positions move every day


def test_gossip_buckets_reach_every_differing_bucket() -> None:
    """At 10,000 relays nearly every bucket differs between two sources; a round fetches at most
    32: it used to be always the first 32, so buckets 32-255 never spread by gossip."""
    differing = list(range(0, 256, 2))
    rng = SeededRng(3)
    reached: set[int] = set()
    for _ in range(24):
        chosen = gp.gossip_buckets(differing, 32, rng)
        assert len(chosen) == 32 == len(set(chosen)) and set(chosen) <= set(differing)
        assert chosen == sorted(chosen)
        reached.update(chosen)
    assert reached == set(differing)
    assert gp.gossip_buckets([5, 9], 32, rng) == [5, 9]


def test_heartbeats_lacking_are_pulled_whatever_the_states_say() -> None:
    """Two sources whose states of the last cut agree exchanged no heartbeat of the new epoch (the
    gossip compared states only), so a relay's heartbeat stayed with the 24 sources that checked
    it: `lacking` names the buckets where a held relay has no heartbeat for the epoch."""
    state = SourceState()
    (id0, d0), (id1, d1) = POOL[0], POOL[1]
    for desc in (d0[1], d1[1]):
        state.add_descriptor(desc.encode(), AT)
    b0, b1 = fp_bytes(d0[1])[0], fp_bytes(d1[1])[0]
    assert state.lacking(E) == sorted({b0, b1})
    assert state.add_heartbeat(sign_heartbeat(id0, d0[1], E), E)
    assert state.lacking(E) == ([b1] if b1 != b0 else [b0])
    assert state.add_heartbeat(sign_heartbeat(id1, d1[1], E), E)
    assert state.lacking(E) == [] and state.lacking(E + 1) == sorted({b0, b1})
    assert gp.heartbeat_epochs(E, True) == (E - 1, E) and gp.heartbeat_epochs(E, False) == (E,)
