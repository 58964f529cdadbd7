"""DHT_RPC / DHT_ANSWER through a real chain of circuit machines (sans-I/O)."""

from __future__ import annotations

import pytest

from onionmesh.errors import RemoteProtocolError
from onionmesh.proto.dht_events import DhtAnswerReceived, DhtRpcRequested
from onionmesh.wire.dht_rpc import AnswerAssembler, DhtRpc, DhtStatus, answer_bodies
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage
from tests.helpers.circuit_harness import built_chain


def test_an_rpc_reaches_the_last_hop_only_and_its_answer_comes_back_in_chunks() -> None:
    chain = built_chain(3)
    rpc = DhtRpc("192.0.2.9", 4000, b"\x92\xa4ping\x91\xc4\x14" + bytes(20))
    chain.client.dht_rpc(17, rpc)
    chain.pump()
    assert chain.take_exit_events() == [DhtRpcRequested(17, rpc)]
    assert not any(isinstance(e, DhtRpcRequested) for obs in chain.observed[:-1] for e in obs.events)
    answer = bytes(range(256)) * 16  # MAX_ANSWER bytes: needs two DHT_ANSWER messages
    chain.exit.dht_answer(17, answer_bodies(DhtStatus.OK, answer))
    chain.pump()
    events = [e for e in chain.take_client_events() if isinstance(e, DhtAnswerReceived)]
    assert len(events) == 2 and {e.request_id for e in events} == {17}
    assembler = AnswerAssembler()
    assert [assembler.feed(17, e.answer) for e in events][-1] == (DhtStatus.OK, answer)
    assert 17 not in chain.client.dht_pending
    chain.exit.dht_answer(17, answer_bodies(DhtStatus.TIMEOUT))  # late: dropped, circuit lives on
    chain.pump()
    assert not chain.take_client_events()


def test_a_dht_rpc_for_a_middle_hop_destroys_the_circuit() -> None:
    chain = built_chain(3)
    body = DhtRpc("192.0.2.9", 4000, b"").encode()
    chain.client._seal(RelayMessage(RelayCommand.DHT_RPC, 5, body), hop=1)
    with pytest.raises(RemoteProtocolError, match="middle hop"):
        chain.pump()


def test_a_malformed_dht_rpc_is_a_violation() -> None:
    chain = built_chain(2)
    chain.client._seal(RelayMessage(RelayCommand.DHT_RPC, 5, b"\x01\x03abc\x0f\xa0\x00\x00"))  # a hostname
    with pytest.raises(RemoteProtocolError):
        chain.pump()
