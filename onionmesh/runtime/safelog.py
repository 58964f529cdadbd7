"""Logging that is safe by construction (after Tor's SafeLogging and Arti's safelog).

Everything logs through structlog.  Values that could identify a user or a destination are
wrapped in `Sensitive(...)`; the `scrub` processor replaces them with "[scrubbed]" unless safe
logging was turned off for debugging (`--unsafe-logging`).  Keys and payloads are never logged.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SAFE = True


class Sensitive:
    """A value that is printed only when safe logging is off."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return str(self.value) if not _SAFE else "[scrubbed]"

    __repr__ = __str__


def scrub(_logger: object, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, Sensitive):
            event[key] = str(value)
    return event


def configure(
    level: str = "info", *, safe: bool = True, stream: Any = None, json_format: bool = False
) -> None:
    """Set up structlog once per process: readable lines (or JSON objects) on stderr, scrubbed unless
    `safe` is off."""
    global _SAFE
    _SAFE = safe
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=True),
            scrub,
            structlog.processors.JSONRenderer()
            if json_format
            else structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
