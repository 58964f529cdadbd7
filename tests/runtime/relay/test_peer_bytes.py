"""Per-peer byte counts on a real mesh (docs/directory-design.md §3.4, §6): what relays will report."""

from __future__ import annotations

import time

from onionmesh.directory.measurement import decode_report, kbytes
from tests.helpers.mesh import Mesh, curl_via_socks


async def test_relays_count_relay_cells_per_proven_peer_and_sign_the_day(mesh: Mesh) -> None:
    size = 1_000_000
    code, out, _ = await curl_via_socks(mesh, size)
    assert code == 0 and out == mesh.origin.blob(size)
    today = int(time.time() // 86_400)
    fps = {bytes.fromhex(r.fingerprint) for r in mesh.relays}
    per_relay = {r.fingerprint: r.switch.peer_bytes.day_counts(today) for r in mesh.relays}
    counted = sum(sum(c.values()) for c in per_relay.values())
    # The blob crosses two relay-to-relay links (guard-middle, middle-exit), each counted by the
    # relay that opened it; cells are 4096 bytes carrying at most 4074 of payload.
    assert counted >= 2 * size
    for fp, counts in per_relay.items():
        assert set(counts) <= fps - {bytes.fromhex(fp)}  # only proven relay peers, never itself
    # The next day, each relay signs what it counted: canonical, verifiable, in kB.
    for relay in mesh.relays:
        pb = relay.switch.peer_bytes
        now = time.time()
        pb.clock = lambda now=now: now + 86_400
        report = decode_report(pb.report(relay.keys.identity).encode())
        assert report.day == today
        assert dict(report.peers) == {
            fp: kbytes(n) for fp, n in per_relay[relay.fingerprint].items() if n >= 1000
        }
