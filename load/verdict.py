"""Judgements on a measurement: was the generator the bottleneck, did a step pass.

A number is only about the server when the generator had room to spare: worker and
publisher CPU below saturation and the publisher on schedule. When it did not, the
result is still reported, flagged, so nobody mistakes the generator's limit for the
server's.
"""

from __future__ import annotations

from collections.abc import Sequence

#: CPU% at which a process, or the generator's cores together, count as saturated.
SATURATED = 90.0
#: The publisher is behind its schedule when a message goes out this late.
MAX_PUBLISH_LAG_S = 0.1
#: CPU% over a shorter window is mostly clock-tick noise (/proc counts in 10 ms ticks).
MIN_CPU_WINDOW_S = 0.5
#: CPU% used by anything but the run above which its figures are called noisy.
NOISY_OTHER_CPU = 20.0
#: CPU% of other work under which the machine counts as quiet enough to start a phase.
QUIET_OTHER_CPU = 15.0


def generator_reasons(
    *,
    worker_cpu: Sequence[float],
    generator_cpu: float,
    cores: int,
    seconds: float,
    max_lag_s: float = 0.0,
) -> list[str]:
    """Why the generator (client workers, publisher, and what shares their cores) may
    have set the limit; empty when it had headroom. CPU figures are percent of one core."""
    reasons = []
    if seconds >= MIN_CPU_WINDOW_S:
        busiest = max(worker_cpu, default=0.0)
        if busiest >= SATURATED:
            reasons.append(f"a client worker used {busiest:.0f}% CPU")
        if cores > 0 and generator_cpu >= SATURATED * cores:
            reasons.append(f"generator cores saturated ({generator_cpu:.0f}% of {cores * 100}%)")
    if max_lag_s > MAX_PUBLISH_LAG_S:
        reasons.append(f"publisher fell {max_lag_s * 1000:.0f} ms behind schedule")
    return reasons


def noise(other_cpu: float, seconds: float) -> list[str]:
    """A warning when the machine was busy with other work during the window."""
    if seconds >= MIN_CPU_WINDOW_S and other_cpu >= NOISY_OTHER_CPU:
        return [f"noisy machine: other processes used {other_cpu:.0f}% CPU"]
    return []


def failures(
    *,
    lost: int,
    disconnects: int,
    connect_failures: int = 0,
    p99_ms: float | None = None,
    max_p99_ms: float | None = None,
) -> list[str]:
    """Why a run (or a ramp step) did not pass; empty when it did."""
    out = []
    if connect_failures:
        out.append(f"{connect_failures} clients failed to connect")
    if lost:
        out.append(f"{lost} messages lost")
    if disconnects:
        out.append(f"server closed {disconnects} clients")
    if max_p99_ms is not None and p99_ms is not None and p99_ms > max_p99_ms:
        out.append(f"p99 {p99_ms:.1f} ms over {max_p99_ms:g} ms")
    return out
