"""The build timeout as designed (directory.cbt, runtime.client.circuit_build), on a virtual clock.

Builds whose length is drawn from a Pareto distribution run through CircuitMgr.build over a fake
network (each hop answers after its share of the drawn time, on the virtual clock of
simulations.vclock: no wall time, no timed assert).  A build past the learned timeout fails for
its caller but keeps running until the close timeout and is recorded with its real duration;
only builds still running at the close timeout are recorded as abandoned; and the learned
timeout stays at the distribution's 80th percentile instead of ratcheting down.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from onionmesh.directory.cbt import BuildTimeLearner
from onionmesh.rng import SeededRng
from onionmesh.runtime.client import circuit_manager
from onionmesh.runtime.client.circuit_manager import CircuitMgr
from onionmesh.runtime.client.path_policy import PathPolicy
from simulations import vclock

HOPS = 3


def pareto(n: int, xm: float, alpha: float, seed: int) -> list[float]:
    rng = SeededRng(seed)
    return [xm / (1 - rng.randbelow(2**53) / 2**53) ** (1 / alpha) for _ in range(n)]


class FakeSlot:
    attached = True

    def wake(self) -> None:
        pass

    def detach(self, reason: object = None) -> None:
        self.attached = False


class FakeLink:
    def __init__(self) -> None:
        self.next_id = 0

    def allocate_circ_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def attach(self, circ_id: int, circuit: object, outbox: object) -> FakeSlot:
        return FakeSlot()


class FakeNetwork:
    """Stands in for ClientCircuit: each CREATE/EXTEND is answered after hop_delay(circuit)."""

    def __init__(self, mgr: CircuitMgr, durations: list[float]) -> None:
        self.mgr, self.durations, self.started = mgr, iter(durations), 0
        network = self

        class FakeCircuit:
            def __init__(self, circ_id: int, rng: Any, clock: Any) -> None:
                self.circ_id, self.hops, self.streams, self.events = circ_id, [], {}, []
                self.bytes_in = self.bytes_out = 0
                self.on_output: Any = None
                self.closed = False
                self.total = next(network.durations)
                network.started += 1

            def cells_to_send(self) -> list[Any]:
                return []

            def _answer_later(self) -> None:
                asyncio.get_running_loop().call_later(self.total / HOPS, self._answered)

            def _answered(self) -> None:
                if self.closed:
                    return
                self.hops.append(object())
                for handle in list(network.mgr.circuits.values()):
                    if handle.circ is self:
                        handle.extended.set()

            create = extend = lambda self, *args: self._answer_later()

            def mark_closed(self) -> None:
                self.closed = True

            def take_events(self) -> list[Any]:
                return []

        self.circuit_class = FakeCircuit


def relay(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        fingerprint=name * 40,
        identity_pk=bytes(32),
        onion_pk=bytes(32),
        link_addresses=[],
        protocols="circ=1",
    )


def run_builds(monkeypatch: pytest.MonkeyPatch, durations: list[float]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        rng = SeededRng(1)
        policy = PathPolicy(None, rng, use_guards=False)
        policy.cbt = BuildTimeLearner(min_circs=20, initial_timeout=30.0, min_timeout=1.0, close_floor=10.0)
        mgr = CircuitMgr(lambda: [], rng, policy=policy)
        mgr.clock = loop.time
        network = FakeNetwork(mgr, durations)
        monkeypatch.setattr(circuit_manager, "ClientCircuit", network.circuit_class)
        link = FakeLink()

        async def link_to(desc: object) -> FakeLink:
            return link

        mgr._link_to = link_to  # type: ignore[method-assign,assignment]
        path = [relay("A"), relay("B"), relay("C")]
        out: dict[str, Any] = {"caller_timeouts": 0, "closes": [], "timeouts": []}
        for _ in durations:
            timeout, close = policy.cbt.timeout(), policy.cbt.close_timeout()
            out["timeouts"].append(timeout)
            out["closes"].append(close)
            try:
                await mgr.build(path=path)  # type: ignore[arg-type]
            except TimeoutError:
                out["caller_timeouts"] += 1
        await asyncio.sleep(max(out["closes"]) + 1)  # every measurement ends by then
        out["history"] = policy.cbt.history
        out["final_timeout"] = policy.cbt.timeout()
        out["open"] = [h.purpose for h in mgr.circuits.values()]
        return out

    result, _ = vclock.run(main)
    return result


def test_slow_builds_are_measured_and_recorded_until_the_close_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    durations = pareto(300, xm=2.0, alpha=2.0, seed=5)
    out = run_builds(monkeypatch, durations)
    history = out["history"]
    assert len(history) == len(durations)
    # The callers saw timeouts (the timeout is learned at the 80th percentile) ...
    assert out["caller_timeouts"] > 30
    # ... yet only the builds still running at their close timeout are recorded as abandoned,
    # and every other build is recorded with its real duration, the slow ones included.
    # (The history is in order of completion: a measured build ends after later fast ones.)
    kept = sorted(d for d, c in zip(durations, out["closes"], strict=True) if d <= c)
    recorded = sorted(x for x in history if x is not None)
    assert history.count(None) == len(durations) - len(kept) > 0
    assert recorded == pytest.approx(kept, abs=1e-6)
    assert sum(1 for x in recorded if x > min(out["timeouts"])) > 30  # slow ones among them
    # A build kept for measurement never stays around to carry streams.
    assert "measure_timeout" not in out["open"]


def test_learned_timeout_does_not_ratchet_down(monkeypatch: pytest.MonkeyPatch) -> None:
    durations = pareto(400, xm=2.0, alpha=2.0, seed=7)
    out = run_builds(monkeypatch, durations)
    true_q80 = 2.0 / 0.2**0.5  # F(0.8) of the distribution: 4.47 s
    later = out["timeouts"][100:]
    # Censoring at the timeout would make each timeout at most the previous one; measured
    # builds keep it at the 80th percentile for the whole run.
    assert min(later) > 0.8 * true_q80
    assert out["final_timeout"] == pytest.approx(true_q80, rel=0.2)
