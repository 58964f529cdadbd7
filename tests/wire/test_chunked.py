"""The one chunked-answer framing (wire.chunked) as both DIR_DATA and DHT_ANSWER use it."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmesh.errors import RemoteProtocolError
from onionmesh.wire.chunked import CHUNK_MAX
from onionmesh.wire.dht_rpc import MAX_ANSWER, AnswerAssembler, DhtAnswer, DhtStatus, answer_bodies
from onionmesh.wire.dir_msg import DirData, DirStatus, DocAssembler, data_bodies
from onionmesh.wire.relay_msg import RELAY_BODY_MAX

CODECS = [
    (DirData, DirStatus, data_bodies, DocAssembler),
    (DhtAnswer, DhtStatus, answer_bodies, AnswerAssembler),
]


@pytest.mark.parametrize(("codec", "status", "bodies", "assembler"), CODECS)
@given(payload=st.binary(max_size=MAX_ANSWER), rids=st.lists(st.integers(1, 0xFFFF), min_size=2, max_size=2))
def test_interleaved_answers_reassemble_per_request(codec, status, bodies, assembler, payload, rids) -> None:
    a, b = rids if rids[0] != rids[1] else (rids[0], rids[0] % 0xFFFF + 1)
    join = assembler()
    first, second = bodies(status.OK, payload), bodies(status.OK, payload[::-1])
    assert all(len(x) <= RELAY_BODY_MAX for x in first + second)
    done = []
    for x, y in zip(first, second, strict=True):
        done += [join.feed(a, codec.decode(x)), join.feed(b, codec.decode(y))]
    assert done[-2:] == [(status.OK, payload), (status.OK, payload[::-1])]
    assert all(d is None for d in done[:-2])


@pytest.mark.parametrize(("codec", "status", "bodies", "assembler"), CODECS)
@given(data=st.binary(max_size=RELAY_BODY_MAX))
def test_decoders_raise_only_protocol_errors_and_round_trip(codec, status, bodies, assembler, data) -> None:
    with contextlib.suppress(RemoteProtocolError):
        body = codec.decode(data)
        assert type(body) is codec and body.encode() == data


@pytest.mark.parametrize(("codec", "status", "bodies", "assembler"), CODECS)
def test_a_status_that_is_not_ok_is_one_empty_body(codec, status, bodies, assembler) -> None:
    for s in list(status)[1:]:
        assert bodies(s, b"ignored") == [bytes([s, 0, 0, 0])]
    with pytest.raises(ValueError):
        codec(status.OK, False, bytes(CHUNK_MAX + 1)).encode()


def test_the_two_bodies_are_distinct_types() -> None:
    assert DirData(DirStatus.OK) != DhtAnswer(DhtStatus.OK)
    assert repr(DirData(DirStatus.BUSY)).startswith("DirData(")
