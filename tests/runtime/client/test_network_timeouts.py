"""Every client timeout that waits for the network follows the measured round trip (issue 20
item 1): simulated RTTs, no clock."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from onionmesh.runtime.client.circuit_handle import STREAM_TIMEOUT, STREAM_TIMEOUT_MAX, stream_timeout
from onionmesh.runtime.client.dht_over_circuits import RPC_TIMEOUT, rpc_timeout
from onionmesh.runtime.dht.node import CRAWL_DEADLINE, crawl_deadline


def test_network_timeouts_follow_the_measured_round_trip() -> None:
    """Each timeout that waits for the network (issue 20 item 1), at a LAN's RTT and a satellite's."""

    def circuit(ewma: float, hint: float) -> object:
        return SimpleNamespace(circ=SimpleNamespace(flow=SimpleNamespace(ewma_rtt=ewma), rtt_hint=hint))

    # A short path keeps the old constants (they were chosen for it) ...
    assert stream_timeout(circuit(0.0, 0.005)) == STREAM_TIMEOUT  # type: ignore[arg-type]
    assert rpc_timeout(0.0) == RPC_TIMEOUT and rpc_timeout(0.005) == pytest.approx(RPC_TIMEOUT, abs=0.02)
    assert crawl_deadline(0.5) == CRAWL_DEADLINE
    # ... a 600 ms-per-link circuit (3.6 s round trip with queues) waits longer: no cliff ...
    assert stream_timeout(circuit(0.0, 3.6)) == pytest.approx(10 + 4 * 3.6)  # type: ignore[arg-type]
    assert stream_timeout(circuit(4.0, 3.6)) == pytest.approx(10 + 4 * 4.0)  # type: ignore[arg-type]
    assert rpc_timeout(3.6) == pytest.approx(5.0 + 2 * 3.6)
    # ... and every one has a ceiling.
    assert stream_timeout(circuit(0.0, 1e6)) == STREAM_TIMEOUT_MAX  # type: ignore[arg-type]
    assert rpc_timeout(1e6) == 30.0
