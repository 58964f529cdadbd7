"""Measured weights (docs/directory-design.md §3.4, §6): the report format and the aggregation's bounds."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from onionmesh.crypto.keys import IdentityKey
from onionmesh.directory.measurement import (
    GROWTH,
    MAX_PEERS,
    MAX_REPORT_LEN,
    NEW_RELAY_WEIGHT,
    Report,
    decode_report,
    kbytes,
    measured,
    next_weights,
    sign_report,
    weighted_median,
)
from onionmesh.errors import CryptoError, RemoteProtocolError

KEY = IdentityKey(bytes(range(32)))
fps = st.binary(min_size=20, max_size=20)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(fps, st.integers(0, 2**40), max_size=40), st.integers(0, 2**32 - 1))
def test_report_round_trip(counts: dict[bytes, int], day: int) -> None:
    report = sign_report(KEY, day, counts)
    raw = report.encode()
    assert decode_report(raw) == report
    assert len(raw) <= MAX_REPORT_LEN
    expected = {fp: kbytes(n) for fp, n in counts.items() if n >= 1000}
    assert dict(report.peers) == expected


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_mutation_refused(data: st.DataObject) -> None:
    raw = sign_report(KEY, 20_000, {bytes([i]) * 20: 5_000_000 * (i + 1) for i in range(3)}).encode()
    i = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1 :]
    with pytest.raises((RemoteProtocolError, CryptoError)):
        decode_report(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_a_clean_error(raw: bytes) -> None:
    with pytest.raises((RemoteProtocolError, CryptoError)):
        decode_report(raw)


def test_bounds_refused_before_reading() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_report(b"\x00" * (MAX_REPORT_LEN + 1))
    head = b"OMMR\x01" + bytes(32) + (1).to_bytes(4, "big") + (MAX_PEERS + 1).to_bytes(2, "big")
    with pytest.raises(RemoteProtocolError, match="too many"):
        decode_report(head)
    # Unsorted peers: a valid signature over a non-canonical body is still refused.
    unsorted = Report(KEY.public, 1, ((b"\x02" * 20, 1), (b"\x01" * 20, 1)))
    signed = Report(
        unsorted.reporter_pk, 1, unsorted.peers, KEY.sign(b"onionmesh measurement v1\x00", unsorted._signed())
    )
    with pytest.raises(RemoteProtocolError, match="ascending"):
        decode_report(signed.encode())


def test_report_lists_a_keyed_sample_never_only_the_largest_and_never_itself() -> None:
    counts = {i.to_bytes(20, "big"): 1000 * (i + 1) for i in range(2 * MAX_PEERS)}
    counts[bytes.fromhex(KEY.fingerprint)] = 10**12
    report = sign_report(KEY, 3, counts)
    assert len(report.peers) == MAX_PEERS
    assert bytes.fromhex(KEY.fingerprint) not in dict(report.peers)
    small = sum(kb <= MAX_PEERS for _, kb in report.peers)  # the smaller half of the peers
    assert MAX_PEERS // 4 < small < 3 * MAX_PEERS // 4  # a top-512 list would have none
    assert sign_report(KEY, 3, counts).peers == report.peers  # deterministic
    assert sign_report(KEY, 4, counts).peers != report.peers  # a new sample each day
    assert kbytes(2**60) == 2**32 - 1


values = st.floats(0, 1e6, allow_nan=False)
weights = st.floats(0.01, 1e3, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(values, weights), min_size=1, max_size=30),
    st.lists(st.tuples(values, weights), max_size=30),
)
def test_coalition_below_half_cannot_move_the_median(
    honest: list[tuple[float, float]], coalition: list[tuple[float, float]]
) -> None:
    """Whatever the coalition reports, if it holds less than half the weight the median stays
    within the honest reporters' range."""
    assume(sum(w for _, w in coalition) < sum(w for _, w in honest))
    m = weighted_median(honest + coalition)
    assert m is not None
    assert min(v for v, _ in honest) <= m <= max(v for v, _ in honest)


def _report(key: IdentityKey, peers: dict[bytes, int]) -> Report:
    return sign_report(key, 7, {fp: kb * 1000 for fp, kb in peers.items()})


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 10_000),  # yesterday's weight of the target
    st.integers(1, 10**7),  # advertised bytes/s
    st.integers(0, 10**9),  # kbytes the (honest) reporters saw it carry
    st.integers(0, 2**32 - 1),  # what the coalition claims it carried
)
def test_weight_never_above_self_report_nor_double_yesterday(
    prev_w: int, adv: int, seen: int, lie: int
) -> None:
    reporters = [IdentityKey(bytes([i]) * 32) for i in range(1, 6)]
    target = b"\xaa" * 20
    rfps = [bytes.fromhex(k.fingerprint) for k in reporters]
    prev = {fp: 1000 for fp in rfps} | {target: prev_w}
    reports = [_report(k, {target: seen}) for k in reporters[:3]]  # 3 of 5: the majority of weight
    reports += [_report(k, {target: lie}) for k in reporters[3:]]
    m = measured(reports, prev)
    w = next_weights({target: adv}, prev, m)[target]
    assert 1 <= w <= max(1, adv // 1000)
    assert w <= max(1, GROWTH * prev_w)


def test_over_claimer_sinks_to_what_peers_saw() -> None:
    """An honest relay carrying its share keeps its weight; a relay advertising 10 MB/s that peers
    saw carry a tenth of its weight's share sinks, whatever two colluding reporters say."""
    reporters = [IdentityKey(bytes([i]) * 32) for i in range(1, 8)]
    rfps = [bytes.fromhex(k.fingerprint) for k in reporters]
    honest, liar = b"\x01" * 20, b"\x02" * 20
    others = [bytes([0x10 + i]) * 20 for i in range(6)]  # more honest relays: the load factor's basis
    prev = {fp: 1000 for fp in rfps} | {honest: 1000, liar: 1000} | {o: 1000 for o in others}
    per_pair = 1000  # kB a reporter sees per day with a relay carrying its share
    fair = {honest: per_pair, liar: per_pair // 10} | {o: per_pair for o in others}
    reports = [_report(k, fair) for k in reporters[:5]]
    reports += [_report(k, {honest: 0, liar: 10**6}) for k in reporters[5:]]  # the coalition vouches
    m = measured(reports, prev)
    assert m[liar] < m[honest] / 5
    w = next_weights(dict.fromkeys([honest, liar, *others], 10_000_000), prev, m)
    assert w[honest] == 2000  # carried its share: grows toward its self-report, 2x a day at most
    assert w[liar] <= 100  # carried a tenth of its share: sinks to what it carried


def test_new_relay_and_unmeasured_start_small() -> None:
    w = next_weights({b"\x05" * 20: 10_000_000}, {}, {})
    assert w == {b"\x05" * 20: NEW_RELAY_WEIGHT}
    assert next_weights({b"\x05" * 20: 20_000}, {}, {}) == {b"\x05" * 20: 20}


def test_reporters_below_two_percent_leave_m_undefined() -> None:
    reporters = [IdentityKey(bytes([i]) * 32) for i in range(1, 3)]
    rfps = [bytes.fromhex(k.fingerprint) for k in reporters]
    target = b"\x03" * 20
    prev = {rfps[0]: 5, rfps[1]: 10_000, target: 100}  # the only reporter of target holds 5/10,105
    assert target not in measured([_report(reporters[0], {target: 10**6})], prev)
    assert weighted_median([]) is None


def test_exits_are_scaled_by_their_position_not_grown() -> None:
    """Exits carry more bytes per unit of weight than middles (they are drawn among fewer relays);
    unscaled they would all look under-weighted and grow, scaled by 1 + W/W_exit they do not."""
    relays = [bytes([i]) * 20 for i in range(1, 9)]
    prev = dict.fromkeys(relays, 1000)
    exits = relays[:2]  # W/W_exit = 4: an exit carrying its share shows 5x a middle's bytes
    m = {r: (2500.0 if r in exits else 500.0) for r in relays}
    adv = dict.fromkeys(relays, 10_000_000)
    scaled = next_weights(adv, prev, m, exits)
    assert scaled[relays[0]] == scaled[relays[5]] == 2000  # all carried their share: all may grow
    unscaled = next_weights(adv, prev, m)
    assert unscaled[relays[5]] == 2000  # the middles set the median ...
    # ... and a middle carrying a fifth of an exit's bytes would be cut if exits set it:
    assert next_weights(adv, prev, {r: 2500.0 for r in relays} | {relays[7]: 500.0}, exits)[relays[7]] < 1000
