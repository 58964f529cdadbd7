"""Issue 19 item 4: 40 honest relays and 10 colluding Sybil relays on loopback, and a fresh client.

Every relay is a real in-process RelayNode on its own 127.x.0.1 address (real TCP links, real DHT
datagrams, real directory sources).  The Sybils run a malicious mode that exists only in this
file (test-only subclasses, never reachable from the CLI):
* they never go offline, while 8 honest relays do (so Sybils are 10 of the 42 online relays);
* they claim the maximum bandwidth (MAX_ADVERTISED_BANDWIDTH; the mesh's honest relays advertise
  the default, which is the same 10 MB/s: over-claiming against smaller honest claims is issue
  19 item 3, measured in simulations/overclaim.py, not here);
* as DHT nodes they answer every FIND_NODE / FIND_VALUE with each other only and withhold every
  stored value;
* as directory sources they list every Sybil RUNNING (vouching for each other whatever their
  heartbeats), omit every honest relay from their signed states, and hand no honest relay's
  heartbeat to gossiping sources.
A fresh client then bootstraps from one Sybil and two honest relays, its directory guards are
pinned to two Sybils (the primary among them) and one honest relay, and the test measures its
view, its DHT lookups of every online honest relay and 300 paths it would choose, against the
honest shares.  Tolerances (50 relays, 42 online): the view's Sybil share at most the online
share + 0.05 (one relay is 0.024: two stale entries); every online honest relay in the view;
lookups ≥ 0.95; the Sybils' share of 600 middle and exit hops at most their share of the view's
bandwidth weight + 0.06 (3.5 standard deviations of a 600-draw binomial at 0.24).

Measured 2026-12-03 (load average ~7 on the 2-core VM; 212 s, most of it starting 50 relays
whose sources gossip every 0.67 s): view 42 relays, Sybil share 0.238 = online 0.238; lookups
32 of 32; Sybils 0.210 of middle and exit hops (weight share 0.238); 1 of 3 entry guards a
Sybil.  Before DirClient took a cross-check source's whole list by DIFF/SNAPSHOT (the per-circuit
budget of 16 DIR_GETs let it fetch only the first differing buckets, every epoch), the same
client behind a Sybil primary kept a view of 19 relays (0.53 Sybils) and 0.875 of lookups.

Opt-in (ONIONMESH_SCALE_TESTS=1), not in the default run: 50 relays in one event loop take 2-4
minutes and, on a loaded 2-core machine, the probe's 32 parallel iterative lookups time out
often enough that lookup success fell to 0.09-0.56 in 3 of 6 runs (1.0 in the others): a
scale test of this size needs relays spread over processes before it can gate CI (issue 19).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from kademlia.node import Node

from onionmesh.directory.dir_state import RUNNING, DirEntry, DirState
from onionmesh.directory.path_selection import MAX_ADVERTISED_BANDWIDTH, bandwidth_weight
from onionmesh.runtime.client.dir_fetch import DirFetchDirectory
from onionmesh.runtime.client.node import ClientConfig, ClientNode
from onionmesh.runtime.dht.node import DhtNode
from onionmesh.runtime.relay.config import RelayConfig
from onionmesh.runtime.relay.dir_source import DirSource
from onionmesh.runtime.relay.node import RelayNode
from tests.helpers.mesh import eventually, start_mesh, stop_mesh

pytestmark = pytest.mark.skipif(
    os.environ.get("ONIONMESH_SCALE_TESTS") != "1", reason="scale test: opt in with ONIONMESH_SCALE_TESTS=1"
)
HONEST, SYBILS, GONE = 40, 10, 8
EPOCH = 8.0  # seconds: gossip rounds every 0.67 s (at 3 s, 50 sources saturated two cores)
COALITION: dict[str, Any] = {"fps": set(), "fp_bytes": set(), "contacts": []}


class ColludingSource(DirSource):
    """Test-only: signed states with every Sybil RUNNING and no honest relay; no honest heartbeat
    handed to gossip."""

    def make_state(self, epoch: int, at: float | None = None) -> DirState:
        state = super().make_state(epoch, at)
        ours = COALITION["fp_bytes"]
        entries = [
            DirEntry(e.descriptor, e.raw, RUNNING, e.weight) for fp, e in state.entries.items() if fp in ours
        ]
        return DirState(epoch, entries)

    def heartbeats(self, epoch: int, bucket: int) -> list[bytes]:
        ours = COALITION["fp_bytes"]
        return [hb for hb in super().heartbeats(epoch, bucket) if hb[:20] in ours]


class SybilRelay(RelayNode):
    """Test-only malicious relay: maximum bandwidth, colluding DHT answers, a colluding source."""

    def __init__(self, config: RelayConfig, *args: object, **kwargs: object) -> None:
        config.bandwidth = MAX_ADVERTISED_BANDWIDTH
        super().__init__(config, *args, **kwargs)  # type: ignore[arg-type]
        self.dir_source = ColludingSource(
            self.keys.identity, self.dht, lambda: self.descriptor, epoch_len=config.dir_epoch, rng=self.rng
        )

    async def start(self) -> None:
        await super().start()
        protocol = self.dht.protocol
        assert protocol is not None

        real = protocol.rpc_find_node

        def find_node(sender: tuple[str, int], nodeid: object, key: object) -> list[Any]:
            real(sender, nodeid, key)  # the argument checks and the asker's admission, as honest
            target = Node(key)  # type: ignore[arg-type]
            ours = sorted(COALITION["contacts"], key=lambda n: n.distance_to(target))
            return [list(n) for n in ours[: protocol.ksize] if n.id != protocol.source_node.id]

        protocol.rpc_find_node = find_node  # type: ignore[method-assign]
        protocol.rpc_find_value = find_node  # type: ignore[method-assign]  # values withheld


def _share(items: list[str], sybil: set[str]) -> float:
    return sum(fp in sybil for fp in items) / max(1, len(items))


async def test_a_fresh_client_against_ten_colluding_sybils(tmp_path: Path) -> None:
    factory = dict.fromkeys(range(HONEST, HONEST + SYBILS), SybilRelay)
    mesh, extras = await start_mesh(
        tmp_path, relays=HONEST + SYBILS, exits=HONEST + SYBILS, relay_factory=factory, dir_epoch=EPOCH
    )
    fresh: ClientNode | None = None
    probe: DhtNode | None = None
    try:
        honest, sybils = mesh.relays[:HONEST], mesh.relays[HONEST:]
        sybil_fps = {r.fingerprint for r in sybils}
        COALITION["fps"] = sybil_fps
        COALITION["fp_bytes"] = {bytes.fromhex(fp) for fp in sybil_fps}
        COALITION["contacts"] = [r.dht.node for r in sybils]
        # Churn: 8 honest relays go offline; the Sybils never do.
        for relay in honest[30:38]:
            await relay.stop()
        online = honest[:30] + honest[38:] + sybils
        online_fps = {r.fingerprint for r in online}
        honest_online = online_fps - sybil_fps
        online_share = len(sybil_fps) / len(online_fps)
        await asyncio.sleep(2.5 * EPOCH)  # two epochs for the gone relays' last heartbeats to age out

        # A fresh client: one Sybil and two honest bootstrap contacts; its directory guards pinned
        # to two Sybils (the primary first) and one honest relay.
        fresh = ClientNode(
            ClientConfig(
                data_dir=tmp_path / "fresh",
                socks_port=0,
                control_port=0,
                bootstrap=(sybils[0].dht.address, honest[1].dht.address, honest[2].dht.address),
                directory="guards",
                dir_epoch=EPOCH,
            )
        )
        await fresh.start()
        directory = fresh.directory
        assert isinstance(directory, DirFetchDirectory)
        in_view = lambda: honest_online <= {d.fingerprint for d in fresh.relays}  # noqa: E731
        settled = await eventually(in_view, 8 * EPOCH)
        if not settled:  # what each side held, for the failure message
            held = {d.fingerprint for d in fresh.relays}
            states = [r.dir_source.newest() for r in honest[:3] if r.dir_source is not None]
            running = [sum(e.running for e in s.entries.values()) if s else -1 for s in states]
            raise AssertionError(
                f"view {len(held)} relays, {len(honest_online - held)} online honest missing; honest "
                f"sources list RUNNING {running}; dir guards {directory.guards.sampled}, bad "
                f"{directory.guards.bad}; stats {directory.stats}"
            )
        directory.guards.sampled = [sybils[1].fingerprint, sybils[2].fingerprint, honest[3].fingerprint]
        directory.client.forget_primary()
        refreshes = directory.crawls
        assert await eventually(lambda: directory.crawls >= refreshes + 3, 8 * EPOCH)
        view = [d.fingerprint for d in fresh.relays]
        view_share = _share(view, sybil_fps)

        # Lookups: a fresh DHT node bootstrapped through a Sybil and an honest relay looks up the
        # descriptor of every online honest relay.
        probe = DhtNode(None)
        await probe.listen(0, "127.0.0.1")
        await probe.bootstrap([sybils[3].dht.address, honest[4].dht.address])
        results = await asyncio.gather(*(probe.get_descriptor(fp) for fp in sorted(honest_online)))
        found = sum(
            r.descriptor is not None and r.descriptor.fingerprint == fp
            for r, fp in zip(results, sorted(honest_online), strict=True)
        )
        lookup_success = found / len(honest_online)

        # Path choices: 300 three-hop paths the client would build from its view.
        relays = list(fresh.relays)
        middles_exits: list[str] = []
        first_hops: list[str] = []
        for _ in range(300):
            path = fresh.circuits.policy.choose(relays, hops=3, port=mesh.origin.port)
            first_hops.append(path[0].fingerprint)
            middles_exits += [d.fingerprint for d in path[1:]]
        hop_share = _share(middles_exits, sybil_fps)
        weight = {d.fingerprint: bandwidth_weight(d) for d in relays}
        weight_share = sum(w for fp, w in weight.items() if fp in sybil_fps) / sum(weight.values())
        entry_guards = [g.fingerprint for g in fresh.circuits.policy.guards.sampled]

        print(f"sybil_testnet.online_sybil_share {online_share:.4f} ratio")
        print(f"sybil_testnet.view_sybil_share {view_share:.4f} ratio")
        print(f"sybil_testnet.view_relays {len(view)} relays")
        print(f"sybil_testnet.lookup_success {lookup_success:.4f} ratio")
        print(f"sybil_testnet.hop_sybil_share_middle_exit {hop_share:.4f} ratio")
        print(f"sybil_testnet.view_sybil_weight_share {weight_share:.4f} ratio")
        print(
            f"sybil_testnet.entry_guards_sybil {sum(g in sybil_fps for g in entry_guards)} "
            f"of {len(entry_guards)}"
        )
        print(f"sybil_testnet.dir_guards_bad {sorted(directory.guards.bad)}")

        assert honest_online <= set(view), "an online honest relay is missing from the view"
        assert view_share <= online_share + 0.05
        assert lookup_success >= 0.95
        assert hop_share <= weight_share + 0.06
        assert weight_share <= online_share + 0.05  # over-claiming bought nothing here (equal claims)
        # The Sybil primary was caught omitting: evidence against it (bad after 2 epochs of it).
        assert any(ev.what == "omission" for ev in directory.client.evidence)
    finally:
        if probe is not None:
            probe.stop()
        if fresh is not None:
            await fresh.stop()
        await stop_mesh(mesh, extras)
        COALITION.update(fps=set(), fp_bytes=set(), contacts=[])
