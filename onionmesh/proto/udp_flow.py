"""UDP flows, sans-I/O: a bounded drop-on-full datagram queue, a per-circuit datagram rate, and the
table of open flows with their idle timeout.  Plain classes fed bytes and times (seconds).

Why drop instead of wait: UDP promises nothing, and an application that sends faster than its
circuit carries must lose datagrams, not make the proxy or the exit grow a queue (memory stays
bounded by `DatagramQueue`'s caps whatever a sender does).  Both ends use the queue for datagrams
that wait for the circuit window; the exit uses the rate to bound what one circuit can make it
send (amplification) and the table's flow cap to bound its sockets.

Not in this module: sockets, circuits, SOCKS.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

QUEUE_DATAGRAMS = 256  # per flow: ~300 KB of 1,200-byte datagrams at most
QUEUE_BYTES = 512 * 1024
# Over all flows of one circuit (at the exit) or one association (at the proxy): what one user
# can make either hold, whatever the number of flows.
SHARED_QUEUE_BYTES = 1024 * 1024
IDLE_TIMEOUT = 120.0  # seconds without a datagram either way before a flow is closed (NAT-like)
MAX_FLOWS = 64  # UDP flows per circuit (association) at once


class DatagramQueue:
    """FIFO of datagrams capped in count and bytes; a push past either cap drops the newcomer."""

    __slots__ = ("_items", "bytes", "dropped", "max_bytes", "max_items")

    def __init__(self, max_items: int = QUEUE_DATAGRAMS, max_bytes: int = QUEUE_BYTES) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("queue caps must be at least 1")
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: deque[bytes] = deque()
        self.bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, datagram: bytes) -> bool:
        """Queue it; False (and counted in `dropped`) when the queue is full."""
        if len(self._items) >= self.max_items or self.bytes + len(datagram) > self.max_bytes:
            self.dropped += 1
            return False
        self._items.append(datagram)
        self.bytes += len(datagram)
        return True

    def peek(self) -> bytes:
        return self._items[0]

    def pop(self) -> bytes:
        datagram = self._items.popleft()
        self.bytes -= len(datagram)
        return datagram

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


class DatagramRate:
    """A token bucket in datagrams: `rate` per second, `burst` at most; `allow(now)` spends one."""

    __slots__ = ("_last", "_tokens", "burst", "dropped", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._last = now
        self.dropped = 0

    def allow(self, now: float) -> bool:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.dropped += 1
        return False


@dataclass
class Flow:
    """One connected UDP flow: its stream id on the circuit, its destination, its last activity."""

    stream_id: int
    key: Hashable
    last_active: float
    queue: DatagramQueue = field(default_factory=DatagramQueue)
    open: bool = False  # CONNECTED_UDP seen (client) / socket connected (exit)


class FlowTable:
    """Open flows by key (the client: its SOCKS destination; the exit: the stream id) and by stream id."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, max_flows: int = MAX_FLOWS) -> None:
        if idle_timeout <= 0 or max_flows < 1:
            raise ValueError("idle timeout must be positive and max_flows at least 1")
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        self.by_key: dict[Hashable, Flow] = {}
        self.by_stream: dict[int, Flow] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def full(self) -> bool:
        return len(self.by_key) >= self.max_flows

    def add(self, key: Hashable, stream_id: int, now: float) -> Flow:
        if key in self.by_key or stream_id in self.by_stream:
            raise ValueError("flow already in the table")
        if self.full():
            raise ValueError("flow table is full")
        flow = Flow(stream_id, key, now)
        self.by_key[key] = flow
        self.by_stream[stream_id] = flow
        return flow

    def get(self, key: Hashable) -> Flow | None:
        return self.by_key.get(key)

    def by_id(self, stream_id: int) -> Flow | None:
        return self.by_stream.get(stream_id)

    def remove(self, stream_id: int) -> Flow | None:
        flow = self.by_stream.pop(stream_id, None)
        if flow is not None:
            self.by_key.pop(flow.key, None)
            flow.queue.clear()
        return flow

    def expired(self, now: float) -> list[Flow]:
        """Remove and return the flows idle for `idle_timeout` or longer."""
        old = [f for f in self.by_key.values() if now - f.last_active >= self.idle_timeout]
        for flow in old:
            self.remove(flow.stream_id)
        return old

    def flows(self) -> list[Flow]:
        return list(self.by_key.values())
