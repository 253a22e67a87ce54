"""When to publish: a fixed-rate schedule, and the ramp that searches for the highest rate.

Plain arithmetic on times passed in, so the publisher's pacing is tested without sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateSchedule:
    """``total`` messages at ``rate`` per second: message ``i`` is due at ``start + i / rate``."""

    rate: float
    total: int
    start: float

    @classmethod
    def for_duration(cls, rate: float, duration: float, start: float) -> RateSchedule:
        if rate <= 0 or duration <= 0:
            raise ValueError("rate and duration must be positive")
        return cls(rate, max(1, math.floor(rate * duration)), start)

    def due_at(self, index: int) -> float:
        return self.start + index / self.rate

    def due_by(self, now: float) -> int:
        """How many messages are due by ``now`` (the first one is due at ``start``)."""
        if now < self.start:
            return 0
        return min(self.total, math.floor((now - self.start) * self.rate) + 1)

    def lag(self, index: int, now: float) -> float:
        """Seconds message ``index`` goes out behind its due time when sent at ``now``."""
        return max(0.0, now - self.due_at(index))

    @property
    def end(self) -> float:
        """When the last message is due."""
        return self.due_at(self.total - 1)


class Ramp:
    """The rates a ramp tries, looking for the highest rate that still passes.

    The rate grows by ``factor`` each step until a step fails (or ``max_rate`` passes),
    then ``refine`` bisection steps narrow the gap between the last pass and the first
    failure. ``best`` is the highest rate that passed.
    """

    def __init__(
        self,
        start: float,
        *,
        factor: float = 1.5,
        max_rate: float = 1_000_000,
        refine: int = 2,
        max_steps: int = 30,
    ) -> None:
        if start <= 0 or factor <= 1 or max_rate < start:
            raise ValueError("need 0 < start <= max_rate and factor > 1")
        self.factor = factor
        self.max_rate = max_rate
        self.refine = refine
        self.max_steps = max_steps
        self.best: float | None = None
        self.failed: float | None = None
        self.steps: list[tuple[float, bool]] = []
        self._next: float | None = start

    def next_rate(self) -> float | None:
        """The rate of the next step, or None when the search is over."""
        if len(self.steps) >= self.max_steps:
            return None
        return self._next

    def record(self, rate: float, passed: bool) -> None:
        self.steps.append((rate, passed))
        if passed:
            self.best = rate if self.best is None else max(self.best, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)
        self._next = self._choose()

    def _choose(self) -> float | None:
        if self.failed is None:
            assert self.best is not None
            if self.best >= self.max_rate:
                return None
            return round(min(self.best * self.factor, self.max_rate), 1)
        if self.best is None:
            return None  # the very first rate failed: there is nothing to refine
        if len(self.steps) - self._growth_steps() >= self.refine:
            return None
        mid = round((self.best + self.failed) / 2, 1)
        return mid if self.best < mid < self.failed else None

    def _growth_steps(self) -> int:
        """Steps up to and including the first failure."""
        for i, (_, passed) in enumerate(self.steps):
            if not passed:
                return i + 1
        return len(self.steps)
