"""Rate-limited logging for failures that could repeat once per message or per client.

A supervised loop (the Redis reader's handler, the outbox, the presence tasks) catches
what one bad message or one failing client raises, logs it and goes on. Logging every
occurrence would let one hostile publisher fill the disk; logging none would hide the
cause. This logs the first occurrence of each kind with its traceback, then at most one
line per ``interval`` saying how many more were suppressed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """One logger's rate-limited lines, keyed by the kind of failure."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}  # kind -> when it may be logged again
        self._suppressed: dict[str, int] = {}

    def exception(self, kind: str, msg: str, *args: object) -> None:
        """Log ``msg`` with the current exception's traceback, rate-limited per ``kind``."""
        self._log(kind, logging.ERROR, msg, args, exc_info=True)

    def warning(self, kind: str, msg: str, *args: object) -> None:
        self._log(kind, logging.WARNING, msg, args, exc_info=False)

    def debug(self, kind: str, msg: str, *args: object) -> None:
        self._log(kind, logging.DEBUG, msg, args, exc_info=False)

    def _log(
        self, kind: str, level: int, msg: str, args: tuple[object, ...], exc_info: bool
    ) -> None:
        now = self._clock()
        if now < self._next.get(kind, 0.0):
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._next[kind] = now + self._interval
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            msg += f" ({suppressed} more like it in the last {self._interval:g} s not logged)"
        self._logger.log(level, msg, *args, exc_info=exc_info)
