"""The two pieces every DHT simulation stands on: virtual time and the in-memory network."""

from __future__ import annotations

import asyncio

import pytest

from simulations import vclock
from simulations.memnet import LinkModel, MemoryNetwork


def test_sleeping_an_hour_takes_no_wall_time() -> None:
    """The hour passes as one jump of the virtual clock, the selector's only wait: nothing sleeps."""
    jumps: list[float] = []

    class Recording(vclock.VirtualClockLoop):
        def _advance(self, seconds: float) -> None:
            jumps.append(seconds)
            super()._advance(seconds)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    loop = Recording()
    try:
        slept = loop.run_until_complete(main())
    finally:
        loop.close()
    assert slept == pytest.approx(3600)
    assert jumps == [pytest.approx(3600)]
    assert vclock.run(main)[1] == pytest.approx(3600)  # and run() reports it as virtual time


def test_timers_fire_in_order_and_timeouts_expire() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        loop.call_later(5, fired.append, "b")
        loop.call_later(1, fired.append, "a")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(100), 10)
        fired.append(f"t={loop.time():.0f}")
        return fired

    fired, _ = vclock.run(main)
    assert fired == ["a", "b", "t=10"]


def test_waiting_on_nothing_is_a_deadlock_not_a_hang() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(vclock.Deadlock):
        vclock.run(main)


class _Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[str, int], float]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((data, addr, asyncio.get_running_loop().time()))


def test_datagrams_arrive_after_latency_and_vanish_when_offline() -> None:
    net = MemoryNetwork(link=LinkModel(base=0.01, median=0.02, sigma=0.0))
    a, b = _Recorder(), _Recorder()

    async def main() -> None:
        net.attach(("10.0.0.1", 1), a)
        net.attach(("10.0.0.2", 1), b)
        assert a.transport is not None and a.transport.get_extra_info("sockname") == ("10.0.0.1", 1)
        a.transport.sendto(b"hello", ("10.0.0.2", 1))
        await asyncio.sleep(1)
        net.set_online(("10.0.0.2", 1), False)
        a.transport.sendto(b"lost", ("10.0.0.2", 1))
        a.transport.sendto(b"nobody", ("10.9.9.9", 1))
        await asyncio.sleep(1)

    vclock.run(main)
    assert [(d, addr) for d, addr, _ in b.got] == [(b"hello", ("10.0.0.1", 1))]
    assert b.got[0][2] == pytest.approx(0.03)
    assert net.sent[("10.0.0.1", 1)] == 3 and net.delivered == 1 and net.dropped == 2
