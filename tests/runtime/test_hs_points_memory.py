"""Introduction and rendezvous points at a relay's switch, over in-memory links (no sockets):
what they forward, what they refuse (each refusal one DESTROY or ACK and a counter), DoS
parameters, replacement of an intro circuit, cookie expiry, and a joined circuit carrying an
end-to-end hop and a stream."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from nacl.bindings import crypto_scalarmult_base

from onionmesh.crypto import hs_ntor
from onionmesh.crypto.hs_intro import build_establish_intro, seal_introduce1
from onionmesh.crypto.keys import IdentityKey
from onionmesh.proto.events import BeginRequested
from onionmesh.rng import SeededRng
from onionmesh.runtime.client.circuit_manager import CircuitHandle, CircuitMgr
from onionmesh.runtime.relay.hs_intro_point import IntroPoint
from onionmesh.runtime.relay.hs_rend_point import COOKIE_LIFETIME, RendezvousPoint
from onionmesh.wire import hs_cells as hc
from onionmesh.wire.relay_msg import RelayCommand, RelayMessage
from tests.runtime.test_memory_links import MemRelay, client_over_memory

WAIT = 10.0  # liveness bound only
HANDLED = frozenset(RelayCommand(c) for c in range(32, 41))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def points(relay: MemRelay, clock: Clock) -> tuple[IntroPoint, RendezvousPoint]:
    intro = IntroPoint(relay.switch.destroy, relay.switch.count, clock)
    rend = RendezvousPoint(relay.switch.destroy, relay.switch.count, clock)
    intro.register(relay.switch.handlers)
    rend.register(relay.switch.handlers)
    return intro, rend


async def circuit(relay: MemRelay) -> tuple[CircuitHandle, asyncio.Queue[RelayMessage]]:
    mgr: CircuitMgr = await client_over_memory(relay)
    handle = await mgr.build(hops=1, exit_fp=relay.descriptor.fingerprint, wait_directory=False)
    queue: asyncio.Queue[RelayMessage] = asyncio.Queue()
    handle.circ.handled = HANDLED
    handle.on_message = queue.put_nowait
    return handle, queue


async def closed(handle: CircuitHandle) -> bool:
    async with asyncio.timeout(WAIT):
        while handle.closed_reason is None:
            await asyncio.sleep(0.01)
    return True


def establish(
    handle: CircuitHandle, auth: IdentityKey, dos: hc.DosParams | None = None, key: bytes = b""
) -> None:
    exts = () if dos is None else ((hc.ExtType.DOS_PARAMS, dos.encode()),)
    cell = build_establish_intro(auth, exts, key or handle.circ.hops[-1].binding_key)
    handle.circ.send_message(RelayCommand.ESTABLISH_INTRO, cell.encode())


def introduce1(
    auth: IdentityKey, enc_pub: bytes, cookie: bytes = b"c" * 20
) -> tuple[bytes, hs_ntor.ClientState]:
    state = hs_ntor.client_start(auth.public, enc_pub, b"s" * 32, SeededRng(os.urandom(8)))
    plaintext = hc.IntroducePlaintext(cookie, b"o" * 32, (hc.LinkSpec(2, b"i" * 32),))
    return seal_introduce1(state, plaintext).encode(), state


async def test_intro_point_forwards_acks_refuses_and_limits(tmp_path: Path) -> None:
    relay = MemRelay(tmp_path / "relay", 1)
    intro, _ = points(relay, clock := Clock())
    async with asyncio.timeout(WAIT):
        service, sq = await circuit(relay)
        auth = IdentityKey.generate(SeededRng(2))
        establish(service, auth, hc.DosParams(1, 1))
        assert (await sq.get()).command is RelayCommand.INTRO_ESTABLISHED
        enc_secret = os.urandom(32)
        body, _state = introduce1(auth, crypto_scalarmult_base(enc_secret))

        client, cq = await circuit(relay)
        client.circ.send_message(RelayCommand.INTRODUCE1, body)
        ack = await cq.get()
        assert hc.IntroduceAck.decode(ack.body).status is hc.IntroduceAckStatus.SUCCESS
        got = await sq.get()
        assert got.command is RelayCommand.INTRODUCE2 and got.body == body  # unchanged

        # the DoS bucket (rate 1, burst 1) is empty: the next one is refused with CANT_RELAY
        second, q2 = await circuit(relay)
        second.circ.send_message(RelayCommand.INTRODUCE1, body)
        assert hc.IntroduceAck.decode((await q2.get()).body).status is hc.IntroduceAckStatus.CANT_RELAY
        assert relay.switch.stats["hs_introduce_rate_limited"] == 1
        clock.now += 1.0  # one token back
        third, q3 = await circuit(relay)
        third.circ.send_message(RelayCommand.INTRODUCE1, body)
        assert hc.IntroduceAck.decode((await q3.get()).body).status is hc.IntroduceAckStatus.SUCCESS

        # one INTRODUCE1 per client circuit: a second one destroys that circuit only
        client.circ.send_message(RelayCommand.INTRODUCE1, body)
        assert await closed(client)
        assert relay.switch.stats["hs_introduce_refused"] == 1

        # an unknown auth key: ACK 1
        other, oq = await circuit(relay)
        stranger = IdentityKey.generate(SeededRng(3))
        other.circ.send_message(RelayCommand.INTRODUCE1, introduce1(stranger, b"\x09" * 32)[0])
        assert (
            hc.IntroduceAck.decode((await oq.get()).body).status
            is hc.IntroduceAckStatus.SERVICE_NOT_RECOGNIZED
        )

        # ESTABLISH_INTRO bound to another circuit: refused, that circuit destroyed
        thief, _tq = await circuit(relay)
        establish(thief, IdentityKey.generate(SeededRng(4)), key=service.circ.hops[-1].binding_key)
        assert await closed(thief)
        assert relay.switch.stats["hs_intro_refused"] == 1

        # the same auth key on a newer circuit replaces the older, which is destroyed
        newer, nq = await circuit(relay)
        establish(newer, auth)
        assert (await nq.get()).command is RelayCommand.INTRO_ESTABLISHED
        assert await closed(service)
        assert relay.switch.stats["hs_intro_replaced"] == 1
        assert len(intro.by_key) == 1 and intro.by_key[auth.public].entry is not None
    assert service.closed_reason is not None and newer.closed_reason is None


async def test_rendezvous_joins_two_circuits_end_to_end_and_refuses_strangers(tmp_path: Path) -> None:
    relay = MemRelay(tmp_path / "relay", 1)
    _, rend = points(relay, clock := Clock())
    async with asyncio.timeout(WAIT):
        client, cq = await circuit(relay)
        cookie = os.urandom(20)
        client.circ.send_message(RelayCommand.ESTABLISH_RENDEZVOUS, hc.EstablishRendezvous(cookie).encode())
        assert (await cq.get()).command is RelayCommand.RENDEZVOUS_ESTABLISHED

        # a RENDEZVOUS1 with a cookie nobody waits under: that circuit is destroyed
        stranger, _ = await circuit(relay)
        stranger.circ.send_message(
            RelayCommand.RENDEZVOUS1, hc.Rendezvous1(os.urandom(20), bytes(64)).encode()
        )
        assert await closed(stranger)
        assert relay.switch.stats["hs_rend_unknown_cookie"] == 1

        # the real handshake: hs-ntor between client and service, joined at the relay
        auth, enc_secret = IdentityKey.generate(SeededRng(2)), os.urandom(32)
        enc_pub = crypto_scalarmult_base(enc_secret)
        _body, state = introduce1(auth, enc_pub, cookie)
        info, seed = hs_ntor.service_respond(auth.public, enc_secret, enc_pub, state.x_public, SeededRng(9))
        service, _sq = await circuit(relay)
        begun: list[BeginRequested] = []
        service.circ.send_message(RelayCommand.RENDEZVOUS1, hc.Rendezvous1(cookie, info).encode())
        service.circ.add_virtual_hop(hs_ntor.swap_directions(hs_ntor.e2e_keys(seed)), service_side=True)
        service.on_begin = begun.append
        got = await cq.get()
        assert got.command is RelayCommand.RENDEZVOUS2
        client_seed = hs_ntor.client_finish(state, hc.Rendezvous2.decode(got.body).handshake_info)
        assert client_seed == seed
        client.circ.add_virtual_hop(hs_ntor.e2e_keys(client_seed), service_side=False)
        assert relay.switch.stats["hs_rend_joined"] == 1

        # a stream crosses the joined circuit end to end: BEGIN reaches the service, CONNECTED the client
        sid = client.circ.begin("x.onion", 80)
        while not begun:
            await asyncio.sleep(0.01)
        assert begun[0].begin.port == 80 and begun[0].stream_id == sid
        service.circ.connected(sid)
        while client.circ.streams[sid].state.value != "open":
            await asyncio.sleep(0.01)

        # cookies expire: a waiting circuit older than COOKIE_LIFETIME is destroyed on the next expiry
        late, lq = await circuit(relay)
        late.circ.send_message(
            RelayCommand.ESTABLISH_RENDEZVOUS, hc.EstablishRendezvous(os.urandom(20)).encode()
        )
        assert (await lq.get()).command is RelayCommand.RENDEZVOUS_ESTABLISHED
        clock.now += COOKIE_LIFETIME
        rend.expire()
        assert await closed(late)
        assert relay.switch.stats["hs_rend_expired"] == 1 and not rend.waiting
