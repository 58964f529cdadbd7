"""Exponential backoff with jitter and a cap, for loops that retry something that keeps failing.

Without it a proxy whose only exit died retried builds about 40 times a second (issue 15, item 8).
Jitter ("equal jitter": half fixed, half random) keeps many clients from retrying in step.
"""

from __future__ import annotations

from onionmesh.rng import DEFAULT_RNG, Rng


class Backoff:
    def __init__(self, base: float = 0.5, cap: float = 60.0, rng: Rng = DEFAULT_RNG) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base, self.cap, self.rng = base, cap, rng
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure; the delay before the next try: in [d/2, d], d = min(cap, base * 2^n)."""
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return ceiling / 2 + ceiling / 2 * self.rng.randbelow(1001) / 1000
