"""Randomness as an argument: the sans-I/O core never calls `os.urandom` itself.

`SystemRng` is the one place the core's randomness comes from in production; tests pass a
`SeededRng` so that every byte a state machine emits is reproducible.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Rng(Protocol):
    def random_bytes(self, n: int) -> bytes: ...
    def randbelow(self, n: int) -> int: ...


class SystemRng:
    """Cryptographically secure randomness from the operating system."""

    def random_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)


class SeededRng:
    """Deterministic randomness for tests and simulations (BLAKE2b in counter mode). Never for keys in use."""

    def __init__(self, seed: bytes | int = 0) -> None:
        if isinstance(seed, int):
            seed = seed.to_bytes(16, "little", signed=False)
        self._key = hashlib.blake2b(seed, digest_size=32).digest()
        self._counter = 0

    def random_bytes(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += hashlib.blake2b(self._counter.to_bytes(8, "little"), key=self._key).digest()
            self._counter += 1
        return bytes(out[:n])

    def randbelow(self, n: int) -> int:
        if n <= 0:
            raise ValueError("randbelow needs n > 0")
        nbytes = (n.bit_length() + 7) // 8 + 8
        return int.from_bytes(self.random_bytes(nbytes), "little") % n


def choice(rng: Rng, seq: Sequence[T]) -> T:
    """Pick one element of a non-empty sequence uniformly."""
    return seq[rng.randbelow(len(seq))]


DEFAULT_RNG = SystemRng()
