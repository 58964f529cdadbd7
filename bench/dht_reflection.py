"""How many bytes a DHT relay sends to an address that never proved it can receive (issue 15, item 1).

One relay (a real `DhtNode` with an identity and a descriptor) on 127.0.0.1; one attacker
socket on 127.0.0.1 sends `--rounds` rounds of ping, find_node, find_value and store, each with a
fresh random node ID, in both DHT framings (the current one with no token, and the pre-token
one), as a reflector's victim would see them arrive with its address as source.  Prints the
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
from onionmesh.runtime.dht import DhtNode

LEGACY_REQUEST = b"\x00"  # before the token: 0x00 ‖ msg_id ‖ msgpack
REQUEST = b"\x02"  # 0x02 ‖ msg_id ‖ token(16, zero: none) ‖ msgpack


def relay_descriptor(ident: IdentityKey, host: str, port: int) -> bytes:
    now = int(time.time())
    onion = OnionKey.generate(SeededRng(os.urandom(16)))
    cert = OnionKeyCert.issue(ident, onion.public, now - 60, now + 86400)
    return RelayDescriptor.create(
        identity=ident, onion_cert=cert, nickname="reflector", link_addresses=((host, 9000),),
        dht_contact=(host, port), exit_policy="", bandwidth=1000, published=now, lifetime=3 * 3600,
    ).encode()  # fmt: skip


def attack_requests() -> list[bytes]:
    """One round: each RPC with a fresh node ID, in both framings."""
    out = []
    for name, args in (
        ("ping", [os.urandom(20)]),
        ("find_node", [os.urandom(20), os.urandom(20)]),
        ("find_value", [os.urandom(20), os.urandom(20)]),
        ("store", [os.urandom(20), os.urandom(20), os.urandom(64)]),
    ):
        body = umsgpack.packb([name, args])
        out.append(LEGACY_REQUEST + os.urandom(20) + body)
        out.append(REQUEST + os.urandom(20) + bytes(16) + body)
    return out


class Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams = 0
        self.bytes = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams += 1
        self.bytes += len(data)


async def measure(rounds: int, wait: float) -> dict[str, float]:
    ident = IdentityKey.generate(SeededRng(os.urandom(16)))
    relay = DhtNode(ident)
    await relay.listen(0, "127.0.0.1")
    relay.descriptor_raw = relay_descriptor(ident, "127.0.0.1", relay.address[1])
    loop = asyncio.get_running_loop()
    transport, counter = await loop.create_datagram_endpoint(Counter, local_addr=("127.0.0.1", 0))
    sent = 0
    try:
        for _ in range(rounds):
            for datagram in attack_requests():
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
    return {"sent": sent, "returned": counter.bytes, "datagrams": counter.datagrams,
            "ratio": counter.bytes / sent, "ledger_received": rx, "ledger_sent": tx}  # fmt: skip


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
