"""Churn: nodes alternate between online sessions and offline gaps drawn from Weibull laws.

Why Weibull: measurement studies of deployed DHTs describe session lengths as heavy-tailed
(many short sessions, a few very long ones), which an exponential law misses; the shape and
medians here are assumptions, set on the command line, not fitted to a data set.  A node that
goes offline stops answering (its datagrams vanish); one that comes back keeps its routing table
and store but is not re-announced, so it is found only by those that still list it.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass

from simulations.memnet import Address, MemoryNetwork


@dataclass
class SessionModel:
    shape: float = 0.6
    median_session: float = 2 * 3600.0
    median_gap: float = 2 * 3600.0

    def _scale(self, median: float) -> float:
        return median / math.log(2) ** (1 / self.shape)

    def session(self, rng: random.Random) -> float:
        return rng.weibullvariate(self._scale(self.median_session), self.shape)

    def gap(self, rng: random.Random) -> float:
        return rng.weibullvariate(self._scale(self.median_gap), self.shape)

    def online_fraction(self) -> float:
        on, off = self._scale(self.median_session), self._scale(self.median_gap)
        return on / (on + off)  # means scale with the scale parameter at equal shapes


class Churn:
    """Drives `set_online` for the given addresses on the running loop, from a steady state."""

    def __init__(self, net: MemoryNetwork, model: SessionModel, seed: int) -> None:
        self.net, self.model, self.rng = net, model, random.Random(seed)
        self.handles: list[asyncio.TimerHandle] = []
        self.leaves = 0
        self.joins = 0

    def start(self, addresses: list[Address]) -> None:
        loop = asyncio.get_running_loop()
        p_on = self.model.online_fraction()
        for addr in addresses:
            online = self.rng.random() < p_on
            self.net.set_online(addr, online)
            # Residual time of the current state: a uniform point in a fresh draw (approximation).
            draw = self.model.session(self.rng) if online else self.model.gap(self.rng)
            self.handles.append(loop.call_later(draw * self.rng.random(), self._flip, addr))

    def _flip(self, addr: Address) -> None:
        online = addr in self.net.offline
        self.net.set_online(addr, online)
        if online:
            self.joins += 1
        else:
            self.leaves += 1
        draw = self.model.session(self.rng) if online else self.model.gap(self.rng)
        self.handles.append(asyncio.get_running_loop().call_later(draw, self._flip, addr))

    def stop(self) -> None:
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()
