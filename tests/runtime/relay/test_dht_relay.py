"""The last hop's side of DHT over circuits is not a UDP relay: what it refuses, and its limits."""

from __future__ import annotations

import os

import umsgpack

from onionmesh.directory.dht_records import NONCE_LEN
from onionmesh.proto.dht_events import DhtRpcRequested
from onionmesh.runtime.relay import dht_answers as dht_relay
from onionmesh.runtime.relay.dht_answers import DhtRpcService
from onionmesh.wire.dht_rpc import AnswerAssembler, DhtAnswer, DhtRpc, DhtStatus
from tests.helpers.dht import Net


def ask(service: DhtRpcService, circuit: object, host: str, port: int, request: object) -> object:
    raw = request if isinstance(request, bytes) else umsgpack.packb(request)
    return service.answer(circuit, DhtRpcRequested(1, DhtRpc(host, port, raw)))


def joined(bodies: list[bytes]) -> tuple[DhtStatus, bytes]:
    assembler = AnswerAssembler()
    out = None
    for body in bodies:
        out = assembler.feed(1, DhtAnswer.decode(body))
    assert out is not None
    return out


class Circuit:
    """Stands in for a relay's CircuitEntry (the service keys its state by the object)."""


async def test_known_contacts_only_client_rpcs_only_and_rate_limited(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async with Net() as net:
        relays = await net.network(3)
        last_hop = relays[1]
        service = DhtRpcService(last_hop, lambda: ((relays[0].address[0], relays[0].address[1]),))
        circ = Circuit()
        target = relays[2].address
        status, answer = joined(
            await ask(service, circ, *target, ["find_node", [os.urandom(20), os.urandom(20)]])
        )
        assert status is DhtStatus.OK and isinstance(umsgpack.unpackb(answer), list)
        status, answer = joined(await ask(service, circ, *target, ["descriptor", [os.urandom(NONCE_LEN)]]))
        assert status is DhtStatus.OK  # the node's signed descriptor and its proof, for the client to check

        raw = await net.raw()  # a UDP socket that is no DHT contact of anyone
        for request in (
            ["find_node", [os.urandom(20), os.urandom(20)]],
            ["ping", [os.urandom(20)]],
        ):
            status, _ = joined(
                await ask(service, circ, "127.0.0.1", raw.transport.get_extra_info("sockname")[1], request)
            )
            assert status is DhtStatus.REFUSED
        assert raw.received == [], "nothing was sent to an address that is no known DHT contact"
        for request in (
            ["store", [os.urandom(20), os.urandom(20), b"x"]],  # clients never store
            ["find_node", [os.urandom(20)] * 4],  # too many arguments
            ["find_node", [b"x" * 65, os.urandom(20)]],  # an argument too long
            b"\xc1garbage",
        ):
            status, _ = joined(await ask(service, circ, *target, request))
            assert status is DhtStatus.REFUSED

        status, answer = joined(await ask(service, circ, "0.0.0.0", 1, ["contacts", []]))
        seeds = {tuple(x) for x in umsgpack.unpackb(answer)}
        assert status is DhtStatus.OK and relays[0].address in seeds

        monkeypatch.setattr(dht_relay, "BURST", 5.0)
        limited = DhtRpcService(last_hop, lambda: ())
        statuses = [
            joined(await ask(limited, circ, *target, ["ping", [os.urandom(20)]]))[0] for _ in range(8)
        ]
        assert DhtStatus.RATE_LIMITED in statuses and statuses[0] is DhtStatus.OK
