"""Run one node (relay or proxy) until SIGINT/SIGTERM, then stop it cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


async def run_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
        await stopping.wait()
    finally:
        await stop()
