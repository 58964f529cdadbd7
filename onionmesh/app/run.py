"""Run one node (relay or proxy) until SIGINT/SIGTERM, then stop it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def event_loop_name() -> str:
    """uvloop when it is installed (the `fast` extra), unless ONIONMESH_EVENT_LOOP=asyncio."""
    if os.environ.get("ONIONMESH_EVENT_LOOP", "").lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop where available: the same code, a faster event loop."""
    if event_loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


async def run_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    *,
    hangup: bool = False,
) -> None:
    """Start, wait for SIGINT or SIGTERM (and SIGHUP if `hangup`), stop.  A process started with
    ONIONMESH_PARENT_PID (a testnet's relay) also stops when that parent is gone."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hangup else [])
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    watchdog = None
    parent = os.environ.get(PARENT_ENV, "")
    if parent.isdigit():
        watchdog = asyncio.create_task(_watch_parent(int(parent), stopping), name="parent-watchdog")
    try:
        await start()
        await stopping.wait()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await stop()


PARENT_ENV = "ONIONMESH_PARENT_PID"
PARENT_CHECK = 1.0


async def _watch_parent(parent: int, stopping: asyncio.Event) -> None:
    """Fallback where PR_SET_PDEATHSIG does not exist: once the parent is gone we are reparented."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK)
    stopping.set()
