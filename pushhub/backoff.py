"""Capped exponential backoff with full jitter, for reconnect loops."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays for successive retries: uniform in [0, min(cap, base * 2**attempt)].

    Full jitter spreads the reconnects of many nodes (or browsers) after a shared
    outage instead of having them arrive in waves.
    """

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 5.0,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rand = rand

    def next(self) -> float:
        """The delay before the next retry; each call counts one more failed attempt."""
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return self._rand(0.0, ceiling)

    def reset(self) -> None:
        """Call after a success, so the next failure starts from ``base`` again."""
        self.attempt = 0
