"""An introduction flood against an onion service on a loopback testnet (issue 17 item 6's
acceptance): do honest clients still connect?  Prints `name value unit` lines.

Starts `onionmesh testnet`'s relays (bench/throughput.py's way), a node hosting a service for a
local HTTP server, an honest client node and an attacker node.  The attacker fetches the
descriptor as any client does, then sends *valid* INTRODUCE1 messages (a real hs-ntor start, a
real relay as rendezvous point, a random cookie nobody waits under), one per introduction
circuit as the introduction point allows, from --workers concurrent workers, bounded by
--flood-intros and --seconds: each costs the service an X25519, a MAC check and a circuit to the
rendezvous point that leads nowhere, the most an introduction can cost it.  The honest client
makes --honest first connections (a fresh SOCKS username each: new introduction and rendezvous)
before the flood and the same number spread over it; each is curl's time to first byte of 1 KiB.

    python bench/onion_flood.py [--relays 6] [--workers 8] [--flood-intros 3000] [--seconds 30]
                                [--honest 8] [--pow [--pow-period 5]] [--quick]

During the flood the honest client fetches the descriptor before each connection (a new client
each time: with --pow it sees the current suggested effort).  With --pow the service runs Tor's
suggested-effort controller (proto.hs_pow_effort) every --pow-period seconds; the attacker pays
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import onion_mesh
from throughput import curl

from onionmesh.app.run import run
from onionmesh.crypto import hs_address, hs_ntor
from onionmesh.crypto.hs_blinding import ExpandedKey
from onionmesh.crypto.hs_intro import seal_introduce1
from onionmesh.directory.vanguards import HsPurpose
from onionmesh.errors import OnionmeshError
from onionmesh.runtime import safelog
from onionmesh.runtime.client.hs_circuits import link_specs
from onionmesh.runtime.client.node import ClientNode
from onionmesh.runtime.client.onion_service import OnionServiceSpec, PortMap
from onionmesh.wire.hs_cells import IntroduceAck, IntroducePlaintext
from onionmesh.wire.relay_msg import RelayCommand


async def honest_round(
    socks: str, url: str, n: int, tag: str, gap: float = 0.0, fresh: ClientNode | None = None
) -> tuple[int, list[float]]:
    ok, ttfb = 0, []
    for i in range(n):
        await asyncio.sleep(gap)
        if fresh is not None:  # a new client each time: the current descriptor, its current effort
            fresh.onion._descriptors.clear()
        try:
            _speed, first, _total = await curl(socks, url, user=f"{tag}{i}")
        except (RuntimeError, ValueError):
            continue
        ok += 1
        ttfb.append(first * 1000)
    return ok, ttfb


class Flooder:
    """Valid introductions, as fast as --workers intro circuits allow, up to a bound."""

    def __init__(self, node: ClientNode, address: str, limit: int) -> None:
        self.node, self.address, self.limit = node, address, limit
        self.sent = 0
        self.acks: dict[str, int] = {}
        self.failed = 0

    async def worker(self, desc, subcred, blinded, until: float) -> None:  # type: ignore[no-untyped-def]
        hs, rng = self.node.hs, self.node.rng
        relays = {r.identity_pk: r for r in hs.relays()}
        while self.sent < self.limit and time.monotonic() < until:
            self.sent += 1
            point = desc.intro_points[rng.randbelow(len(desc.intro_points))]
            relay = relays.get(point.identity_pk)
            rp = hs.choose_last_hop(set())
            if relay is None:
                self.failed += 1
                continue
            state = hs_ntor.client_start(point.auth_key, point.enc_key, subcred, rng)
            plaintext = IntroducePlaintext(rng.random_bytes(20), rp.onion_pk, link_specs(rp))
            try:
                circ = await hs.build(HsPurpose.CLIENT_INTRO, relay, None)
            except (OnionmeshError, OSError, TimeoutError):
                self.failed += 1
                continue
            try:
                circ.circ.send_message(
                    RelayCommand.INTRODUCE1, seal_introduce1(state, plaintext, ()).encode()
                )
                msg = await hs.expect(circ, RelayCommand.INTRODUCE_ACK, 15.0)
                status = IntroduceAck.decode(msg.body).status.name
            except (OnionmeshError, TimeoutError, ValueError):
                status = "no-ack"
            finally:
                hs.forget(circ)
                hs.mgr.close_circuit(circ.number)
            self.acks[status] = self.acks.get(status, 0) + 1


async def measure(args: argparse.Namespace) -> None:
    def out(name: str, value: float, unit: str, fmt: str = ".2f") -> None:
        print(f"onion_flood.{name} {value:{fmt}} {unit}", flush=True)

    safelog.configure("error")
    with tempfile.TemporaryDirectory(prefix="onionmesh-onion-flood-") as tmp:
        async with onion_mesh(Path(tmp), args.relays, {"small": os.urandom(1024)}) as (port, node):
            host, honest, attacker = await node("host"), await node("honest"), await node("attacker")
            spec = OnionServiceSpec(
                key=ExpandedKey.from_seed(os.urandom(32)),
                ports=(PortMap(80, "127.0.0.1", port),),
                pow_enabled=args.pow,
                pow_update_period=args.pow_period,
            )
            service = await host.add_onion_service(spec)
            if not await service.wait_published(120):
                raise RuntimeError("not published within 120 s")
            url, socks = f"http://{service.address}/small", f"127.0.0.1:{honest.socks.port}"
            ok, ttfb = await honest_round(socks, url, args.honest, "before")
            out("honest_before_ok", ok / args.honest, "fraction")
            if ttfb:
                out("honest_before_ttfb_ms", statistics.median(ttfb), "ms", ".1f")

            pk = hs_address.parse_onion_host(service.address)
            desc, subcred, blinded = await attacker.onion._descriptor(
                service.address, service.service_id, pk, True
            )
            flood = Flooder(attacker, service.address, args.flood_intros)
            before = dict(service.stats)
            t0 = time.monotonic()
            until = t0 + args.seconds
            workers = [
                asyncio.create_task(flood.worker(desc, subcred, blinded, until)) for _ in range(args.workers)
            ]
            await asyncio.sleep(2)  # the flood is under way
            gap = max(0.0, (args.seconds - 4) / args.honest - 0.5)  # spread over the flood
            ok, ttfb = await honest_round(socks, url, args.honest, "during", gap, honest)
            during_s = time.monotonic() - t0
            await asyncio.gather(*workers)
            flood_s = time.monotonic() - t0
            out("honest_during_ok", ok / args.honest, "fraction")
            if ttfb:
                out("honest_during_ttfb_ms", statistics.median(ttfb), "ms", ".1f")
            out("honest_round_during_s", during_s, "s", ".1f")
            out("flood_intros_sent", flood.sent, "intros", ".0f")
            out("flood_intro_rate", flood.sent / flood_s, "intros/s", ".1f")
            out("flood_duration_s", flood_s, "s", ".1f")
            print(f"onion_flood.flood_acks {flood.acks} (circuits failed {flood.failed})", flush=True)
            delta = {k: v - before.get(k, 0) for k, v in service.stats.items() if v != before.get(k, 0)}
            print(f"onion_flood.service_stats {delta}", flush=True)
            if args.pow:
                print(f"onion_flood.pow_effort_updates {service.pow.updates}", flush=True)
                out("pow_suggested_effort_end", service.pow.suggested, "", ".0f")
            print(
                f"check.honest_during_flood {ok / args.honest:.3f} fraction "
                f"{'PASS' if ok / args.honest >= 0.9 else 'FAIL'} target >= 0.9",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relays", type=int, default=6)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--flood-intros", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--honest", type=int, default=8)
    ap.add_argument("--pow", action="store_true", help="the service asks for proof of work")
    ap.add_argument(
        "--pow-period", type=float, default=5.0,
        help="the service's effort update period (Tor's HS_UPDATE_PERIOD is 300 s; shorter to see it move)",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.flood_intros, args.seconds, args.honest, args.workers = 80, 15.0, 4, 4
    run(measure(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
