"""wire.dht_datagram: no datagram over 1,200 bytes; long messages in parts, reassembled within bounds."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.wire.dht_datagram import (
    HEADER_LEN,
    MAX_DATAGRAM,
    MAX_MESSAGE,
    MAX_PARTS,
    DhtDatagram,
    Kind,
    Reassembly,
    decode_datagram,
    encode_message,
)

MID, TOKEN = bytes(range(20)), bytes(range(16))


@settings(max_examples=200)
@given(
    kind=st.sampled_from([Kind.REQUEST, Kind.RESPONSE]),
    body=st.binary(min_size=1, max_size=MAX_MESSAGE),
    order=st.randoms(use_true_random=False),
    duplicate=st.booleans(),
)
def test_any_message_fits_1200_byte_datagrams_and_reassembles(
    kind: Kind, body: bytes, order: object, duplicate: bool
) -> None:
    datagrams = encode_message(kind, MID, TOKEN, body)
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)
    assert len(datagrams) == 1 if HEADER_LEN + len(body) <= MAX_DATAGRAM else 2 <= len(datagrams) <= MAX_PARTS
    if len(datagrams) == 1:
        assert decode_datagram(datagrams[0]) == DhtDatagram(kind, MID, TOKEN, body)
        return
    shuffled = list(datagrams) + (datagrams[:1] if duplicate else [])
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    parts = Reassembly()
    results = [parts.add("peer", decode_datagram(d), 0.0) for d in shuffled]
    whole = [r for r in results if r is not None]
    assert whole[:1] == [DhtDatagram(kind, MID, TOKEN, body)]
    assert len(parts) == 0 or duplicate  # a late duplicate may open a new partial, bounded by ttl


def test_too_long_is_refused_and_retry_stays_short() -> None:
    with pytest.raises(ValueError):
        encode_message(Kind.REQUEST, MID, TOKEN, bytes(MAX_MESSAGE + 1))
    assert encode_message(Kind.RETRY, MID, TOKEN, b"") == [bytes([Kind.RETRY]) + MID + TOKEN]


@given(st.binary(max_size=MAX_DATAGRAM + 10))
def test_decoding_garbage_raises_value_error_only(data: bytes) -> None:
    try:
        datagram = decode_datagram(data)
    except ValueError:
        return
    assert len(data) <= MAX_DATAGRAM
    if datagram.kind in (Kind.REQUEST_PART, Kind.RESPONSE_PART):
        index, count, chunk = datagram.part()
        assert index < count <= MAX_PARTS and chunk


def part(index: int, count: int, chunk: bytes, token: bytes = TOKEN, mid: bytes = MID) -> DhtDatagram:
    return DhtDatagram(Kind.REQUEST_PART, mid, token, bytes([index, count]) + chunk)


def test_bad_parts_are_refused() -> None:
    for body in (b"\x00\x01x", b"\x02\x02x", b"\x00\x05x", b"\x00\x02"):
        with pytest.raises(ValueError):
            decode_datagram(bytes([Kind.REQUEST_PART]) + MID + TOKEN + body)


def test_reassembly_is_bounded() -> None:
    parts = Reassembly(max_pending=3, max_per_source=2, ttl=10.0)
    for _ in range(2):
        assert parts.add("a", part(0, 2, b"x", mid=os.urandom(20)), 0.0) is None
    assert parts.add("a", part(0, 2, b"x", mid=os.urandom(20)), 0.0) is None
    assert len(parts) == 2  # a third from one source is refused
    for i in range(3):
        parts.add(f"b{i}", part(0, 2, b"x", mid=os.urandom(20)), 1.0)
    assert len(parts) == 3  # the oldest were evicted
    assert parts.add("c", part(0, 2, b"x"), 20.0) is None
    assert len(parts) == 1  # everything older than ttl expired
    # parts that disagree on the count or the token do not join a message
    assert parts.add("c", part(1, 3, b"y"), 20.0) is None
    assert parts.add("c", part(1, 2, b"y", token=bytes(16)), 20.0) is None
    assert parts.add("c", part(1, 2, b"y"), 20.0) == DhtDatagram(Kind.REQUEST, MID, TOKEN, b"xy")
    assert len(parts) == 0
