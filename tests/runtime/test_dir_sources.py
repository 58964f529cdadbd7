"""Directory sources over real sockets (docs/directory-design.md §4.1): relays on loopback with
accelerated epochs agree on one signed state, and liveness follows a relay that leaves and returns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from onionmesh.directory import dir_list as dl
from onionmesh.directory.dir_state import fp_bytes
from onionmesh.directory.gossip_peers import liveness_share
from onionmesh.runtime.relay import dir_source
from onionmesh.runtime.relay.node import RelayConfig, RelayNode
from tests.helpers.mesh import eventually

EPOCH = 1.5


def _config(tmp_path: Path, i: int, bootstrap: tuple[tuple[str, int], ...]) -> RelayConfig:
    return RelayConfig(
        listen_host=f"127.{i + 1}.0.1", listen_port=0, data_dir=tmp_path / f"relay{i}",
        bootstrap=bootstrap, dir_epoch=EPOCH,
    )  # fmt: skip


def _running(node: RelayNode, fp: bytes) -> bool | None:
    assert node.dir_source is not None
    state = node.dir_source.newest()
    entry = None if state is None else state.entries.get(fp)
    return None if entry is None else entry.running


async def test_sources_agree_and_follow_a_relay_that_leaves_and_returns(tmp_path: Path) -> None:
    nodes: list[RelayNode] = []
    try:
        for i in range(6):
            node = RelayNode(_config(tmp_path, i, (nodes[0].dht.address,) if nodes else ()))
            await node.start()
            nodes.append(node)
        fps = [fp_bytes(n.descriptor) for n in nodes]  # type: ignore[arg-type]

        def agree(members: list[RelayNode], running: set[bytes]) -> bool:
            states = [m.dir_source.newest() for m in members]  # type: ignore[union-attr]
            if any(s is None for s in states):
                return False
            digests = {s.digest() for s in states}  # type: ignore[union-attr]
            listed = {fp for fp, e in states[0].entries.items() if e.running}  # type: ignore[union-attr]
            return len(digests) == 1 and listed == running

        assert await eventually(lambda: agree(nodes, set(fps)), 20)
        # The signed documents verify and say the same: a client could cross-check them.
        source = nodes[2].dir_source
        assert source is not None
        head = dl.decode_doc(source.doc(dl.Kind.HEAD))  # type: ignore[arg-type]
        snapshot = dl.state_from_snapshot(dl.decode_doc(source.doc(dl.Kind.SNAPSHOT)), time.time())  # type: ignore[arg-type]
        assert head.state_digest == snapshot.digest() and len(snapshot) == 6

        # Relay 5 stops: within a few epochs no source lists it RUNNING (kept without the flag).
        gone = nodes.pop()
        await gone.stop()
        assert await eventually(lambda: agree(nodes, set(fps[:5])), 20)
        assert all(_running(n, fps[5]) is False for n in nodes)
        # It returns (same keys, same address): RUNNING again everywhere, nothing depends on routing tables.
        back = RelayNode(_config(tmp_path, 5, (nodes[0].dht.address,)))
        await back.start()
        nodes.append(back)
        assert await eventually(lambda: agree(nodes, set(fps)), 20)
    finally:
        for node in nodes:
            await node.stop()


async def test_a_new_source_lists_the_relays_that_joined_before_it_was_first_asked(tmp_path: Path) -> None:
    """A source cuts the epoch it starts in when it is first asked, not at its start, and fetches
    the heartbeat of each relay that proves its ID to it at once: on a network that is forming,
    its first state lists every relay that joined meanwhile RUNNING, not only itself (issue 23: a
    fresh client's first view from directory guards as soon as the crawl's)."""
    long_epoch = 600.0  # no epoch boundary, liveness round or catch-up crawl comes into it
    nodes: list[RelayNode] = []
    try:
        for i in range(5):
            config = _config(tmp_path, i, (nodes[0].dht.address,) if nodes else ())
            config.dir_epoch = long_epoch
            node = RelayNode(config)
            await node.start()
            nodes.append(node)
        source = nodes[0].dir_source
        assert source is not None
        fps = {fp_bytes(n.descriptor) for n in nodes}  # type: ignore[arg-type]
        # The four that joined proved their IDs to relay 0 (its DHT bootstrap contact): it fetched
        # their heartbeats then, each from the relay itself.
        assert await eventually(lambda: source.stats["beats_on_proof"] >= 4, 10), source.stats
        epoch = source.epoch()
        snapshot = source.doc(dl.Kind.SNAPSHOT)  # as a client's DIR_GET asks
        assert snapshot is not None
        state = dl.state_from_snapshot(dl.decode_doc(snapshot), time.time())
        assert state.epoch == epoch
        assert {fp for fp, e in state.entries.items() if e.running} == fps
        # One state per epoch: asking again serves the same signed state, nothing is re-cut.
        head = dl.decode_doc(source.doc(dl.Kind.HEAD))  # type: ignore[arg-type]
        assert head.state_digest == state.digest() and source.stats["cuts"] == 1
    finally:
        for node in nodes:
            await node.stop()


async def test_relays_outside_a_sources_liveness_share_stay_running_epoch_after_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each source checks only its liveness share itself (24 relays in a real network; one here,
    so that 6 relays stand for a network past 25); the others' heartbeats of each epoch reach it by
    gossip, also where its state and its peer's agree.  Before, they travelled only in buckets whose
    hashes differed, so a relay outside the share dropped out of every other state of a source
    (the 100- and 200-relay bench never saw relay 0 list every relay RUNNING)."""
    monkeypatch.setattr(dir_source, "liveness_share", lambda own, relays: liveness_share(own, relays, 1))
    nodes: list[RelayNode] = []
    try:
        for i in range(6):
            config = _config(tmp_path, i, (nodes[0].dht.address,) if nodes else ())
            config.dir_epoch = 3.0  # 12 gossip rounds an epoch even on a loaded machine
            node = RelayNode(config)
            await node.start()
            nodes.append(node)
        fps = {fp_bytes(n.descriptor) for n in nodes}  # type: ignore[arg-type]
        sources = [n.dir_source for n in nodes]

        def whole(epoch: int) -> bool:
            states = [s.states.get(epoch) for s in sources]  # type: ignore[union-attr]
            return all(
                x is not None and {fp for fp, e in x.entries.items() if e.running} == fps for x in states
            )

        # The network has formed once every source lists all six in one epoch; from then on, they
        # must stay listed in every epoch's state of every source.
        assert await eventually(
            lambda: any(whole(e) for s in sources for e in s.states),  # type: ignore[union-attr]
            40,
        )
        first = min(e for s in sources for e in s.states if whole(e)) + 1  # type: ignore[union-attr]
        last = first + 3
        assert await eventually(lambda: all(last in s.states for s in sources), 30)  # type: ignore[union-attr]
        missing = {
            (i, e): len(fps - {fp for fp, x in s.states[e].entries.items() if x.running})  # type: ignore[union-attr]
            for i, s in enumerate(sources)
            for e in range(first, last + 1)
            if e in s.states  # type: ignore[union-attr]
        }
        # Epochs are cut as of their cut-off: a loop stalled past a whole epoch may skip one.
        assert len(missing) >= 3 * len(sources)
        assert not {k: v for k, v in missing.items() if v}, missing
        assert sum(s.stats["gossip_beats"] for s in sources) > 0  # type: ignore[union-attr]
    finally:
        for node in nodes:
            await node.stop()
