"""An asyncio event loop whose clock is virtual: when nothing is ready it jumps to the next timer.

Why: the DHT code is asyncio (timeouts via `call_later`, `asyncio.sleep`, `wait_for`); running it
unchanged over simulated hours needs a loop where waiting costs nothing.  The loop is the
standard `SelectorEventLoop` with a selector that never has I/O ready and, asked to wait for
`timeout` seconds, advances the virtual clock by exactly that much instead of sleeping.  All
I/O in a simulation goes through `memnet`, which schedules deliveries as timers.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Deadlock(RuntimeError):
    """The loop would wait forever: nothing ready and no timer scheduled."""


class _VirtualSelector(selectors.BaseSelector):
    """Holds registrations (the loop's self-pipe) but never reports them; waiting moves the clock."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        self._advance = advance
        self._map: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(
            fileobj, fileobj if isinstance(fileobj, int) else id(fileobj), events, data
        )
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("virtual loop: no callback ready and no timer scheduled")
        if timeout > 0:
            self._advance(timeout)
        return []

    def get_map(self) -> Any:
        return self._map

    def close(self) -> None:
        self._map.clear()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """`time()` is virtual seconds since `start`; sleeping and timeouts take no wall time."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        super().__init__(_VirtualSelector(self._advance))

    def _advance(self, seconds: float) -> None:
        self._now += seconds

    def time(self) -> float:
        return self._now


def run(main: Callable[[], Awaitable[T]], start: float = 0.0) -> tuple[T, float]:
    """Run `main()` on a fresh virtual loop; its result and the virtual seconds it took."""
    loop = VirtualClockLoop(start)
    try:
        asyncio.set_event_loop(loop)
        result = loop.run_until_complete(main())
        return result, loop.time() - start
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:  # what the studies leave running (proofs in flight): end it quietly
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()
