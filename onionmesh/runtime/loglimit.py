"""Repeated log lines, rate-limited and counted (Tor's `ratelim_t`: "N similar messages suppressed").

A line written for each peer event lets peers decide how much a node writes to its disk: a flood of
junk links wrote 83,914 lines (11 MB) in a minute.  A `LimitedLogger` wraps a structlog logger
(safelog.get_logger) and writes each event text, per level, at most `burst` times per `interval`;
the rest are counted, and when the interval is over one line says how many were held back.  The
fields of a line (a peer's error detail, say) do not make it a different line: "similar" is the
same call site's event text.  `LineLimiter` is the policy alone, fed the time (sans-I/O).

Not in this module: what is logged, or scrubbing (safelog).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_INTERVAL = 60.0
MAX_KEYS = 1024  # distinct lines remembered; call sites are few, this only bounds a misuse


@dataclass
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0


class LineLimiter:
    """Which lines to write: at most `burst` per key per `interval`, the others counted."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, burst: int = 1) -> None:
        self.interval, self.burst = interval, burst
        self._windows: dict[tuple[str, str], _Window] = {}

    def admit(self, key: tuple[str, str], now: float) -> bool:
        """Write this line now?  (Call `expired` first, so that an ended window is reported.)"""
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= MAX_KEYS:
                return False
            window = self._windows[key] = _Window(now)
        if window.written < self.burst:
            window.written += 1
            return True
        window.suppressed += 1
        return False

    def expired(self, now: float) -> list[tuple[tuple[str, str], int, float]]:
        """Windows that ended: (key, lines suppressed, seconds) for each that held lines back."""
        ended = [k for k, w in self._windows.items() if now - w.start >= self.interval]
        out = []
        for key in ended:
            window = self._windows.pop(key)
            if window.suppressed:
                out.append((key, window.suppressed, now - window.start))
        return out

    def next_end(self) -> float | None:
        """When the earliest window that holds suppressed lines ends."""
        ends = [w.start + self.interval for w in self._windows.values() if w.suppressed]
        return min(ends) if ends else None


class LimitedLogger:
    """A structlog logger whose lines are rate-limited by event text and level (see module doc).

    The summary of a window is written when the next line passes through this logger after the
    window ended, or by `flush()`, which a running event loop calls by itself when the window ends.
    """

    def __init__(
        self,
        logger: Any,
        interval: float = DEFAULT_INTERVAL,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._limiter = LineLimiter(interval, burst)
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def debug(self, event: str, **kw: Any) -> None:
        self._log("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log("error", event, kw)

    def _log(self, level: str, event: str, kw: dict[str, Any]) -> None:
        now = self._clock()
        self._summarize(now)
        if self._limiter.admit((level, event), now):
            getattr(self._logger, level)(event, **kw)
        else:
            self._arm(now)

    def flush(self) -> None:
        """Write the summary line of every window that has ended."""
        self._timer = None
        self._summarize(self._clock())
        self._arm(self._clock())

    def _summarize(self, now: float) -> None:
        for (level, event), n, seconds in self._limiter.expired(now):
            getattr(self._logger, level)(
                f"{n} similar messages suppressed", like=event, seconds=round(seconds)
            )

    def _arm(self, now: float) -> None:
        """Have the event loop (if one runs) flush when the next window with suppressed lines ends."""
        end = self._limiter.next_end()
        if end is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None and self._timer_loop is loop and not self._timer.cancelled():
            return
        # A little late rather than early: a timer that fired before the window's end would re-arm.
        self._timer, self._timer_loop = loop.call_later(max(0.0, end - now) + 0.05, self.flush), loop


def limited(logger: Any, interval: float = DEFAULT_INTERVAL, burst: int = 1) -> LimitedLogger:
    """Wrap a logger for per-peer lines: `log = limited(get_logger("onionmesh.link"))`."""
    return LimitedLogger(logger, interval, burst)
