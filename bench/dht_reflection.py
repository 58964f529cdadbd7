"""How many bytes a DHT relay sends to an address that never proved it can receive (issue 15, item 1).

One relay (a real `DhtNode` with an identity and a descriptor) on 127.0.0.1; one attacker
socket on 127.0.0.1 sends `--rounds` rounds of ping, find_node, find_value and store, each with a
fresh random node ID, in every DHT framing (the pre-token one, the current one with no token and
with a made-up token), as a reflector's victim would see them arrive with its address as source.
`tests/runtime/dht/test_dht_reflection.py` sends the same burst (`burst_round`, `relay_at`, `Sink`);
the burst is built byte by byte (no import of the DHT's framing modules) so that it runs against
code of either era.  Prints the
bytes sent, the bytes that came back to that socket, and their ratio (the amplification).

    python bench/dht_reflection.py [--rounds 50]

Loopback only; ends after a bounded wait (no traffic to anyone else).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import umsgpack

from onionmesh.crypto.keys import IdentityKey, OnionKey, OnionKeyCert
from onionmesh.directory.descriptor import RelayDescriptor
from onionmesh.rng import SeededRng
from onionmesh.runtime.dht.node import DhtNode


def relay_descriptor(ident: IdentityKey, host: str, port: int) -> bytes:
    now = int(time.time())
    onion = OnionKey.generate(SeededRng(os.urandom(16)))
    cert = OnionKeyCert.issue(ident, onion.public, now - 60, now + 86400)
    return RelayDescriptor.create(
        identity=ident, onion_cert=cert, nickname="reflector", link_addresses=((host, 9000),),
        dht_contact=(host, port), exit_policy="", bandwidth=1000, published=now, lifetime=3 * 3600,
    ).encode()  # fmt: skip


async def relay_at(host: str) -> DhtNode:
    """A real DHT relay (identity and descriptor) listening on `host`."""
    ident = IdentityKey.generate(SeededRng(os.urandom(16)))
    node = DhtNode(ident)
    await node.listen(0, host)
    node.descriptor_raw = relay_descriptor(ident, host, node.address[1])
    return node


class Sink(asyncio.DatagramProtocol):
    """Keeps every datagram that reaches the attacker's (the victim's) socket."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)


def burst_round() -> list[bytes]:
    """ping, find_node, find_value, store, each with a fresh random node ID, in every framing:
    pre-token (0x00 ‖ msg_id ‖ msgpack), token-less and with a made-up token
    (0x02 ‖ msg_id ‖ token(16) ‖ msgpack)."""
    out = []
    for name, args in (
        ("ping", [os.urandom(20)]),
        ("find_node", [os.urandom(20), os.urandom(20)]),
        ("find_value", [os.urandom(20), os.urandom(20)]),
        ("store", [os.urandom(20), os.urandom(20), os.urandom(64)]),
    ):
        body = umsgpack.packb([name, args])
        out.append(b"\x00" + os.urandom(20) + body)
        out.append(b"\x02" + os.urandom(20) + bytes(16) + body)
        out.append(b"\x02" + os.urandom(20) + os.urandom(16) + body)
    return out


async def measure(rounds: int, wait: float) -> dict[str, float]:
    relay = await relay_at("127.0.0.1")
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    sent = 0
    try:
        for _ in range(rounds):
            for datagram in burst_round():
                transport.sendto(datagram, relay.address)
                sent += len(datagram)
            await asyncio.sleep(0.005)
        await asyncio.sleep(wait)  # the relay's side-effect requests come after its answers
        ledger = vars(relay.protocol).get("address_check")  # rpcudp answers any getattr
        me = transport.get_extra_info("sockname")[:2]
        rx, tx = ledger.ledger(me) if ledger is not None else (None, None)
    finally:
        transport.close()
        relay.stop()
    returned = sum(len(d) for d in sink.received)
    return {"sent": sent, "returned": returned, "datagrams": len(sink.received),
            "ratio": returned / sent, "ledger_received": rx, "ledger_sent": tx}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--wait", type=float, default=2.0, help="seconds to wait for late datagrams")
    args = parser.parse_args()
    r = asyncio.run(measure(args.rounds, args.wait))
    print(f"attacker sent {r['sent']} bytes; {r['datagrams']} datagrams, {r['returned']} bytes came back: "
          f"amplification {r['ratio']:.2f}x")  # fmt: skip
    if r["ledger_received"] is not None:
        print(f"relay's ledger for that address: received {r['ledger_received']}, sent {r['ledger_sent']}")


if __name__ == "__main__":
    main()
