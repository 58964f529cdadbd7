"""The log rate limiter (runtime.loglimit), with an injected clock: Tor's "N similar messages suppressed"."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import structlog

from onionmesh.runtime import safelog
from onionmesh.runtime.loglimit import LimitedLogger


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    saved = structlog.get_config()
    stream = io.StringIO()
    safelog.configure("info", stream=stream)
    yield stream
    structlog.configure(**saved)


def test_n_identical_warnings_give_one_line_and_one_count(out: io.StringIO) -> None:
    now = [100.0]
    log = LimitedLogger(safelog.get_logger("t"), interval=60.0, clock=lambda: now[0])
    for i in range(101):
        now[0] += 0.1
        log.warning("peer sent junk", detail=f"peer {i}")  # fields differ: still the same line
    assert len(out.getvalue().splitlines()) == 1
    now[0] += 60.0
    log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "peer sent junk" in lines[0] and "peer 0" in lines[0]
    assert "[warning" in lines[1] and "100 similar messages suppressed" in lines[1]
    log.flush()  # said once
    assert len(out.getvalue().splitlines()) == 2


def test_the_next_window_writes_again_and_other_lines_are_independent(out: io.StringIO) -> None:
    now = [0.0]
    log = LimitedLogger(safelog.get_logger("t"), interval=10.0, clock=lambda: now[0])
    for _ in range(5):
        log.info("a")
        log.warning("a")  # another level: another line
        log.info("b")
    assert len(out.getvalue().splitlines()) == 3
    now[0] = 10.0
    log.info("a")  # the window ended: its summaries first, then this line
    lines = out.getvalue().splitlines()[3:]
    assert sum("4 similar messages suppressed" in line for line in lines) == 3
    assert lines[-1].rstrip().endswith("a")
    now[0] = 25.0
    log.flush()  # "a" was written once in its new window and nothing held back: no summary
    assert len(out.getvalue().splitlines()) == 7


def test_lines_below_the_level_are_limited_silently(out: io.StringIO) -> None:
    now = [0.0]
    log = LimitedLogger(safelog.get_logger("t"), interval=1.0, clock=lambda: now[0])
    for _ in range(10):
        log.debug("quiet")
    now[0] = 2.0
    log.flush()
    assert out.getvalue() == ""


def test_every_peer_triggered_logger_is_the_one_limiter() -> None:
    """SOCKS, the accept loop, the exit's caps and the DHT write their per-peer lines through loglimit
    (no second or third limiter with its own rules)."""
    from onionmesh.runtime.client import dht_over_circuits as dht_circuit
    from onionmesh.runtime.client import directory as dht_directory
    from onionmesh.runtime.client import socks_requests, socks_server
    from onionmesh.runtime.dht import node as dht
    from onionmesh.runtime.relay import exit_streams
    from onionmesh.runtime.transport import listeners

    for logger in (
        socks_server.peer_log, socks_requests.peer_log, listeners.log, exit_streams.peer_log,
        dht.peer_log, dht_circuit.log, dht_directory.log,
    ):  # fmt: skip
        assert isinstance(logger, LimitedLogger)
    assert not hasattr(listeners, "WarnEvery")
    assert not hasattr(exit_streams, "CAP_WARN_INTERVAL")
