"""The reconnect schedule of pushhub's browser client (static/pushhub.js), for load clients
that come back by themselves after a refusal or a restart.

Retry n (0 for the first) waits uniform in [0, min(cap, base * 2^n)]: full jitter, base
0.5 s, cap 20 s (``backoffDelay``). n goes back to 0 only when a connection that had been
up for ``STABLE_AFTER_S`` closes (``stableAfter``): a connection the server refused, or
closed right away, does not reset it. Plain arithmetic, so the schedule is tested alone.
"""

from __future__ import annotations

from collections.abc import Callable

BASE_S = 0.5
CAP_S = 20.0
#: A connection that lived this long resets the attempt count when it closes.
STABLE_AFTER_S = 5.0
#: 2^64 is far past the cap already; the browser client clamps the same way.
MAX_EXPONENT = 64


def ceiling(attempt: int, base: float = BASE_S, cap: float = CAP_S) -> float:
    """The longest wait before retry ``attempt``: min(cap, base * 2^attempt)."""
    n = min(max(attempt, 0), MAX_EXPONENT)
    return min(cap, base * 2.0**n)


def delay(
    attempt: int, random: Callable[[], float], base: float = BASE_S, cap: float = CAP_S
) -> float:
    """Seconds to wait before retry ``attempt``: uniform in [0, ceiling(attempt)]."""
    return random() * ceiling(attempt, base, cap)


def attempt_after_close(attempt: int, lived_s: float | None) -> int:
    """The attempt count to retry with after a connection closes.

    ``lived_s``: how long the connection had been up (subscribed), or None when it never
    was (refused, failed, or closed before the subscribe was confirmed)."""
    if lived_s is not None and lived_s >= STABLE_AFTER_S:
        return 0
    return attempt
