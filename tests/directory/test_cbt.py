"""Tests for onionmesh.directory.cbt: Pareto fit, timeouts, network-change reset, state file."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmesh.directory.cbt import MAX_BUILD_SECONDS, MAX_STATE_CHARS, BuildTimeLearner
from onionmesh.rng import SeededRng


def pareto(n: int, xm: float, alpha: float, seed: int = 1) -> list[float]:
    rng = SeededRng(seed)
    return [xm / (1 - rng.randbelow(2**53) / 2**53) ** (1 / alpha) for _ in range(n)]


def learned(samples: list[float], **kw: float) -> BuildTimeLearner:
    learner = BuildTimeLearner(**kw)  # type: ignore[arg-type]
    for x in samples:
        learner.add(x)
    return learner


def test_initial_timeout_until_min_circs() -> None:
    learner = BuildTimeLearner(min_circs=20)
    for x in pareto(19, 0.5, 3.0):
        learner.add(x)
        assert learner.timeout() == 60.0 and learner.close_timeout() == 60.0
        assert learner.fit() is None
    learner.add(0.6)
    assert learner.fit() is not None and learner.timeout() < 60.0


@pytest.mark.parametrize(("xm", "alpha"), [(1.0, 2.0), (0.3, 1.5), (2.0, 4.0), (0.4, 3.0), (0.1, 2.0)])
def test_fit_recovers_pareto_parameters_roughly(xm: float, alpha: float) -> None:
    errors = []
    for seed in range(1, 11):
        samples = pareto(1000, xm, alpha, seed)
        learner = learned(samples, min_timeout=0.01)
        fit = learner.fit()
        assert fit is not None
        xm_hat, alpha_hat = fit
        # Xm is the midpoint of the fullest 10 ms bin: near xm, but noise may pick a later bin,
        # and that biases alpha upwards (Tor accepts this: only the tail's CDF matters) ...
        assert xm <= xm_hat <= max(1.1 * xm, xm + 0.05)  # within 10% or five bins
        errors.append(abs(alpha_hat - alpha) / alpha)
        # ... while the timeout still lands on the 80th percentile of the builds.
        assert abs(sum(x <= learner.timeout() for x in samples) / len(samples) - 0.8) < 0.04
    assert statistics.median(errors) < 0.12 and max(errors) < 0.4


def test_timeouts_sit_at_their_quantiles() -> None:
    samples = pareto(1000, 1.0, 2.0, seed=9)
    learner = learned(samples, close_floor=1.0)
    timeout, close = learner.timeout(), learner.close_timeout()
    assert math.isclose(timeout, 1.0 / 0.2**0.5, rel_tol=0.08)  # F(0.8) = sqrt(5)
    assert abs(sum(x <= timeout for x in samples) / len(samples) - 0.8) < 0.04
    assert abs(sum(x <= close for x in samples) / len(samples) - 0.99) < 0.01
    assert timeout < close <= 2 * max(samples)


def test_keeps_only_the_most_recent_builds() -> None:
    learner = learned([5.0] * 50 + pareto(100, 0.2, 3.0), max_kept=100)
    assert learner.count == 100 and 5.0 not in learner.history
    assert learner.timeout() < 1.0


def test_caps_and_abandoned_builds_as_censored_samples() -> None:
    learner = BuildTimeLearner(close_floor=1.0)
    for x in [1.0] * 10 + [2.0] * 2:
        learner.add(x)
    for _ in range(8):
        learner.add_timeout()
    fit = learner.fit()
    assert fit is not None
    xm, alpha = fit
    assert xm == pytest.approx(1.005)
    # alpha = (n - k) / (sum ln max(xm, x) + k ln(max_time) - n ln xm) = 12 / (10 ln 2 - 10 ln 1.005)
    assert alpha == pytest.approx(12 / (10 * math.log(2) - 10 * math.log(1.005)))
    assert xm / 0.2 ** (1 / alpha) > 2.0  # F(0.8) lies beyond the slowest build ...
    assert learner.timeout() == 2.0  # ... so the timeout is capped there
    assert learner.close_timeout() == 4.0  # F(0.99) capped at twice the slowest build
    assert BuildTimeLearner.from_json(learner.to_json(), close_floor=1.0).timeout() == 2.0


def test_floors_for_loopback_scale_networks() -> None:
    fast = [0.003 + 0.0001 * (i % 50) for i in range(100)] + [0.012, 0.02, 0.05]
    learner = learned(fast)
    assert learner.timeout() == 0.5
    assert learner.close_timeout() == 10.0
    tuned = learned(fast, min_timeout=0.001, close_floor=0.001)
    assert 0.003 < tuned.timeout() <= 0.05
    assert tuned.timeout() <= tuned.close_timeout() <= 0.1


def test_every_build_in_one_bin() -> None:
    learner = learned([0.7012] * 30, min_timeout=0.1, close_floor=0.1)
    assert learner.fit() is None  # nothing above the mode: no tail to fit
    assert learner.timeout() == 0.7012 and learner.close_timeout() == pytest.approx(1.4024)


def test_network_change_resets_history() -> None:
    learner = learned(pareto(200, 0.5, 2.0))
    learned_timeout = learner.timeout()
    assert learned_timeout < 60.0
    for _ in range(18):  # 18 of the last 20 timed out: 90%, not more than 90%
        learner.add_timeout()
    assert learner.resets == 0 and learner.count == 218
    learner.add_timeout()  # 19 of 20
    assert learner.resets == 1 and learner.count == 0
    assert learner.timeout() == 60.0 and learner.close_timeout() == 60.0
    # The window starts afresh: a few more timeouts do not reset again at once.
    for _ in range(5):
        learner.add_timeout()
    assert learner.resets == 1 and learner.count == 5


def test_all_abandoned_means_initial() -> None:
    learner = BuildTimeLearner(min_circs=5, recent_count=100)
    for _ in range(10):
        learner.add_timeout()
    assert learner.fit() is None and learner.timeout() == 60.0


def test_input_and_parameter_checks() -> None:
    learner = BuildTimeLearner()
    for bad in [-0.1, math.nan, math.inf]:
        with pytest.raises(ValueError):
            learner.add(bad)
    learner.add(1e9)
    assert learner.history == (MAX_BUILD_SECONDS,)
    for kwargs in [
        {"min_circs": 0},
        {"min_circs": 2000},
        {"quantile": 0.99, "close_quantile": 0.8},
        {"quantile": 0.0},
        {"close_quantile": 1.0},
        {"initial_timeout": 0.0},
        {"min_timeout": math.inf},
        {"recent_count": 0},
    ]:
        with pytest.raises(ValueError):
            BuildTimeLearner(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- state
def test_state_round_trip() -> None:
    learner = learned(pareto(300, 0.4, 2.5))
    for _ in range(3):
        learner.add_timeout()
    again = BuildTimeLearner.from_json(learner.to_json())
    assert again.history == learner.history
    assert again.timeout() == learner.timeout() and again.close_timeout() == learner.close_timeout()
    assert again.to_json() == learner.to_json()
    # The recent window survives too: one more timeout triggers the same reset in both.
    for lr in (learner, again):
        for _ in range(16):
            lr.add_timeout()
    assert learner.resets == again.resets


def test_state_is_bounded_and_junk_entries_are_skipped() -> None:
    history = [0.5, None, -1, "x", True, math.inf, 1e400, 10**400, [1], 0.7] + [0.1] * 2000
    text = json.dumps({"version": 1, "history": history, "recent": [1, 0, 2, "1", None, True]})
    learner = BuildTimeLearner.from_json(text, max_kept=50)
    assert learner.count == 50 and set(learner.history) == {0.1}
    short = BuildTimeLearner.from_json(json.dumps({"version": 1, "history": history[:10]}))
    assert short.history == (0.5, None, 0.7)
    for junk in ["", "[]", "null", '{"version": 2}', " " * (MAX_STATE_CHARS + 1), "[" * 50_000, None, b"{}"]:
        fresh = BuildTimeLearner.from_json(junk, min_circs=5)
        assert fresh.count == 0 and fresh.min_circs == 5


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_from_json_never_raises_on_text(text: str) -> None:
    learner = BuildTimeLearner.from_json(text)
    assert learner.timeout() > 0


@settings(max_examples=300, deadline=None)
@given(JSON, JSON)
def test_from_json_never_raises_on_json_shaped_junk(history: object, recent: object) -> None:
    text = json.dumps({"version": 1, "history": history, "recent": recent})
    learner = BuildTimeLearner.from_json(text, min_circs=1)
    timeout, close = learner.timeout(), learner.close_timeout()
    assert 0 < timeout <= close and math.isfinite(close)
    assert BuildTimeLearner.from_json(learner.to_json(), min_circs=1).history == learner.history


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | st.floats(0, 100, allow_nan=False), min_size=1, max_size=60))
def test_timeouts_are_always_sane(entries: list[float | None]) -> None:
    learner = BuildTimeLearner(min_circs=1, recent_count=1000, min_timeout=0.01, close_floor=0.01)
    for x in entries:
        learner.add_timeout() if x is None else learner.add(x)
    timeout, close = learner.timeout(), learner.close_timeout()
    assert math.isfinite(timeout) and math.isfinite(close) and 0 < timeout <= close
    done = [x for x in entries if x is not None]
    if done:
        assert timeout <= max(max(done), 0.01)
        assert close <= max(2 * max(done), 0.01, timeout)


def test_measured_slow_builds_enter_the_history_and_count_as_timeouts() -> None:
    """A build kept past timeout() is recorded with its duration (the tail stays in the fit) and
    counts for the network-change rule as the timeout it was."""
    learner = learned(pareto(100, 0.5, 2.0), min_timeout=0.1)
    before = learner.timeout()
    for _ in range(18):  # 18 of the last 20 timed out: not more than 90%
        learner.add(before * 3, timed_out=True)
    assert learner.resets == 0 and learner.history[-1] == before * 3
    assert learner.timeout() > before  # the slow builds raised it: no ratchet down
    learner.add(before * 3, timed_out=True)  # 19 of the last 20 timed out: the network changed
    assert learner.resets == 1 and learner.count == 0
