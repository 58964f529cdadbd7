"""Circuit build timeout learning, after Tor's path-spec §2.4 (CBT).

This module owns the build-time history (the `max_kept` most recent builds, each a duration or
"abandoned"), the Pareto fit of its tail, the two timeouts derived from it, the "network changed"
rule, and the JSON state text (bounded; junk reads as a fresh learner and never raises).

The fit, as in Tor: Xm is the midpoint of the most populated 10 ms histogram bin (Tor averages
the top few modes; one is enough here), and alpha is the right-censored maximum-likelihood
estimate  alpha = (n − k) / (Σ ln(max(Xm, x_i)) + k·ln(max_time) − n·ln(Xm))  over n builds of
which k were abandoned (counted as if they had taken the longest observed time; with k = 0 this
is the plain estimator).  F(q) = Xm / (1 − q)^(1/alpha).

* `timeout()`: `initial_timeout` until `min_circs` builds are recorded, then F(quantile) capped
  at the longest observed build and raised to `min_timeout`.  Why a floor of 0.5 s by default:
  by design the slowest 20% of builds exceed F(0.8).  On a loopback or LAN mesh F(0.8) is a few
  milliseconds, the same size as a garbage-collector pause, an event-loop stall or the per-hop
  X25519/Ed25519 work in Python; a timeout that small would abort healthy builds for scheduling
  noise and could even trip the network-change rule.  0.5 s is well above such stalls and below
  what any real multi-hop build over the Internet learns, so it only binds on local meshes.
* `close_timeout()`: how long to keep a slow build running to measure it: F(close_quantile)
  capped at twice the longest observed build, at least `close_floor` (Tor uses its initial 60 s;
  10 s by default here, for loopback-scale networks) and at least `timeout()`.
* Network change: if more than 90% of the last `recent_count` (20) builds timed out, history is
  discarded and the timeout is back to `initial_timeout`.

Callers let a build that passes `timeout()` run until `close_timeout()` and then report its real
duration with `add(seconds, timed_out=True)`; `add_timeout()` is for builds abandoned at
`close_timeout()` (runtime.client.circuit_build does so).  Otherwise the history is censored at
the timeout and, since `timeout()` is capped at the longest completed build, the learned timeout
could only go down: a ratchet.

Not in this module: timing builds or launching test circuits (runtime), per-length scaling.
"""

from __future__ import annotations

import json
import math
from collections import Counter, deque
from typing import Any

BIN_WIDTH = 0.010  # seconds: Tor's 10 ms histogram bins
MAX_BUILD_SECONDS = 3600.0  # longer reported builds are recorded as this
STATE_VERSION = 1
MAX_STATE_CHARS = 1024 * 1024
RECENT_TIMEOUT_FRACTION = 0.9


class BuildTimeLearner:
    """Learns how long circuit builds take and when to give up on one."""

    def __init__(
        self,
        max_kept: int = 1000,
        min_circs: int = 20,
        initial_timeout: float = 60.0,
        quantile: float = 0.8,
        close_quantile: float = 0.99,
        *,
        min_timeout: float = 0.5,
        close_floor: float = 10.0,
        recent_count: int = 20,
    ) -> None:
        if not 1 <= min_circs <= max_kept or recent_count < 1:
            raise ValueError("need 1 <= min_circs <= max_kept and recent_count >= 1")
        if not 0 < quantile < close_quantile < 1:
            raise ValueError("need 0 < quantile < close_quantile < 1")
        if not all(math.isfinite(t) and t > 0 for t in (initial_timeout, min_timeout, close_floor)):
            raise ValueError("timeouts must be positive and finite")
        self.max_kept, self.min_circs, self.initial_timeout = max_kept, min_circs, initial_timeout
        self.quantile, self.close_quantile = quantile, close_quantile
        self.min_timeout, self.close_floor, self.recent_count = min_timeout, close_floor, recent_count
        self._history: deque[float | None] = deque(maxlen=max_kept)  # None: abandoned
        self._recent: deque[bool] = deque(maxlen=recent_count)  # True: timed out
        self.resets = 0  # how often the network-change rule fired
        self._cached: tuple[float, float] | None = None

    # --- recording -----------------------------------------------------------------------------
    def add(self, build_seconds: float, *, timed_out: bool = False) -> None:
        """A build completed after `build_seconds` (ValueError if negative or not finite).

        `timed_out`: it passed `timeout()` and was kept running to be measured; its real duration
        goes into the history (so the fit sees the tail), and it counts as a timeout for the
        network-change rule (as Tor counts a timeout when it happens, not when the build ends)."""
        if not (
            isinstance(build_seconds, int | float) and math.isfinite(build_seconds) and build_seconds >= 0
        ):
            raise ValueError("build time must be a finite number >= 0")
        self._history.append(min(float(build_seconds), MAX_BUILD_SECONDS))
        self._recent.append(bool(timed_out))
        self._cached = None
        if timed_out:
            self._maybe_reset()

    def add_timeout(self) -> None:
        """A build was abandoned; may trigger the network-change reset."""
        self._history.append(None)
        self._recent.append(True)
        self._cached = None
        self._maybe_reset()

    def _maybe_reset(self) -> None:
        if len(self._recent) == self.recent_count and sum(self._recent) > RECENT_TIMEOUT_FRACTION * len(
            self._recent
        ):
            self._history.clear()
            self._recent.clear()
            self.resets += 1

    @property
    def count(self) -> int:
        """Builds in the history (completed and abandoned)."""
        return len(self._history)

    @property
    def history(self) -> tuple[float | None, ...]:
        return tuple(self._history)

    # --- the fit -------------------------------------------------------------------------------
    def fit(self) -> tuple[float, float] | None:
        """(Xm, alpha) of the Pareto tail, or None before min_circs or if the data cannot be fit
        (no completed build, or none above the mode)."""
        done = [x for x in self._history if x is not None]
        n, k = len(self._history), len(self._history) - len(done)
        if n < self.min_circs or not done:
            return None
        bins = Counter(int(x / BIN_WIDTH) for x in done)
        mode = min(bins, key=lambda b: (-bins[b], b))  # most populated bin; ties: the fastest
        xm = (mode + 0.5) * BIN_WIDTH
        max_time = max(done)
        a = sum(math.log(max(xm, x)) for x in done) + k * math.log(max(xm, max_time)) - n * math.log(xm)
        if a <= 0:
            return None
        return xm, (n - k) / a

    def _quantile_point(self, xm: float, alpha: float, q: float) -> float:
        return xm * math.exp(min(-math.log1p(-q) / alpha, 700.0))

    def _timeouts(self) -> tuple[float, float]:
        if self._cached is not None:
            return self._cached
        done = [x for x in self._history if x is not None]
        if len(self._history) < self.min_circs or not done:
            result = (self.initial_timeout, max(self.initial_timeout, self.close_floor))
        else:
            max_time = max(done)
            fit = self.fit()
            if fit is None:  # every build in one bin: nothing to extrapolate
                timeout, close = max_time, 2 * max_time
            else:
                timeout = min(self._quantile_point(*fit, self.quantile), max_time)
                close = min(self._quantile_point(*fit, self.close_quantile), 2 * max_time)
            timeout = max(timeout, self.min_timeout)
            result = (timeout, max(close, self.close_floor, timeout))
        self._cached = result
        return result

    def timeout(self) -> float:
        """Seconds after which a build counts as timed out (stop waiting for it for traffic)."""
        return self._timeouts()[0]

    def close_timeout(self) -> float:
        """Seconds after which a build is abandoned for good (stop measuring it too)."""
        return self._timeouts()[1]

    # --- state ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "version": STATE_VERSION,
                "history": list(self._history),
                "recent": [int(t) for t in self._recent],
            }
        )

    @classmethod
    def from_json(cls, text: object, **params: Any) -> BuildTimeLearner:
        """A learner with `params` and the history in `text`; junk entries are skipped, junk text
        gives a fresh learner.  Only the last max_kept / recent_count entries are kept."""
        learner = cls(**params)
        try:
            if not (isinstance(text, str) and len(text) <= MAX_STATE_CHARS):
                return learner
            data = json.loads(text)
        except (ValueError, RecursionError):
            return learner
        if not (isinstance(data, dict) and data.get("version") == STATE_VERSION):
            return learner
        history, recent = data.get("history"), data.get("recent")
        for x in history if isinstance(history, list) else []:
            if x is None:
                learner._history.append(None)
            elif type(x) in (int, float) and 0 <= x <= MAX_BUILD_SECONDS:  # NaN fails the bounds
                learner._history.append(float(x))
        for t in recent if isinstance(recent, list) else []:
            if type(t) in (int, bool) and t in (0, 1):
                learner._recent.append(bool(t))
        return learner
