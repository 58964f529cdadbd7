"""A listener's bug (control API, status page) is logged, rate-limited, and counted; it never stops
the circuit manager and is never silently swallowed."""

from __future__ import annotations

from structlog.testing import capture_logs

from onionmesh.rng import SeededRng
from onionmesh.runtime.client.circuit_manager import CircuitMgr


def test_a_failing_listener_is_counted_and_logged_once_per_interval() -> None:
    mgr = CircuitMgr(lambda: [], SeededRng(1))
    seen: list[str] = []

    def broken(what: str, handle: object) -> None:
        raise KeyError("bug")

    def broken_stream(what: str, handle: object, stream_id: int) -> None:
        raise ValueError("bug")

    mgr.listeners += [broken, lambda what, handle: seen.append(what)]
    mgr.stream_listeners.append(broken_stream)
    with capture_logs() as logs:
        for _ in range(3):
            mgr._emit("built", object())  # type: ignore[arg-type]
        mgr._emit_stream("attached", object(), 1)  # type: ignore[arg-type]
    assert seen == ["built"] * 3, "the listeners after the broken one still run"
    assert mgr.listener_errors == 4
    warnings = [e for e in logs if e["event"] == "circuit event listener failed"]
    assert len(warnings) == 1 and warnings[0]["error"] == "KeyError" and warnings[0]["log_level"] == "warning"
